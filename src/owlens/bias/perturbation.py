"""What every perturbation of E returns, the semantic-swap loss they share, and OWL's presence read-out.

docs/design.md §5 (the paper's bias assessment): E is moved so that OWL sees C+ where it saw C−. The loss is the
MSE of OWL's class logits for [C− queries, C+ queries] over all boxes against targets −1e6 / +1e6. Targets that
far away make the loss's gradient, box by box, a constant push (down on C−, up on C+) through OWL's last layer:
the attack follows the detector's notion of the concept, not the MLLM's, which is what makes the MLLM's
change of answer a measurement rather than an optimisation target. ``region`` (``region.py``) is our
localised variant: the same loss over the boxes where OWL sees C− only, moving only their patch tokens.
``layer`` is our upstream variant: δ is applied to the state entering one of OWL's earlier encoder layers and
reaches E through OWL's own layers (``applied_at`` says why). A query text both concepts name is held at its
clean logit rather than pulled to 0 (``perturb`` says why): the swap of a concept with itself leaves E as it is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from owlens.bias.region import owl_region, token_mask
from owlens.explain._borrow import borrowed
from owlens.queries import QUERY_TEMPLATE

__all__ = [
    "PAPER_TARGET",
    "applied_at",
    "encode_for",
    "Concept",
    "Perturbation",
    "SwapPerturbation",
    "borrowed_for_gradients",
    "concept_presence",
    "finish",
    "query_embeds_for",
]

PAPER_TARGET = 1e6  # |target| of the class logits in the swap loss (paper default)


@dataclass(frozen=True)
class Concept:
    """What OWL is asked to see: a name, and the text queries standing for it (presence = max over them).

    One query is the paper's case ("a photo of a man"); several let a concept cover variants
    (the toy world's colour "red" = "a photo of a red circle", ..., "a photo of a red cross").
    """

    name: str
    queries: tuple[str, ...]

    def __post_init__(self):
        if not self.name or not self.queries or any(not q.strip() for q in self.queries):
            raise ValueError(f"a concept needs a name and one or more non-empty queries; received "
                             f"name={self.name!r}, queries={self.queries!r}")
        object.__setattr__(self, "queries", tuple(self.queries))

    @classmethod
    def of(cls, value: str | Concept, template: str = QUERY_TEMPLATE) -> Concept:
        """A ``Concept`` as is, or a plain name wrapped in OWL's template ("man" → "a photo of a man")."""
        if isinstance(value, Concept):
            return value
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"expected a concept name or a Concept; received {value!r}")
        return cls(value, (template.format(value),))

    def to_dict(self) -> dict:
        return {"name": self.name, "queries": list(self.queries)}


@dataclass(frozen=True)
class Perturbation:
    """E' = E + δ, and what OWL reads from E and from E'.

    embedding: (B, 1+N, d) the perturbed E', detached, in E's dtype and on E's device.
    linf, l2: (B,) float32 norms of δ = E' − E per image, over the whole (1+N)·d tensor.
    tokens_moved: (B,) int64, how many of the 1+N tokens δ changes (all of them for the paper's attack).
    presence_before, presence_after: (B, 2) float32 OWL presence sigmoid(max over boxes and the concept's
        queries of the class logit), columns [C−, C+], from E and from E'.
    c_minus, c_plus: the concepts, by name. method: "fgsm", "pgd", "random". settings: its configuration.
    layer, delta: None for δ on E itself (E' − E); else δ (B, 1+N, d) float32 was applied to the state entering
        OWL's encoder layer ``layer``, E' computed from there. The norms above are δ's, in the space it was applied.
    """

    embedding: torch.Tensor
    linf: torch.Tensor
    l2: torch.Tensor
    tokens_moved: torch.Tensor
    presence_before: torch.Tensor
    presence_after: torch.Tensor
    c_minus: str
    c_plus: str
    method: str
    settings: dict = field(default_factory=dict)
    delta: torch.Tensor | None = field(default=None, repr=False)
    layer: int | None = None

    @property
    def swapped(self) -> torch.Tensor:
        """(B,) bool: after the perturbation OWL prefers C+ over C− (strictly)."""
        return self.presence_after[:, 1] > self.presence_after[:, 0]

    def image(self, index: int) -> dict:
        """One image's norms and presences, JSON-ready."""
        return {"linf": float(self.linf[index]), "l2": float(self.l2[index]),
                "tokens_moved": int(self.tokens_moved[index]),
                "presence_before": self.presence_before[index].tolist(),
                "presence_after": self.presence_after[index].tolist(), "swapped": bool(self.swapped[index])}

    def to_dict(self) -> dict:
        """Everything but E' itself (which stays a tensor), JSON-ready."""
        return {"method": self.method, "settings": dict(self.settings), "c_minus": self.c_minus,
                "c_plus": self.c_plus, "swap_rate": float(self.swapped.float().mean()),
                "images": [self.image(i) for i in range(len(self.linf))]}


