"""The random control: a perturbation of E as large as the adversarial one, in no particular direction.

docs/design.md §5: a bias figure means something only beside controls that come out near zero. Moving E at all
may move the MLLM's answer; the random control measures that part. It takes the adversarial δ's entries,
shuffles their positions within the tokens δ moves and flips their signs at random (per image, seeded), so it
has exactly the same L∞ and L2 norms, the same distribution of entry sizes and the same tokens (all of E for
the paper's attack, OWL's C− region for the localised one) as the perturbation it controls for.
"""

from __future__ import annotations

import torch

from owlens.bias.perturbation import (
    Concept,
    Perturbation,
    applied_at,
    borrowed_for_gradients,
    finish,
    query_embeds_for,
)
from owlens.bias.region import owl_region
from owlens.explain._borrow import borrowed
from owlens.queries import QUERY_TEMPLATE

__all__ = ["IdentityPerturbation", "OrthogonalRandomPerturbation", "RandomPerturbation"]


class RandomPerturbation:
    """``RandomPerturbation(model, seed=0).perturb(E, c_minus, c_plus, like=adversarial) -> Perturbation``.

    ``c_minus``/``c_plus`` are only read out (OWL's presence before/after), never optimised for.
    """

    method = "random"

    def __init__(self, model, *, seed: int = 0, owl_template: str = QUERY_TEMPLATE):
        self.model, self.seed, self.owl_template = model, int(seed), owl_template

    def _delta(self, reference: torch.Tensor) -> torch.Tensor:
        """(B, 1+N, d) reference δ → δ with each image's entries permuted within its moved tokens, re-signed."""
        generator = torch.Generator().manual_seed(self.seed)
        reference = reference.detach().cpu()
        out = torch.zeros_like(reference)
        for index, delta in enumerate(reference):  # (1+N, d)
            moved = delta.abs().amax(-1) > 0  # (1+N,) the tokens the reference changes
            values = delta[moved].flatten()
            signs = (torch.randint(0, 2, values.shape, generator=generator) * 2 - 1).to(values.dtype)
            shuffled = values.abs()[torch.randperm(len(values), generator=generator)] * signs
            out[index, moved] = shuffled.view(-1, delta.shape[-1])
        return out

    def perturb(self, embedding: torch.Tensor, c_minus: str | Concept, c_plus: str | Concept, *,
                like: Perturbation, state: torch.Tensor | None = None) -> Perturbation:
        """E (B, 1+N, d) and the perturbation to match → a random one of the same norms, where it was applied
        (``state``: the encoder state it was applied to, when ``like.layer`` is set)."""
        embedding, minus, plus, work = _matching(embedding, like, c_minus, c_plus, self.owl_template)
        origin, to_embedding = applied_at(self.model, embedding, state, like.layer)
        delta = self._delta(_reference(like, embedding, work)).to(origin.device)
        queries = query_embeds_for(self.model, (minus, plus))
        with torch.no_grad():
            perturbed = to_embedding((origin.to(work) + delta).to(origin.dtype))
        return finish(self.model, embedding, perturbed, minus, plus, queries, self.method,
                      {"seed": self.seed, "matched": like.method, "layer": like.layer},
                      delta=None if like.layer is None else delta, layer=like.layer)


REGION = 0.5  # the toy setting's region: boxes with C− presence ≥ half the image's best


