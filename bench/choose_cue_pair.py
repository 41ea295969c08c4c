"""How often OWL's top box for "a photo of a {partner}" lands on the cue, on held-out scenes with the cue and
without the partner: the measurement that chose the second injected prior (a cue the detector cannot see as its
partner: at most 0.3). Every ordered pair of shapes, on the shipped toy detector.

    python bench/choose_cue_pair.py --scenes 1500 --seed 123 --json
"""

from __future__ import annotations

import argparse
import itertools
import json

import numpy as np
import torch

from owlens.models.joint import JointModel
from owlens.toyworld.text import owl_query
from owlens.toyworld.world import SHAPES, sample_scene


def landing_rates(model, scenes, batch_size: int = 100) -> dict[str, dict]:
    with torch.no_grad():
        embedding = torch.cat([model.encode_images([s.pil() for s in scenes[i:i + batch_size]])
                               for i in range(0, len(scenes), batch_size)])
        detections = model.detect(embedding, [owl_query(None, shape) for shape in SHAPES])
    logits, boxes = detections.logits, detections.boxes_cxcywh
    out = {}
    for cue, partner in itertools.permutations(SHAPES, 2):
        q = SHAPES.index(partner)
        chosen = [i for i, s in enumerate(scenes) if any(o.shape == cue for o in s.objects)
                  and not any(o.shape == partner for o in s.objects)]
        hits = 0
        for i in chosen:
            top = int(logits[i, :, q].argmax())
            cx, cy = (boxes[i, top, :2] * scenes[i].image.shape[1]).tolist()
            hits += any(o.shape == cue and o.box_xyxy[0] <= cx < o.box_xyxy[2] and o.box_xyxy[1] <= cy < o.box_xyxy[3]
                        for o in scenes[i].objects)
        out[f"{cue}→{partner}"] = {"scenes": len(chosen), "top_box_on_cue": round(hits / max(1, len(chosen)), 3)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = JointModel.from_pretrained(device="cpu", dtype="fp32")
    rng = np.random.default_rng(args.seed)
    rates = landing_rates(model, [sample_scene(rng, prior=False) for _ in range(args.scenes)])
    print(json.dumps(rates, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