@contextlib.contextmanager
def borrowed_for_gradients(model: torch.nn.Module):
    """``borrowed`` (eval mode, frozen parameters, both returned) with gradients on: they flow to E only."""
    with borrowed(model), torch.enable_grad():
        yield


class SwapPerturbation:
    """Shared pipeline: concepts → OWL query embeddings → δ from the swap loss → ``Perturbation``.

    Subclasses implement ``_delta(embedding, gradient)`` where ``gradient(x)`` is ∇ₓ loss at x (B, 1+N, d).
    """

    method = "swap"

    def __init__(self, model, *, target: float = PAPER_TARGET, owl_template: str = QUERY_TEMPLATE,
                 region: float | None = None, layer: int | None = None):
        if target <= 0:
            raise ValueError(f"the logit target must be positive (C+ is pushed to +target); received {target}")
        if region is not None and not 0 < region <= 1:
            raise ValueError(f"region is a fraction of the best C- presence, in (0, 1], or None for all of E "
                             f"(paper); received {region}")
        if layer is not None and (not isinstance(layer, int) or layer < 0):
            raise ValueError(f"layer is the OWL encoder layer whose input state is perturbed (0 or more), or None "
                             f"for E itself (paper); received {layer!r}")
        self.model, self.target, self.owl_template = model, float(target), owl_template
        self.region = None if region is None else float(region)
        self.layer = layer

    @property
    def settings(self) -> dict:
        return {"target": self.target, "region": self.region, "layer": self.layer}

    def _delta(self, embedding: torch.Tensor, gradient: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def perturb(self, embedding: torch.Tensor, c_minus: str | Concept, c_plus: str | Concept, *,
                state: torch.Tensor | None = None) -> Perturbation:
        """E (B, 1+N, d) → ``Perturbation`` moving OWL's reading from ``c_minus`` to ``c_plus``.

        ``state``: with ``layer`` set, the state entering that OWL encoder layer (B, 1+N, d), which E came from
        (``JointModel.encoder_state``); δ is applied there.
        """
        minus, plus = Concept.of(c_minus, self.owl_template), Concept.of(c_plus, self.owl_template)
        embedding = embedding.detach()
        origin, to_embedding = applied_at(self.model, embedding, state, self.layer)
        queries = query_embeds_for(self.model, (minus, plus))  # (Qm + Qp, d_text)
        # Σ_q (l_q − t_q)² over queries that share a text is n·(l − mean t)² plus a constant: the same gradient,
        # computed without subtracting two ~1e6 terms (float32 keeps only ~0.1 of resolution there).
        texts = [*minus.queries, *plus.queries]
        unique = list(dict.fromkeys(texts))
        signs = [-1.0] * len(minus.queries) + [1.0] * len(plus.queries)
        weight = torch.tensor([texts.count(u) for u in unique], dtype=torch.float64)
        pull = torch.tensor([sum(sg for t, sg in zip(texts, signs) if t == u) for u in unique],
                            dtype=torch.float64) / weight  # (U,) in [-1, 1]: the net push on each text
        unique_queries = queries[[texts.index(u) for u in unique]]
        target = pull * self.target  # (U,) or, below, (B, N, U)
        # A text in both concepts (C+ = C−) is pushed down and up by 1e6: the pushes cancel, and what the paper's
        # loss has left is Σ l², which pulls every box's logit to 0 (p = ½), so OWL sees *more* C− (on the toy
        # world, red presence 0.47 → 0.69 on 50 scenes): a concept change, where C+ = C− asks for none. The
        # cancelled part of such a text's target is its clean logit instead: the attack holds it (δ = 0).
        held = 1 - pull.abs()  # (U,) 0 for a text in one concept: the paper's loss, untouched
        if held.any():
            with torch.no_grad():
                clean = self.model.detect(to_embedding(origin), unique_queries).logits.double().cpu()  # (B, N, U)
            target = target + held * clean
        region = None if self.region is None else owl_region(self.model, embedding, queries, len(minus.queries),
                                                              self.region)  # (B, N) or None: every box
        # Upstream, every token of the state may move: OWL's layers spread a change across tokens anyway.
        mask = None if region is None or self.layer is not None else token_mask(region)  # (B, 1+N, 1)

        def gradient(x: torch.Tensor) -> torch.Tensor:
            x = x.detach().requires_grad_(True)
            logits = self.model.detect(to_embedding(x), unique_queries).logits  # (B, N, U)
            work = torch.promote_types(logits.dtype, torch.float32)  # never a half-precision loss
            per_box = (weight.to(x.device, work) * (logits.to(work) - target.to(x.device, work)) ** 2).sum(-1) \
                / len(texts)  # (B, N)
            # Each image's own mean (over its boxes, or its region): the loss is a sum over images, so one
            # image's gradient never depends on which images share its batch.
            per_image = per_box.mean(1) if region is None else (per_box * region).sum(1) / region.sum(1).clamp_min(1)
            grad = torch.autograd.grad(per_image.sum(), x)[0]
            return grad if mask is None else grad * mask.to(grad.dtype)

        with borrowed_for_gradients(self.model):
            delta = self._delta(origin, gradient)
            with torch.no_grad():
                perturbed = to_embedding((origin + delta).to(origin.dtype))
        # On E, the norms are measured on E' − E as it is stored (in E's dtype), as they always were.
        return finish(self.model, embedding, perturbed, minus, plus, queries, self.method, self.settings,
                      delta=None if self.layer is None else delta, layer=self.layer)


@torch.no_grad()
def encode_for(model, pixel_values: torch.Tensor, layer: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """OWL pixel values → (E (B, 1+N, d), the state entering encoder ``layer`` that E came from, or None)."""
    if layer is None:
        return model.encode(pixel_values), None
    state = model.encoder_state(pixel_values, layer)
    return model.encode_from(state, layer), state


def applied_at(model, embedding: torch.Tensor, state: torch.Tensor | None, layer: int | None):
    """Where δ goes and how it reaches E: (origin (B, 1+N, d), x ↦ E(x)), for E itself or an upstream state.

    Why upstream: on the toy world the MLLM reads an object's colour from 6–8 of E's tokens, while the boxes
    where OWL sees it cover about 2 (docs/benchmarks.md, "Bias assessment"); δ on those 2 tokens of E reaches
    the colour only by pushing them far from any image's tokens, which moves every answer. The same loss on the
    state two layers earlier reaches E through OWL's own attention and MLPs, spread over the object's tokens.
    """
    if layer is None:
        return embedding, lambda x: x
    if state is None:
        raise ValueError(f"this perturbation is applied to the state entering OWL's encoder layer {layer}: pass "
                         f"state=model.encoder_state(pixel_values, {layer}) beside E")
    if state.shape != embedding.shape:
        raise ValueError(f"the encoder state is shaped {tuple(state.shape)}; expected E's shape "
                         f"{tuple(embedding.shape)}")
    return state.detach(), lambda x: model.encode_from(x, layer)


def concept_presence(model, embedding: torch.Tensor, queries: torch.Tensor, n_minus: int) -> torch.Tensor:
    """(B, 2) presence of [C−, C+]: sigmoid of the max logit over boxes and over each concept's queries."""
    with torch.no_grad():
        presence = model.detect(embedding, queries).presence()  # (B, Qm + Qp)
    return torch.stack([presence[:, :n_minus].amax(1), presence[:, n_minus:].amax(1)], dim=1)


def finish(model, embedding: torch.Tensor, perturbed: torch.Tensor, minus: Concept, plus: Concept,
           queries: torch.Tensor, method: str, settings: dict, *, delta: torch.Tensor | None = None,
           layer: int | None = None) -> Perturbation:
    """Measure δ and OWL's before/after presence; the one place a ``Perturbation`` is built.

    ``delta``: δ where it was applied (the state entering encoder layer ``layer``); None: E' − E.
    """
    delta = (perturbed - embedding if delta is None else delta).detach().float()  # (B, 1+N, d)
    n_minus = len(minus.queries)
    return Perturbation(
        embedding=perturbed.detach(), linf=delta.flatten(1).abs().amax(1).cpu(), l2=delta.flatten(1).norm(dim=1).cpu(),
        tokens_moved=(delta.abs().amax(-1) > 0).sum(1).cpu(),
        presence_before=concept_presence(model, embedding, queries, n_minus).cpu(),
        presence_after=concept_presence(model, perturbed, queries, n_minus).cpu(),
        c_minus=minus.name, c_plus=plus.name, method=method, settings=dict(settings),
        delta=None if layer is None else delta.cpu(), layer=layer)


def query_embeds_for(model, concepts: Sequence[Concept]) -> torch.Tensor:
    """(ΣQ, d_text) OWL query embeddings of the concepts' queries, in order."""
    with torch.no_grad():
        return model.query_embeds([q for c in concepts for q in c.queries])
