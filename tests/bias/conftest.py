import pytest


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One thread: on a shared 2-core machine, two contending threads made these runs ~15x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_model():
    """A tiny J in float64 (gradients exact enough to compare signs) with the toy world's processor."""
    import torch

    from owlens.toyworld.tiny import tiny_joint, tiny_processor

    return tiny_joint(0, dtype=torch.float64, processor=tiny_processor())


@pytest.fixture(scope="module")
def embedding(tiny_model):
    import torch

    pixels = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        return tiny_model.encode(pixels)  # (3, 17, 32)
