"""The paper's Gradient Alignment loop, written out: the reference the fast path is tested and timed against.

For every explained token's gradient g and every box m, one ``torch.autograd.grad`` per output j of OWL's head
(the class logit and the four box coordinates), then cos(h_mj, g) over the whole (1+N)×d embedding: 5·N
backward passes per token where the fast path (``_owl_grads``) needs none. Kept in the package, not in the
tests, because the benchmark runs it too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

__all__ = ["literal_box_cosines"]


def literal_box_cosines(detect: Callable, embedding: torch.Tensor, queries, gradients: Sequence[torch.Tensor],
                        query_index: Sequence[int] | None = None, *, boxes: int | None = None):
    """E (1+N, d), the detector's queries (texts or embeddings), L gradients (1+N, d) and, per gradient, the
    query it is aligned with (default: the first) → cosines (L, M, 5) float64 for the first ``boxes`` boxes
    (default all N: M = N) and the detections of E.

    ``detect(E (1, 1+N, d), queries)`` is ``JointModel.detect`` or a detection branch's ``detect``.
    """
    leaf = embedding.detach().clone().requires_grad_(True)
    detections = detect(leaf[None], queries)
    count = detections.logits.shape[1] if boxes is None else boxes
    index = [0] * len(gradients) if query_index is None else [int(q) for q in query_index]
    cosines = torch.zeros(len(gradients), count, 5, dtype=torch.float64)
    for t, (g, q) in enumerate(zip(gradients, index)):
        outputs = torch.cat([detections.logits[0, :, q:q + 1], detections.boxes_cxcywh[0]], -1)  # (N, 5)
        for m in range(count):
            for j in range(5):
                h = torch.autograd.grad(outputs[m, j], leaf, retain_graph=True)[0]
                cosines[t, m, j] = (h * g).sum() / (h.norm() * g.norm())
    return cosines, detections