class _HeldToConcepts:
    """What the orthogonal and identity controls share: OWL's class logits for both concepts, at the boxes the swap
    loss reads, put back to their clean values by Gauss-Newton steps (least squares on their Jacobian).

    The boxes held still: those on moved tokens where OWL sees C− (presence ≥ the swap's region × the image's
    best), the swap loss's own region. For the paper's attack, which moves all of E against every box, REGION:
    holding every box's logits would cost a backward per box and query (640 on the toy world) at every step.
    """

    def _jacobian(self, x: torch.Tensor, queries: torch.Tensor, pairs: list, to_embedding) -> tuple[list, list]:
        """Per image b: the logits (k_b,) of its (box, query) ``pairs[b]`` at x and their gradients (k_b, 1+N, d)."""
        values: list[list[torch.Tensor]] = [[] for _ in pairs]
        rows: list[list[torch.Tensor]] = [[] for _ in pairs]
        with borrowed_for_gradients(self.model):
            x = x.detach().requires_grad_(True)
            logits = self.model.detect(to_embedding(x), queries).logits  # (B, N, Q)
            for k in range(max((len(p) for p in pairs), default=0)):
                # Each image's logits depend on its own E only: one backward gives row k of every image at once.
                chosen = [(b, logits[b, p[k][0], p[k][1]]) for b, p in enumerate(pairs) if k < len(p)]
                grad = torch.autograd.grad(torch.stack([c for _, c in chosen]).sum(), x, retain_graph=True)[0]
                for b, value in chosen:
                    values[b].append(value.detach())
                    rows[b].append(grad[b].detach())
        return ([torch.stack(v).double().cpu() if v else torch.zeros(0, dtype=torch.float64) for v in values],
                [torch.stack(r).double().cpu() if r else None for r in rows])

    def _clean(self, x: torch.Tensor, queries: torch.Tensor, pairs: list, to_embedding) -> list[torch.Tensor]:
        """Per image b: the logits (k_b,) of its ``pairs[b]`` at x, the values the corrections restore; one forward,
        where ``_jacobian`` would also take a backward per row."""
        with borrowed(self.model), torch.no_grad():
            logits = self.model.detect(to_embedding(x), queries).logits  # (B, N, Q)
        empty = torch.zeros(0, dtype=torch.float64)
        return [torch.stack([logits[b, m, q] for m, q in p]).double().cpu() if p else empty
                for b, p in enumerate(pairs)]

    def _held_pairs(self, embedding: torch.Tensor, queries: torch.Tensor, n_minus: int, moved: torch.Tensor,
                    like: Perturbation) -> list[list[tuple[int, int]]]:
        """Per image, the (box, query) logits held still: every query at each box in the swap's region on a moved
        token (``moved`` (B, 1+N) bool)."""
        region = like.settings.get("region") or REGION
        seen = owl_region(self.model, embedding, queries, n_minus, region).cpu()  # (B, N)
        return [[(int(m), q) for m in torch.nonzero(row).flatten() for q in range(len(queries))]
                for row in moved[:, 1:] & seen]

    def _correct(self, delta: torch.Tensor, at, clean: list, queries: torch.Tensor, pairs: list, to_embedding,
                 moved: torch.Tensor) -> None:
        """One Gauss-Newton step, in place on δ (B, 1+N, d) float64: the held logits back to ``clean``."""
        values, jacobian = self._jacobian(at(delta), queries, pairs, to_embedding)
        for b, tokens in enumerate(moved):
            if jacobian[b] is None:
                continue
            g = jacobian[b][:, tokens].flatten(1)  # (k, D)
            fix = torch.linalg.lstsq(g, (values[b] - clean[b])[:, None], driver="gelsd").solution[:, 0]
            delta[b, tokens] -= fix.view(-1, delta.shape[-1])


