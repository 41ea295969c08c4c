"""The random control: a perturbation of E as large as the adversarial one, in no particular direction.

DESIGN.md §5: a bias figure means something only beside controls that come out near zero. Moving E at all
may move the MLLM's answer; the random control measures that part. It takes the adversarial δ's entries,
shuffles their positions within the tokens δ moves and flips their signs at random (per image, seeded), so it
has exactly the same L∞ and L2 norms, the same distribution of entry sizes and the same tokens (all of E for
the paper's attack, OWL's C− region for the localised one) as the perturbation it controls for.
"""

from __future__ import annotations

import torch

from owlens.bias.perturbation import OWL_TEMPLATE, Concept, Perturbation, finish, query_embeds_for

__all__ = ["OrthogonalRandomPerturbation", "RandomPerturbation"]


class RandomPerturbation:
    """``RandomPerturbation(model, seed=0).perturb(E, c_minus, c_plus, like=adversarial) -> Perturbation``.

    ``c_minus``/``c_plus`` are only read out (OWL's presence before/after), never optimised for.
    """

    method = "random"

    def __init__(self, model, *, seed: int = 0, owl_template: str = OWL_TEMPLATE):
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
                like: Perturbation) -> Perturbation:
        """E (B, 1+N, d) and the perturbation to match → a random one of the same norms."""
        if like.embedding.shape != embedding.shape:
            raise ValueError(f"the perturbation to match has E' shaped {tuple(like.embedding.shape)}; "
                             f"expected E's shape {tuple(embedding.shape)}")
        minus, plus = Concept.of(c_minus, self.owl_template), Concept.of(c_plus, self.owl_template)
        embedding = embedding.detach()
        work = torch.promote_types(embedding.dtype, torch.float32)  # at least float32, float64 kept exact
        delta = self._delta(like.embedding.to(work) - embedding.to(work)).to(embedding.device)
        queries = query_embeds_for(self.model, (minus, plus))
        perturbed = (embedding.to(work) + delta).to(embedding.dtype)
        return finish(self.model, embedding, perturbed, minus, plus, queries, self.method,
                      {"seed": self.seed, "matched": like.method})


class OrthogonalRandomPerturbation:
    """A random δ that OWL's class logits do not read, to first order: the control a swap should be read against.

    ``RandomPerturbation`` shuffles the adversarial δ, so part of it still moves OWL's logits for the
    concepts (it lowered the toy OWL's red presence from 0.49 to 0.29): it measures "E degraded where the
    object is", not "E moved without changing a concept". Here, per image, a Gaussian δ on the tokens the
    adversarial δ moves is projected off the span of ∇_E l_{m,q}, the class logits of both concepts' queries q at
    the boxes m on those tokens (the boxes the swap loss reads), taken at the clean E, and scaled to the
    adversarial δ's L2 norm. Same tokens, same L2; its L∞ differs (Gaussian, not the attack's entries).
    """

    method = "orthogonal"

    def __init__(self, model, *, seed: int = 0, owl_template: str = OWL_TEMPLATE):
        self.model, self.seed, self.owl_template = model, int(seed), owl_template

    def _logit_gradients(self, embedding: torch.Tensor, queries: torch.Tensor, boxes: torch.Tensor) -> list:
        """Per image, (k, 1+N, d) gradients of the class logits of every query at its boxes ``boxes`` (B, N)."""
        from owlens.bias.perturbation import borrowed_for_gradients

        pairs = [[(int(m), q) for m in torch.nonzero(row).flatten() for q in range(len(queries))] for row in boxes]
        rows: list[list[torch.Tensor]] = [[] for _ in pairs]
        with borrowed_for_gradients(self.model):
            x = embedding.detach().requires_grad_(True)
            logits = self.model.detect(x, queries).logits  # (B, N, Q)
            for k in range(max(len(p) for p in pairs)):
                # Each image's logits depend on its own E only: one backward gives row k of every image at once.
                chosen = [logits[b, p[k][0], p[k][1]] for b, p in enumerate(pairs) if k < len(p)]
                grad = torch.autograd.grad(torch.stack(chosen).sum(), x, retain_graph=True)[0]
                for b, p in enumerate(pairs):
                    if k < len(p):
                        rows[b].append(grad[b].detach())
        return [torch.stack(r) if r else embedding.new_zeros((0, *embedding.shape[1:])) for r in rows]

    def perturb(self, embedding: torch.Tensor, c_minus: str | Concept, c_plus: str | Concept, *,
                like: Perturbation) -> Perturbation:
        """E (B, 1+N, d) and the perturbation to match → a random δ orthogonal to the concepts' logit gradients."""
        if like.embedding.shape != embedding.shape:
            raise ValueError(f"the perturbation to match has E' shaped {tuple(like.embedding.shape)}; "
                             f"expected E's shape {tuple(embedding.shape)}")
        minus, plus = Concept.of(c_minus, self.owl_template), Concept.of(c_plus, self.owl_template)
        embedding = embedding.detach()
        work = torch.promote_types(embedding.dtype, torch.float32)
        reference = (like.embedding.to(work) - embedding.to(work)).cpu()  # (B, 1+N, d)
        moved = reference.abs().amax(-1) > 0  # (B, 1+N) tokens the adversarial δ changes
        queries = query_embeds_for(self.model, (minus, plus))
        gradients = self._logit_gradients(embedding, queries, moved[:, 1:].to(embedding.device))
        generator = torch.Generator().manual_seed(self.seed)
        delta = torch.zeros_like(reference, dtype=torch.float64)
        for b in range(len(reference)):
            tokens = moved[b]
            if not tokens.any():
                continue
            basis = gradients[b].cpu().double()[:, tokens].flatten(1)  # (k, D) on the moved tokens
            draw = torch.randn(int(tokens.sum()) * reference.shape[-1], generator=generator, dtype=torch.float64)
            if len(basis):
                q, _ = torch.linalg.qr(basis.T)  # (D, k) orthonormal span of the gradients
                draw = draw - q @ (q.T @ draw)
            draw = draw * (reference[b].double().norm() / draw.norm().clamp_min(1e-12))
            delta[b, tokens] = draw.view(-1, reference.shape[-1])
        perturbed = (embedding.to(work) + delta.to(embedding.device, work)).to(embedding.dtype)
        return finish(self.model, embedding, perturbed, minus, plus, queries, self.method,
                      {"seed": self.seed, "matched": like.method})
