"""The detection branch of J: OWL-ViT's last encoder layer and heads, run from the shared embedding E.

docs/design.md §1: E is OWL's penultimate hidden state. Everything after it (last encoder layer → post-layernorm →
patch·CLS merge → layer norm → class and box heads) is the real ``OwlViTForObjectDetection`` modules, called
in the order its own ``forward`` calls them, so that ``detect(encode(x))`` equals ``owl(input_ids, x)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from owlens.boxes import cxcywh_to_xyxy

__all__ = ["Detections", "DetectionBranch"]


@dataclass(frozen=True)
class Detections:
    """One prediction per patch token, as OWL-ViT makes them.

    logits: (B, N, Q) raw class logits for each box and text query (pre-sigmoid).
    boxes_cxcywh: (B, N, 4) box centre x, centre y, width, height, normalised to [0, 1] of the image.
    grid: (rows, cols) of the patch grid, rows * cols == N (box m sits on patch m, row-major).
    """

    logits: torch.Tensor
    boxes_cxcywh: torch.Tensor
    grid: tuple[int, int]

    @property
    def scores(self) -> torch.Tensor:
        """(B, N, Q) sigmoid of ``logits``, computed in float32."""
        return torch.sigmoid(self.logits.float())

    def boxes_xyxy_px(self, image_size: tuple[int, int]) -> torch.Tensor:
        """(B, N, 4) corners x0, y0, x1, y1 in pixels of an image of ``image_size`` (width, height)."""
        return cxcywh_to_xyxy(self.boxes_cxcywh.float(), image_size)

    def presence(self) -> torch.Tensor:
        """(B, Q) p_c = sigmoid(max over boxes of the logit), the presence score of docs/design.md §4."""
        return torch.sigmoid(self.logits.float().amax(dim=1))


def _backbone(owl: nn.Module) -> nn.Module:
    # OWL-ViT keeps its CLIP under ``owlvit``, OWLv2 under ``owlv2``; the rest of the path is the same.
    for name in ("owlvit", "owlv2"):
        if hasattr(owl, name):
            return getattr(owl, name)
    raise TypeError(f"expected an OwlViTForObjectDetection or Owlv2ForObjectDetection; received {type(owl).__name__}")


class DetectionBranch:
    """Splits a real OWL detector at E. Holds no weights of its own."""

    def __init__(self, owl: nn.Module):
        self.owl = owl
        self.clip = _backbone(owl)
        self.vision = self.clip.vision_model
        vision_config = owl.config.vision_config
        rows = vision_config.image_size // vision_config.patch_size
        self.grid = (rows, rows)

    @property
    def width(self) -> int:
        """d_owl, the width of E."""
        return self.owl.config.vision_config.hidden_size

    @property
    def embedding_layer(self) -> int:
        """The index of the encoder layer E enters: OWL's last (E is the state entering it)."""
        return len(self.vision.encoder.layers) - 1

    def encoder_state(self, pixel_values: torch.Tensor, layer: int) -> torch.Tensor:
        """pixel_values (B, 3, H, W) → (B, 1+N, d_owl), the state entering encoder layer ``layer``, CLS first.

        Layer 0's input is the patch embeddings after the pre-layernorm; ``embedding_layer``'s input is E.
        """
        self._check_layer(layer)
        dtype = self.vision.embeddings.patch_embedding.weight.dtype
        hidden = self.vision.pre_layernorm(self.vision.embeddings(pixel_values.to(dtype)))
        return self.encode_from(hidden, 0, stop=layer)

    def encode_from(self, state: torch.Tensor, layer: int, *, stop: int | None = None) -> torch.Tensor:
        """The state entering encoder layer ``layer`` (B, 1+N, d) → E (or the state entering ``stop``)."""
        self._check_layer(layer)
        for block in self.vision.encoder.layers[layer:self.embedding_layer if stop is None else stop]:
            state = block(state, None)
        return state

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values (B, 3, H, W) → E (B, 1+N, d_owl): the input of OWL's last encoder layer, CLS first."""
        return self.encoder_state(pixel_values, self.embedding_layer)

    def _check_layer(self, layer: int) -> None:
        if not isinstance(layer, int) or not 0 <= layer <= self.embedding_layer:
            raise ValueError(f"expected an encoder layer in 0..{self.embedding_layer} (the last is E itself); "
                             f"received {layer!r}")

    def features(self, embedding: torch.Tensor) -> torch.Tensor:
        """E (B, 1+N, d) → t (B, N, d): last layer, post-layernorm, patch·CLS merge, layer norm."""
        hidden = self.vision.encoder.layers[-1](embedding, None)
        hidden = self.vision.post_layernorm(hidden)
        merged = hidden[:, 1:, :] * hidden[:, :1, :]
        return self.owl.layer_norm(merged)

    def query_embeds(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Tokenised queries (Q, L) → unit text embeddings (Q, d_text), as OWL's forward computes them."""
        text = self.clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return text / torch.linalg.norm(text, ord=2, dim=-1, keepdim=True)

    def detect(self, embedding: torch.Tensor, query_embeds: torch.Tensor) -> Detections:
        """E (B, 1+N, d) and queries (Q, d_text) or (B, Q, d_text) → ``Detections``."""
        features = self.features(embedding)  # (B, N, d)
        batch, tokens, width = features.shape
        if tokens != self.grid[0] * self.grid[1]:
            raise ValueError(f"E has {tokens} patch tokens; this detector's grid {self.grid} expects "
                             f"{self.grid[0] * self.grid[1]}")
        if query_embeds.ndim == 2:
            query_embeds = query_embeds.unsqueeze(0).expand(batch, -1, -1)
        # No query mask: OWL casts masked logits to float32, which would break float64 gradient checks.
        logits, _ = self.owl.class_predictor(features, query_embeds.to(features.dtype), None)
        feature_map = features.reshape(batch, self.grid[0], self.grid[1], width)
        boxes = self.owl.box_predictor(features, feature_map)
        return Detections(logits=logits, boxes_cxcywh=boxes, grid=self.grid)
