"""The joint model J: one shared vision embedding E feeding a detector and an MLLM (docs/design.md §1).

    image ─► encode ─► E (B, 1+N, d_owl)
             E ─► detect(E, queries) ─► Detections (logits (B, N, Q), boxes_cxcywh (B, N, 4))
             E ─► image_tokens(E) = W(E[:, 1:]) (B, N, D_lm) ─► logits / generate on a prompt
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from owlens.models.alignment import Alignment
from owlens.models.detection import DetectionBranch, Detections
from owlens.models.language import Generation, LanguageBranch
from owlens.models.loading import load_parts
from owlens.models.processor import JointProcessor, check_grids

__all__ = ["JointModel"]


class JointModel(nn.Module):
    """A real OWL detector, the language side of a real LLaVA, and the alignment W between them."""

    def __init__(self, owl: nn.Module, llava: nn.Module, alignment: Alignment,
                 processor: JointProcessor | None = None):
        super().__init__()
        self.grid = check_grids(owl.config, llava.config)
        self.owl, self.llava, self.alignment = owl, llava, alignment
        self.sources: dict[str, str | None] = {}  # role -> folder or hub id, set by from_pretrained
        self.detection = DetectionBranch(owl)
        self.language = LanguageBranch(llava)
        expected = (self.detection.width, self.language.width)
        received = (alignment.config.in_dim, alignment.config.out_dim)
        if expected != received:
            raise ValueError(
                f"the alignment W maps {received[0]}→{received[1]} but these models need "
                f"{expected[0]} (OWL width d_owl)→{expected[1]} (LM input width D_lm); train a W for this pair "
                "with `owlens align train`"
            )
        self.processor = processor
        # The folder W was loaded from, where its grounding calibration lives (None: W built in memory).
        self.projector_folder = None

    @property
    def device(self) -> torch.device:
        return next(self.alignment.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.alignment.parameters()).dtype

    @classmethod
    def from_pretrained(cls, owl=None, mllm=None, projector=None, **kwargs) -> JointModel:
        """Load J (as ``cls``) from hub ids or local folders; with no names, the shipped toy world. The keyword
        arguments are ``models.loading.load_parts``'s. Models are put in eval mode; J's own parameters are not
        frozen (the caller decides)."""
        parts = load_parts(owl=owl, mllm=mllm, projector=projector, **kwargs)
        model = cls(parts.owl, parts.llava, parts.alignment, parts.processor).to(parts.device)
        # Where the weights came from: a run folder fingerprints these files, so a resume with others is refused.
        model.sources = dict(parts.sources)
        model.projector_folder = parts.projector_folder
        return model.eval()

    def reload_arguments(self) -> dict | None:
        """The ``from_pretrained`` arguments that load this model again in another process (a worker), or None
        for a model built in code. The weights are read again from ``sources``: changes made in memory since
        loading do not travel."""
        if not self.sources.get("owl") or not self.sources.get("mllm"):
            return None
        return {**self.sources, "device": str(self.device), "dtype": self.dtype}

    def _require_processor(self) -> JointProcessor:
        if self.processor is None:
            raise ValueError("this JointModel has no processor: pass token ids instead of text, or load it "
                             "with JointModel.from_pretrained")
        return self.processor

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """OWL pixel values (B, 3, H, W) → E (B, 1+N, d_owl), OWL's penultimate hidden state, CLS first."""
        return self.detection.encode(pixel_values.to(self.device))

    def encoder_state(self, pixel_values: torch.Tensor, layer: int) -> torch.Tensor:
        """OWL pixel values → (B, 1+N, d_owl), the state entering OWL's encoder layer ``layer`` (upstream of E)."""
        return self.detection.encoder_state(pixel_values.to(self.device), layer)

    def encode_from(self, state: torch.Tensor, layer: int) -> torch.Tensor:
        """The state entering OWL's encoder layer ``layer`` (B, 1+N, d_owl) → E, through OWL's own layers."""
        return self.detection.encode_from(state, layer)

    def pixel_values(self, images) -> torch.Tensor:
        """Paths, PIL images or uint8 arrays → the detector's input (B, 3, H_owl, W_owl) on the model's device."""
        return self._require_processor().pixel_values(images).to(self.device)

    def encode_images(self, images) -> torch.Tensor:
        """Paths, PIL images or uint8 arrays → E (B, 1+N, d_owl)."""
        return self.encode(self.pixel_values(images))

    def query_embeds(self, queries: Sequence[str] | dict[str, torch.Tensor]) -> torch.Tensor:
        """Text queries (Q) or their token ids → unit query embeddings (Q, d_text)."""
        if not isinstance(queries, dict):
            queries = self._require_processor().queries(queries)
        return self.detection.query_embeds(queries["input_ids"].to(self.device),
                                           queries["attention_mask"].to(self.device))

    def detect(self, embedding: torch.Tensor, queries: Sequence[str] | torch.Tensor) -> Detections:
        """E (B, 1+N, d) and text queries (or query embeddings (Q, d_text)) → ``Detections``."""
        query_embeds = queries if isinstance(queries, torch.Tensor) else self.query_embeds(queries)
        return self.detection.detect(embedding, query_embeds)

    def image_tokens(self, embedding: torch.Tensor) -> torch.Tensor:
        """E (B, 1+N, d_owl) → v = W(E[:, 1:]) (B, N, D_lm): the image tokens the LM reads."""
        return self.alignment(embedding[:, 1:].to(self.dtype))

    def _prompt_inputs(self, prompts) -> dict[str, torch.Tensor]:
        if isinstance(prompts, dict):
            return {k: v.to(self.device) for k, v in prompts.items()}
        return {k: v.to(self.device) for k, v in self._require_processor().prompts(prompts).items()}

    def inputs_embeds(self, embedding: torch.Tensor, prompts) -> tuple[torch.Tensor, torch.Tensor]:
        """E and prompts (text, or dict of input_ids/attention_mask (B, T)) → inputs_embeds (B, T, D), mask."""
        inputs = self._prompt_inputs(prompts)
        embeds = self.language.embed(inputs["input_ids"], self.image_tokens(embedding))
        return embeds, inputs["attention_mask"]

    def _embeds_from_tokens(self, tokens: torch.Tensor, prompts) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = self._prompt_inputs(prompts)
        return self.language.embed(inputs["input_ids"], tokens), inputs["attention_mask"]

    def logits(self, embedding: torch.Tensor, prompts) -> torch.Tensor:
        """E and prompts → LM logits (B, T, V), pre-softmax, for every prompt position."""
        return self.logits_from_tokens(self.image_tokens(embedding), prompts)

    def logits_from_tokens(self, tokens: torch.Tensor, prompts) -> torch.Tensor:
        """``logits`` from image tokens W(E[:, 1:]) (B, N, D_lm) already computed: W is applied once per image
        when several prompts ask about the same one (index or expand the tokens, not E)."""
        embeds, mask = self._embeds_from_tokens(tokens, prompts)
        return self.language.logits(embeds, mask)

    def last_logits(self, embedding: torch.Tensor, prompts) -> torch.Tensor:
        """E and prompts → LM logits (B, V) of each prompt's last position (the next token), computed there only."""
        embeds, mask = self._embeds_from_tokens(self.image_tokens(embedding), prompts)
        return self.language.last_logits(embeds, mask)

    def generate(self, embedding: torch.Tensor, prompts, **options) -> Generation:
        """E and prompts → ``Generation`` (greedy unless ``do_sample``; ``seed`` makes sampling repeatable)."""
        return self.generate_from_tokens(self.image_tokens(embedding), prompts, **options)

    def generate_from_tokens(self, tokens: torch.Tensor, prompts, **options) -> Generation:
        """``generate`` from image tokens W(E[:, 1:]) (B, N, D_lm) already computed (see ``logits_from_tokens``)."""
        embeds, mask = self._embeds_from_tokens(tokens, prompts)
        return self.language.generate(embeds, mask, self._require_processor().mllm_tokenizer, **options)
