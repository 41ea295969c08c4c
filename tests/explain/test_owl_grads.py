"""The fast per-box machinery of GA, checked piece by piece against the HF modules and the literal loop."""

import pytest
import torch

from owlens.explain._owl_grads import box_cosines
from owlens.explain._owl_layer import attention_block, attention_tangent, check_layer
from owlens.explain._reference import literal_box_cosines
from owlens.models.detection import DetectionBranch
from owlens.models.loading import TOY_WEIGHTS
from owlens.toyworld.tiny import TINY_VOCAB, tiny_owl


def _owlv2(dtype):
    from transformers import Owlv2Config, Owlv2ForObjectDetection

    config = Owlv2Config(
        text_config={"vocab_size": TINY_VOCAB, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 4, "max_position_embeddings": 16},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "image_size": 64, "patch_size": 16},
        projection_dim=32)
    torch.manual_seed(0)
    owl = Owlv2ForObjectDetection(config).to(dtype).eval()
    with torch.no_grad():  # small heads, as tiny_owl does: keeps the box sigmoid away from saturation
        for parameter in list(owl.class_head.parameters()) + list(owl.box_head.parameters()):
            parameter.mul_(0.05)
    return owl


def _setup(owl, seed=0, queries=2):
    branch = DetectionBranch(owl)
    dtype = owl.class_head.dense0.weight.dtype
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        embedding = branch.encode(torch.randn(1, 3, 64, 64, generator=generator, dtype=torch.float64).to(dtype))[0]
    query_embeds = torch.randn(queries, 32, generator=generator, dtype=torch.float64).to(dtype)
    query_embeds = torch.nn.functional.normalize(query_embeds, dim=-1)
    return branch, embedding, query_embeds


def literal(branch, embedding, query_embeds, tangents, query_index):
    """One torch.autograd.grad per box, output and token: the paper's loop."""
    return literal_box_cosines(branch.detect, embedding, query_embeds, tangents, query_index.tolist())


@pytest.mark.parametrize("make", [lambda d: tiny_owl(1, dtype=d), _owlv2], ids=["owlvit", "owlv2"])
def test_written_out_layer_is_the_hf_layer(make):
    branch, embedding, _ = _setup(make(torch.float64))
    layer = branch.vision.encoder.layers[-1]
    with torch.no_grad():
        reference = layer(embedding[None], None)[0]
        state = attention_block(layer, embedding)
        output = state.residual + layer.mlp(layer.layer_norm2(state.residual))
    torch.testing.assert_close(output, reference, atol=1e-12, rtol=0)
    torch.testing.assert_close(state.probs.sum(-1), torch.ones_like(state.probs[..., 0]))


def test_written_out_tangent_is_torch_func_jvp():
    branch, embedding, _ = _setup(tiny_owl(5, dtype=torch.float64))
    layer = branch.vision.encoder.layers[-1]
    tangents = torch.randn(2, *embedding.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    reference = torch.stack([torch.func.jvp(lambda e: attention_block(layer, e).residual, (embedding,), (t,))[1]
                             for t in tangents])
    fast = attention_tangent(layer, attention_block(layer, embedding), tangents)
    torch.testing.assert_close(fast, reference, atol=1e-12, rtol=0)


@pytest.mark.parametrize("make", [lambda d: tiny_owl(2, dtype=d), _owlv2], ids=["owlvit", "owlv2"])
@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_fast_cosines_equal_the_literal_loop(make, chunk):
    branch, embedding, query_embeds = _setup(make(torch.float64), seed=chunk)
    generator = torch.Generator().manual_seed(chunk)
    tangents = torch.randn(3, *embedding.shape, generator=generator, dtype=torch.float64)
    tangents[0, 0] = 0  # as the LM's gradient is: W reads no CLS
    index = torch.tensor([1, 0, 1])
    fast = box_cosines(branch, embedding, query_embeds, tangents, index, chunk=chunk)
    reference, detections = literal(branch, embedding, query_embeds, tangents, index)
    torch.testing.assert_close(fast.cosines, reference, atol=1e-5, rtol=0)
    torch.testing.assert_close(fast.cosines, reference, atol=1e-12, rtol=0)  # in fact exact to rounding
    torch.testing.assert_close(fast.boxes_cxcywh, detections.boxes_cxcywh[0])
    torch.testing.assert_close(fast.logits, detections.logits[0])


def test_float32_stays_close_to_float64():
    fast = {}
    for dtype in (torch.float32, torch.float64):
        branch, embedding, query_embeds = _setup(tiny_owl(3, dtype=dtype), seed=3)
        tangent = torch.randn(1, *embedding.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        tangent = tangent.to(dtype)
        fast[dtype] = box_cosines(branch, embedding, query_embeds, tangent, torch.tensor([0])).cosines
    torch.testing.assert_close(fast[torch.float32].double(), fast[torch.float64], atol=1e-4, rtol=0)


def test_zero_gradient_gives_zero_cosines():
    branch, embedding, query_embeds = _setup(tiny_owl(4, dtype=torch.float64))
    result = box_cosines(branch, embedding, query_embeds, torch.zeros(1, *embedding.shape, dtype=torch.float64),
                         torch.tensor([0]))
    assert torch.equal(result.cosines, torch.zeros_like(result.cosines))


def test_other_layers_are_refused():
    with pytest.raises(TypeError, match="CLIP-style encoder layer.*lacks"):
        check_layer(torch.nn.Linear(2, 2))


@pytest.mark.toy_weights
def test_trained_toy_owl_equals_the_literal_loop():
    from transformers import OwlViTForObjectDetection

    owl = OwlViTForObjectDetection.from_pretrained(TOY_WEIGHTS / "owl", dtype=torch.float64).eval()
    branch, embedding, query_embeds = _setup(owl, seed=6)
    query_embeds = torch.nn.functional.pad(query_embeds, (0, owl.config.text_config.hidden_size - 32))
    tangents = torch.randn(2, *embedding.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    index = torch.tensor([0, 1])
    fast = box_cosines(branch, embedding, query_embeds, tangents, index)
    reference, _ = literal(branch, embedding, query_embeds, tangents, index)
    torch.testing.assert_close(fast.cosines, reference, atol=1e-5, rtol=0)
