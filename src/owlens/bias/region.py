"""Where a perturbation may act: all of E (the paper), or only where OWL sees C− (our localised variant).

The paper's loss covers every box and its step moves every token of E, CLS included — but the MLLM reads only
E[:, 1:] and, on the toy world, a colour lives in the handful of patch tokens of the object (85% of the
re-render difference E(blue) − E(red) sits in its top 8 of 64 tokens). Moving all 65 tokens spends most of the
budget where the MLLM is not looking, or on CLS, which OWL's patch·CLS merge rewards and the MLLM never sees.
The localised variant asks OWL itself where C− is: box m (on patch m) is in the region when its C− presence
is at least ``threshold`` × the image's best C− presence, read on the clean E. Only those boxes enter the
loss, and only their patch tokens move.
"""

from __future__ import annotations

import torch

__all__ = ["owl_region", "token_mask"]


def owl_region(model, embedding: torch.Tensor, queries: torch.Tensor, n_minus: int, threshold: float) -> torch.Tensor:
    """(B, N) bool: boxes whose C− presence (max over C−'s queries) is ≥ threshold × the image's maximum."""
    if not 0 < threshold <= 1:
        raise ValueError(f"the region threshold is a fraction of the best C- presence, in (0, 1]; received {threshold}")
    with torch.no_grad():
        logits = model.detect(embedding, queries[:n_minus]).logits  # (B, N, Qm)
    presence = torch.sigmoid(logits.float().amax(-1))  # (B, N)
    return presence >= threshold * presence.amax(1, keepdim=True)


def token_mask(region: torch.Tensor) -> torch.Tensor:
    """(B, N) boxes → (B, 1+N, 1) float mask over E's tokens: CLS never, patch m when box m is in the region."""
    cls = torch.zeros(len(region), 1, dtype=torch.float32, device=region.device)
    return torch.cat([cls, region.float()], dim=1).unsqueeze(-1)
