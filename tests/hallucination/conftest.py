from pathlib import Path

import pytest

# shared/ lies beside the repository (in a developer's checkout and in CI's clone alike).
POPE = Path(__file__).resolve().parents[3] / "shared" / "data" / "pope"


@pytest.fixture(scope="session")
def pope_files():
    """The real POPE question files (COCO, three splits), or a skip where they are not on disk."""
    files = {split: POPE / f"coco_pope_{split}.json" for split in ("random", "popular", "adversarial")}
    if not all(path.is_file() for path in files.values()):
        pytest.skip(f"the POPE question files are not in {POPE}")
    return files


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from a second thread, and lose much on a machine shared with training jobs."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
