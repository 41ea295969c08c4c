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

__all__ = ["RandomPerturbation"]


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