class OrthogonalRandomPerturbation(_HeldToConcepts):
    """A random δ that leaves OWL's class logits for both concepts where they were: the control a swap is read against.

    ``RandomPerturbation`` shuffles the adversarial δ, so part of it still moves OWL's logits for the concepts (it
    lowers the toy OWL's red presence from 0.49 to 0.29): it measures "E degraded where the object is", not "E moved
    without changing a concept". Here, per image, a fixed Gaussian direction on the tokens the adversarial δ moves
    is followed in ``steps`` steps of L2 ε/steps, each projected off the span of ∇_E l_{m,q} (the class logits of
    both concepts' queries q at the boxes m on those tokens where OWL sees C−, the ones the localised swap loss
    reads) at the current point, each followed by ``corrections`` Gauss-Newton steps that put those logits back to
    their clean values. Projecting once at E is not enough at the toy setting's size (an L2 of one token's norm):
    the logits are far from linear there and OWL's red presence fell as much as with the shuffled control. Same
    tokens as the adversarial δ; L2 ≈ its L2 (the path is not quite straight: the recorded ``l2`` says by how much);
    L∞ differs.
    """

    method = "orthogonal"

    # 5 steps with one correction each hold the toy OWL's red presence to 1e-4 (0.43431 → 0.43425 on 25
    # development scenes, seed 7) at a third of the cost of 10 steps with two.
    def __init__(self, model, *, seed: int = 0, owl_template: str = QUERY_TEMPLATE, steps: int = 5,
                 corrections: int = 1):
        if steps < 1 or corrections < 0:
            raise ValueError(f"expected steps >= 1 and corrections >= 0; received {steps} and {corrections}")
        self.model, self.seed, self.owl_template = model, int(seed), owl_template
        self.steps, self.corrections = int(steps), int(corrections)

    def perturb(self, embedding: torch.Tensor, c_minus: str | Concept, c_plus: str | Concept, *,
                like: Perturbation, state: torch.Tensor | None = None) -> Perturbation:
        """E (B, 1+N, d) and the perturbation to match → a random δ along which the concepts' logits stay put
        (applied where ``like`` was: E, or ``state``, the encoder state entering ``like.layer``)."""
        embedding, minus, plus, work = _matching(embedding, like, c_minus, c_plus, self.owl_template)
        origin, to_embedding = applied_at(self.model, embedding, state, like.layer)
        reference = _reference(like, embedding, work).cpu()  # (B, 1+N, d)
        moved = reference.abs().amax(-1) > 0  # (B, 1+N) tokens the adversarial δ changes
        queries = query_embeds_for(self.model, (minus, plus))
        pairs = self._held_pairs(embedding, queries, len(minus.queries), moved, like)
        generator = torch.Generator().manual_seed(self.seed)
        directions = [torch.randn(int(t.sum()) * reference.shape[-1], generator=generator, dtype=torch.float64)
                      for t in moved]
        budget = reference.flatten(1).double().norm(dim=1)  # (B,)
        delta = torch.zeros_like(reference, dtype=torch.float64)

        def at(d: torch.Tensor) -> torch.Tensor:
            return (origin.to(work) + d.to(origin.device, work)).to(origin.dtype)

        clean = self._clean(origin, queries, pairs, to_embedding)
        for _ in range(self.steps):
            _, jacobian = self._jacobian(at(delta), queries, pairs, to_embedding)
            for b, tokens in enumerate(moved):
                step = directions[b]
                if jacobian[b] is not None:
                    q, _ = torch.linalg.qr(jacobian[b][:, tokens].flatten(1).T)  # (D, k) span of the gradients
                    step = step - q @ (q.T @ step)
                step = step * (budget[b] / self.steps / step.norm().clamp_min(1e-12))
                delta[b, tokens] += step.view(-1, reference.shape[-1])
            for _ in range(self.corrections):  # back onto "the concepts' logits as on the clean E"
                self._correct(delta, at, clean, queries, pairs, to_embedding, moved)
        with torch.no_grad():
            perturbed = to_embedding(at(delta))
        return finish(self.model, embedding, perturbed, minus, plus, queries, self.method,
                      {"seed": self.seed, "matched": like.method, "steps": self.steps,
                       "corrections": self.corrections, "layer": like.layer},
                      delta=None if like.layer is None else delta.to(origin.device, work), layer=like.layer)


