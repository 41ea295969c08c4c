"""Where GA's map leaves the object: the analysis behind docs/benchmarks.md, "Saliency evaluation".

For the benchmark's own cases (``owlens.evaluation.saliency_cases``, the same seeds) it recomputes GA's per-box
cosines literally (one backward pass per box, the paper's loop) and asks, per case:
- ga: pointing game of GA's map (must equal the benchmark's: a consistency check);
- patch_only: the same cosine without E's CLS row (g is 0 there: W reads patch tokens only);
- where_only: the cosine of the per-token gradient norms (N,) of h_m and g: where the gradients lie, not
  which way they point;
- owl_top: pointing game of OWL's scores for the same query (the detection-only map);
- the box that covers the object best (highest IoU with the truth box): its IoU, its cosine and its rank in
  GA's order; the IoU of GA's top box; g's share of norm on the object's patches.

    OMP_NUM_THREADS=1 .venv/bin/python bench/diagnose_ga_saliency.py --scenes 200 --kind object --json
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from owlens.boxes import box_iou


def diagnose(model, case, embedding) -> dict:
    from owlens.evaluation.pointing_game import PointingGame
    from owlens.evaluation.saliency_benchmark import POINTING_TOLERANCE_PX
    from owlens.explain import ExplainInputs, TokenTarget
    from owlens.explain._lm_pass import logit_gradients
    from owlens.explain.maps import boxes_to_pixels, minmax, paint_boxes
    from owlens.explain.targets import plan_tokens

    vocab = model.processor.mllm_tokenizer.convert_tokens_to_ids
    inputs = ExplainInputs.from_embedding(model, embedding[None], case.prompt)
    plans = plan_tokens(model, inputs.input_ids, inputs.attention_mask, inputs.embedding,
                        TokenTarget(case.token, case.query), "a photo of a {}")
    with torch.no_grad():
        logits = model.logits(embedding[None], [case.prompt])[0, -1]
    g = logit_gradients(model, inputs.embedding, plans)[0][0, 0].double()  # (1+N, d)
    leaf = embedding.detach().clone()[None].requires_grad_(True)
    with torch.enable_grad():
        detections = model.detect(leaf, [plans[0].queries[0]])
        z = detections.logits[0, :, 0]
        h = torch.stack([torch.autograd.grad(z[m], leaf, retain_graph=True)[0][0] for m in range(len(z))]).double()
    dots = (h * g).sum((1, 2))
    cosine = dots / (h.flatten(1).norm(dim=1) * g.norm())
    per_token_h, per_token_g = h[:, 1:].norm(dim=-1), g[1:].norm(dim=-1)  # (N, N), (N,)
    corners = boxes_to_pixels(detections.boxes_cxcywh[0].detach(), (64, 64))
    game = PointingGame(POINTING_TOLERANCE_PX)

    def points(weights: torch.Tensor) -> float:
        return game(paint_boxes(corners, minmax(weights.float()[:, None])[:, 0], (64, 64)), case.truth_mask)

    scores = torch.sigmoid(z.detach().double())
    iou = box_iou(corners.numpy(), case.truth_boxes).max(1)
    best = int(iou.argmax())
    rows, cols = model.grid
    on_object = torch.from_numpy(case.truth_mask.reshape(rows, 64 // rows, cols, 64 // cols).any((1, 3)).reshape(-1))
    return {"kind": case.kind, "index": case.index, "token": case.token,
            "correct": int(logits.argmax()) == vocab(case.token),
            "said_yes": bool(logits[vocab("yes")] > logits[vocab("no")]),
            "ga": points(cosine), "patch_only": points(dots / (h[:, 1:].flatten(1).norm(dim=1) * g[1:].norm())),
            "where_only": points((per_token_h @ per_token_g) / (per_token_h.norm(dim=1) * per_token_g.norm())),
            "owl_top": points(scores), "best_box_iou": float(iou[best]), "best_box_cosine": float(cosine[best]),
            "best_box_rank_in_ga": int((cosine > cosine[best]).sum()),
            "ga_top_box_iou": float(iou[int(cosine.argmax())]),
            "median_cosine": float(cosine.median()), "top_cosine": float(cosine.max()),
            "cls_share_of_h": float((h[:, 0].norm(dim=-1) ** 2 / h.flatten(1).norm(dim=1) ** 2).median()),
            "g_share_on_object_patches": float(per_token_g[on_object].sum() / per_token_g.sum())}


def summary(rows: list[dict]) -> dict:
    keys = ["ga", "patch_only", "where_only", "owl_top", "best_box_iou", "best_box_cosine", "ga_top_box_iou",
            "median_cosine", "top_cosine", "cls_share_of_h", "g_share_on_object_patches"]
    out = {"cases": len(rows), **{k: float(np.mean([r[k] for r in rows])) for k in keys}}
    out["best_box_rank_in_ga_median"] = float(np.median([r["best_box_rank_in_ga"] for r in rows]))
    out["best_box_cosine_nonpositive"] = float(np.mean([r["best_box_cosine"] <= 0 for r in rows]))
    misses = [r for r in rows if r["ga"] < 0.5]
    out["ga_misses"], out["ga_misses_where_owl_top_hits"] = len(misses), sum(r["owl_top"] >= 0.5 for r in misses)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kind", choices=["object", "cue"], default="object")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from owlens.evaluation.saliency_benchmark import _encode
    from owlens.evaluation.saliency_cases import cue_candidates, object_cases
    from owlens.models.joint import JointModel

    model = JointModel.from_pretrained(device="cpu")
    cases = (object_cases if args.kind == "object" else cue_candidates)(args.scenes, args.seed)
    rows = [diagnose(model, case, embedding) for case, embedding in zip(cases, _encode(model, cases, 64))]
    groups = ({"correct": [r for r in rows if r["correct"]]} if args.kind == "object" else
              {"said_yes": [r for r in rows if r["said_yes"]], "said_no": [r for r in rows if not r["said_yes"]]})
    payload = {name: summary(group) for name, group in groups.items() if group}
    print(json.dumps(payload, indent=2) if args.json else payload)


if __name__ == "__main__":
    main()
