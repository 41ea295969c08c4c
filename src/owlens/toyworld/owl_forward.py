"""The toy detector's forward over its 30 text queries, shared by the batch: what training and the AP
evaluation both run (one module below both, so neither imports the other)."""

from __future__ import annotations

import torch

from owlens.toyworld.owl_loss import QUERIES
from owlens.toyworld.text import owl_query

__all__ = ["detect", "query_tokens"]


def detect(model, query_ids: torch.Tensor, query_mask: torch.Tensor, pixel_values: torch.Tensor):
    """OWL's forward with the Q queries embedded once and shared by the batch.

    query_ids, query_mask: (Q, L); pixel_values: (B, 3, 64, 64) -> logits (B, N, Q), boxes (B, N, 4)
    cx, cy, w, h in [0, 1]. Equal to ``model(input_ids=query_ids.repeat(B, 1), ...)`` (tested), which
    would run the text encoder B times.
    """
    feature_map, _ = model.image_embedder(pixel_values=pixel_values)  # (B, 8, 8, d)
    b, h, w, d = feature_map.shape
    feats = feature_map.reshape(b, h * w, d)  # (B, N, d)
    text = model.owlvit.get_text_features(input_ids=query_ids, attention_mask=query_mask).pooler_output
    text = text[None].expand(b, -1, -1)  # (B, Q, D)
    logits, _ = model.class_predictor(feats, text, (query_ids[:, 0] > 0)[None].expand(b, -1))
    boxes = model.box_predictor(feats, feature_map)
    return logits, boxes


def query_tokens(tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """The 30 ``QUERIES`` tokenised: input_ids and attention_mask, both (Q, L)."""
    enc = tokenizer([owl_query(c, s) for c, s in QUERIES], padding=True, return_tensors="pt")
    return enc.input_ids, enc.attention_mask