class IdentityPerturbation(_HeldToConcepts):
    """The swap C− → C−: the random control's δ, moved back onto OWL's clean reading of both concepts.

    The attack itself cannot be the identity control. With C+ = C− the paper's loss pulls C−'s logits to 0, which is
    more C− wherever OWL saw little (tuning seed 5: the toy OWL's red presence 0.47 → 0.69, and the MLLM answered as
    for a redder object); with the cancelled pushes held at their clean logits instead (``perturbation.py``) the
    loss is already at its minimum at δ = 0, and an attack from there never moves. So the identity asks the question
    the attack's objective asks when there is no concept to move, from a move of the attack's own size: it starts
    from the shuffled random control's δ (same tokens, entries and norms as the adversarial one) and takes
    ``corrections`` Gauss-Newton steps that put both concepts' logits at the swap's boxes back to their clean values
    (PGD's fixed-length steps circle such a point instead of reaching it: red presence ended at 0.53). Read beside
    the shuffled control, the difference is what OWL's concepts moving by chance did to the answer.
    """

    method = "identity"

    # From the shuffled δ (red presence 0.484 → 0.454 on tuning seed 6, 100 scenes), 2 corrections left 0.478 and
    # 6 put it back to 0.4837 exactly, for about a quarter more of the run's time. J's answer did not move between
    # the two (+0.02 both): it is not OWL's reading of the concept that the remaining figure comes from.
    def __init__(self, model, *, owl_template: str = QUERY_TEMPLATE, corrections: int = 6):
        if corrections < 1:
            raise ValueError(f"expected corrections >= 1 (with none this is the shuffled random control); "
                             f"received {corrections}")
        self.model, self.owl_template, self.corrections = model, owl_template, int(corrections)

    def perturb(self, embedding: torch.Tensor, c_minus: str | Concept, c_plus: str | Concept, *,
                like: Perturbation, start: Perturbation, state: torch.Tensor | None = None) -> Perturbation:
        """E (B, 1+N, d), the adversarial perturbation (its region and layer) and the random control matching it →
        ``start``'s δ, corrected so that OWL's logits for ``c_minus`` and ``c_plus`` at the swap's boxes are as on E
        (applied where ``like`` was: E, or ``state``, the encoder state entering ``like.layer``)."""
        embedding, minus, plus, work = _matching(embedding, like, c_minus, c_plus, self.owl_template)
        if start.layer != like.layer or start.embedding.shape != embedding.shape:
            raise ValueError(f"the identity starts from the random control matching the attack: expected a start "
                             f"at layer {like.layer} shaped {tuple(embedding.shape)}; received layer {start.layer} "
                             f"shaped {tuple(start.embedding.shape)}")
        origin, to_embedding = applied_at(self.model, embedding, state, like.layer)
        delta = _reference(start, embedding, work).cpu().double()  # (B, 1+N, d)
        moved = delta.abs().amax(-1) > 0  # (B, 1+N) the tokens it moves, which the corrections keep to
        queries = query_embeds_for(self.model, (minus, plus))
        pairs = self._held_pairs(embedding, queries, len(minus.queries), moved, like)

        def at(d: torch.Tensor) -> torch.Tensor:
            return (origin.to(work) + d.to(origin.device, work)).to(origin.dtype)

        clean = self._clean(origin, queries, pairs, to_embedding)
        for _ in range(self.corrections):
            self._correct(delta, at, clean, queries, pairs, to_embedding, moved)
        with torch.no_grad():
            perturbed = to_embedding(at(delta))
        return finish(self.model, embedding, perturbed, minus, plus, queries, self.method,
                      {"matched": like.method, "start": start.method, "corrections": self.corrections,
                       "layer": like.layer},
                      delta=None if like.layer is None else delta.to(origin.device, work), layer=like.layer)


def _reference(like: Perturbation, embedding: torch.Tensor, work: torch.dtype) -> torch.Tensor:
    """(B, 1+N, d) the δ a control matches, where it was applied (E' − E on E itself)."""
    if like.layer is not None:
        return like.delta.to(embedding.device, work)
    return like.embedding.to(work) - embedding.to(work)


def _matching(embedding: torch.Tensor, like: Perturbation, c_minus, c_plus, template: str):
    """What both random controls start from: E detached (checked against the perturbation they match), the two
    concepts, and the dtype they work in (at least float32; float64 kept exact)."""
    if like.embedding.shape != embedding.shape:
        raise ValueError(f"the perturbation to match has E' shaped {tuple(like.embedding.shape)}; "
                         f"expected E's shape {tuple(embedding.shape)}")
    embedding = embedding.detach()
    return (embedding, Concept.of(c_minus, template), Concept.of(c_plus, template),
            torch.promote_types(embedding.dtype, torch.float32))
