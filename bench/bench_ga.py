"""Benchmark Gradient Alignment (issue 4): what explaining one token costs, and what the fast OWL side saves.

    ratio_to_lm_fwd_bwd  time to explain one token (W and LM forward+backward for g, the detector's query, every
                         box's cosines, the map) / one LM forward+backward on the same input to get g alone
    speedup_vs_naive     the paper's literal loop (one forward, then N·5 backward passes and the cosines) / the
                         fast OWL side computing the same cosines (``box_cosines``)
    speedup_vs_naive_compiled   the same with the fast side through torch.compile (``GradientAlignment(...,
                         compile=True)``); compile_s is its first, compiling call

Configurations: ``tiny`` (tests' model), ``toy`` (the shipped toy world, when its weights exist) and
``reference`` (random weights at the paper's shapes: OWL-ViT B/32 at 768, 577 tokens x 768, 12 layers; the
paper's W 768→8192x3→4096; a Llama LM at width 4096, 32 heads, intermediate 11008, with k layers, timed at
1..k layers and extrapolated linearly to 32: the OWL side does not depend on k). float32 on the CPU.

    python bench/bench_ga.py --json [--configs tiny toy reference] [--threads 1] [--layers 2] [--naive-boxes 8]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import dataclass

import torch

from owlens.explain import ExplainInputs, GradientAlignment, TokenTarget
from owlens.explain._borrow import borrowed
from owlens.explain._lm_pass import logit_gradients
from owlens.explain._owl_grads import box_cosines, compiled_box_cosines
from owlens.explain._reference import literal_box_cosines
from owlens.explain.targets import TokenPlan

PAPER_LAYERS = 32  # LLaVA-1.5-7B's LM


@dataclass(frozen=True)
class Case:
    model: object
    inputs: ExplainInputs
    token_id: int
    config: dict


def _timed(fn, repeats: int) -> float:
    """Shortest wall time of ``repeats`` calls after one warm-up: the machine is shared, and the minimum is the
    run least disturbed by other jobs (as ``timeit`` advises)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _tiny() -> Case:
    from owlens.toyworld.tiny import tiny_joint, tiny_processor

    model = tiny_joint(0, processor=tiny_processor())
    with torch.no_grad():
        embedding = model.encode(torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    inputs = ExplainInputs.from_embedding(model, embedding, "what is in the image ?")
    token = model.processor.mllm_tokenizer.convert_tokens_to_ids("circle")
    return Case(model, inputs, token, {"owl": "tiny 4x4 grid, d=32", "lm": "tiny Llama d=48, 2 layers"})


def _toy() -> Case | None:
    import numpy as np

    from owlens.models.joint import JointModel
    from owlens.models.loading import CheckpointNotFoundError
    from owlens.toyworld.world import sample_scene

    try:
        model = JointModel.from_pretrained(dtype="fp32", device="cpu")
    except CheckpointNotFoundError:
        return None
    scene = sample_scene(np.random.default_rng(0), n_objects=2, prior=False)
    inputs = ExplainInputs.from_images(model, scene.pil(), "what is in the image ?")
    token = model.processor.mllm_tokenizer.convert_tokens_to_ids(scene.objects[0].shape)
    return Case(model, inputs, token, {"owl": "toy world", "token": scene.objects[0].shape})


def _owl(config):
    from transformers import OwlViTForObjectDetection

    torch.manual_seed(0)
    owl = OwlViTForObjectDetection(config).eval()
    with torch.no_grad():  # transformers leaves the heads N(0, 1), saturating the box sigmoid (DESIGN.md §6)
        for parameter in list(owl.class_head.parameters()) + list(owl.box_head.parameters()):
            parameter.mul_(0.05)
    return owl


def _reference(layers: int, text_tokens: int = 64) -> Case:
    """Random weights at the paper's shapes; word-level toy tokenizers stand in (ids < 55 are valid here)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, OwlViTConfig

    from owlens.models.alignment import Alignment, AlignmentConfig
    from owlens.models.joint import JointModel
    from owlens.models.processor import JointProcessor
    from owlens.toyworld.tokenizer import build_tokenizer

    owl = _owl(OwlViTConfig())
    # The tower is never run (J feeds the LM from OWL): a small one with LLaVA-1.5's 24x24 grid is enough.
    tower = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                             image_size=336, patch_size=14)
    text = LlamaConfig(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=layers,
                       num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096)
    llava = LlavaForConditionalGeneration(LlavaConfig(vision_config=tower, text_config=text, image_token_id=3,
                                                      vision_feature_select_strategy="default")).eval()
    tokenizer = build_tokenizer()
    processor = JointProcessor(None, None, tokenizer, tokenizer, grid=(24, 24), image_token_id=3, query_length=16)
    model = JointModel(owl, llava, Alignment(AlignmentConfig.paper(768, 4096)), processor)
    embedding = torch.randn(1, 577, 768)
    ids = torch.randint(4, 54, (1, 1 + 576 + text_tokens - 1))
    ids[0, 0], ids[0, 1:577] = 2, 3
    inputs = ExplainInputs.from_embedding(model, embedding, {"input_ids": ids}, image_sizes=[(768, 768)])
    config = {"owl": "OWL-ViT B/32 at 768 (577 tokens x 768, 12 layers)", "w": "paper MLP 768-8192x3-4096",
              "lm": f"Llama width 4096, 32 heads, intermediate 11008, {layers} layers", "sequence": ids.shape[1]}
    return Case(model, inputs, 7, config)


def _lm_fwd_bwd(case: Case):
    """One LM forward+backward giving ∂ logit / ∂ inputs_embeds, with the image tokens W(E) already made."""
    model, ids = case.model, case.inputs.input_ids
    with torch.no_grad():
        embeds = model.language.embed(ids, model.image_tokens(case.inputs.embedding))
    position = torch.tensor([ids.shape[1] - 1])

    def run():
        leaf = embeds.detach().requires_grad_(True)
        logits = model.language.llava(inputs_embeds=leaf, attention_mask=case.inputs.attention_mask,
                                      logits_to_keep=position, use_cache=False).logits
        torch.autograd.grad(logits[0, -1, case.token_id], leaf)

    return run


def _owl_side(case: Case, naive_boxes: int | None):
    """(fast, compiled, naive) callables computing the same cosines for every box; naive on a subset of boxes."""
    model, embedding = case.model, case.inputs.embedding
    ids = case.inputs.input_ids[0].tolist()
    plan = TokenPlan(ids, [len(ids) - 1], [case.token_id], ["t"], ["a photo of a circle"])
    gradient = logit_gradients(model, embedding, [plan])[0][0]  # (1, 1+N, d)
    with torch.no_grad():
        query_embeds = model.query_embeds(["a photo of a circle"])

    def fast(cosines=box_cosines):
        with torch.no_grad():
            cosines(model.detection, embedding[0], query_embeds, gradient, torch.tensor([0]))

    def compiled():
        fast(compiled_box_cosines)

    def naive():
        literal_box_cosines(model.detect, embedding[0], query_embeds, [gradient[0]], boxes=naive_boxes)

    return fast, compiled, naive


def _measure(case: Case, repeats: int, naive_boxes: int | None) -> dict:
    model = case.model
    ga = GradientAlignment(model)
    boxes = case.inputs.embedding.shape[1] - 1
    subset = min(naive_boxes or boxes, boxes)
    with borrowed(model):
        lm = _timed(_lm_fwd_bwd(case), repeats)
        fast, compiled, naive = _owl_side(case, subset)
        start = time.perf_counter()
        compiled()
        compile_s = time.perf_counter() - start
        owl_fast, owl_compiled, naive_s = _timed_together((fast, compiled, naive), repeats)
    naive_s *= boxes / subset
    explain = _timed(lambda: ga.explain(case.inputs, TokenTarget(case.token_id)), repeats)
    return {**case.config, "boxes": boxes, "lm_fwd_bwd_s": lm, "explain_s": explain, "owl_fast_s": owl_fast,
            "owl_compiled_s": owl_compiled, "compile_s": compile_s, "naive_s": naive_s,
            "naive_boxes_timed": subset, "naive_scaled_linearly": subset < boxes,
            "ratio_to_lm_fwd_bwd": explain / lm, "speedup_vs_naive": naive_s / owl_fast,
            "speedup_vs_naive_compiled": naive_s / owl_compiled}


def _timed_together(callables, repeats: int) -> tuple[float, ...]:
    """Every callable timed in alternation, so that a burst of load from other jobs hits all alike."""
    for fn in callables:
        fn()
    times = [[] for _ in callables]
    for _ in range(repeats):
        for fn, out in zip(callables, times):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return tuple(min(t) for t in times)


def _extrapolate(case: Case, result: dict, layers: int, repeats: int) -> dict:
    """Time the LM at 1..k layers, fit time = a + b·layers, and carry the rest of ``explain`` over to 32 layers."""
    text_config = case.model.llava.config.text_config
    by_layers = {}
    with borrowed(case.model):
        for count in range(1, layers + 1):
            text_config.num_hidden_layers = count  # Llama runs layers[:num_hidden_layers]
            by_layers[count] = _timed(_lm_fwd_bwd(case), repeats)
    text_config.num_hidden_layers = layers
    per_layer = (by_layers[layers] - by_layers[1]) / max(1, layers - 1)
    fixed = by_layers[1] - per_layer
    lm_32 = fixed + PAPER_LAYERS * per_layer
    explain_32 = result["explain_s"] - result["lm_fwd_bwd_s"] + lm_32
    return {"lm_layers_measured": layers, "lm_fwd_bwd_s_by_layers": by_layers, "lm_per_layer_s": per_layer,
            "lm_fwd_bwd_s_32_layers": lm_32, "explain_s_32_layers": explain_32,
            "ratio_to_lm_fwd_bwd_32_layers": explain_32 / lm_32}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["tiny", "toy", "reference"],
                        choices=["tiny", "toy", "reference"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--layers", type=int, default=2, help="LM layers k built at the reference shapes")
    parser.add_argument("--naive-boxes", type=int, default=8, help="boxes the literal loop is timed on (reference)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per figure (reference: 2 fewer)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = {"threads": args.threads, "dtype": "float32", "torch": torch.__version__,
               "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "configs": {}}
    for name in args.configs:
        if name == "tiny":
            results["configs"][name] = _measure(_tiny(), args.repeats, None)
        elif name == "toy":
            case = _toy()
            results["configs"][name] = _measure(case, args.repeats, None) if case else \
                {"skipped": "toy-world weights not built (src/owlens/toyworld/weights)"}
        else:
            case = _reference(args.layers)
            measured = _measure(case, max(1, args.repeats - 2), args.naive_boxes)
            measured.update(_extrapolate(case, measured, args.layers, max(1, args.repeats - 2)))
            results["configs"][name] = measured
        if not args.json:
            print(name, json.dumps(results["configs"][name], indent=2))
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
