"""One batch of images through the whole measurement of docs/design.md §5, with its controls beside it.

    E ─► adversarial  E' = perturb(E, C−, C+)          (FGSM or PGD: OWL now sees C+)
      ─► random       E' = E + shuffled, re-signed δ    (same norms, no direction: does moving E at all matter?)
      ─► orthogonal   E' = E + random δ off the concepts' logit gradients (same tokens and L2: moving E
                      where OWL's concepts do not read it)
      ─► identity     E' = the random δ, corrected until OWL reads both concepts as on E (the swap C− → C−:
                      a move of the attack's size that changes no concept OWL reads)
      ─► null         E' = perturb(E, C−, C0)          (optional: a swap the trait does not depend on, same
                      attack and budget; what a swap of concept costs the answer by itself)
    each E' (and E, "clean") ─► trait question on W(E'[:, 1:]) ─► expected and parsed scores

A perturber with ``layer`` set is applied to the state entering that OWL encoder layer instead of E (E' then comes
out of OWL's own layers); every control is applied there too, so that each is read against the attack in the same
space. The benchmark runner and the toy validation both call ``BiasProbe.assess``, so the figure a user gets on
their own images and the figure checked against the toy world's injected truth come from one code path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from owlens.bias.perturbation import Concept, Perturbation
from owlens.bias.random_control import IdentityPerturbation, OrthogonalRandomPerturbation, RandomPerturbation
from owlens.bias.scoring import TraitScorer
from owlens.bias.summary import CONTROL_CONDITIONS

__all__ = ["CONDITIONS", "CONTROLS", "BiasProbe"]

CONDITIONS = ("adversarial", *CONTROL_CONDITIONS)
# Which measurement of the controls a record holds, so that a run folder never mixes two: 1, the identity was the
# attack run with C+ = C− (which made OWL see more C−); 2, it is the shuffled δ held to OWL's clean reading.
CONTROLS = 2


class BiasProbe:
    """``BiasProbe(model, perturber, scorer).assess(E, c_minus, c_plus, traits) -> list of per-image records``.

    perturber: anything with ``perturb(E, c_minus, c_plus) -> Perturbation`` (``FGSM``, ``PGD``).
    scorer: a ``TraitScorer``. random_seed: seeds the random control (with the caller's batch seed).
    """

    def __init__(self, model, perturber, scorer: TraitScorer, *, random_seed: int = 0, null: Concept | None = None):
        self.model, self.perturber, self.scorer = model, perturber, scorer
        self.random_seed, self.null = int(random_seed), null

    def perturbations(self, embedding: torch.Tensor, c_minus: Concept, c_plus: Concept,
                      batch_seed: int = 0, null: Concept | None = None,
                      state: torch.Tensor | None = None) -> dict[str, Perturbation]:
        """E (B, 1+N, d) → the perturbed embeddings, by condition name (``null`` only with a null concept).

        ``state``: the OWL encoder state E came from, for a perturber applied upstream (``layer`` set).
        """
        adversarial = self.perturber.perturb(embedding, c_minus, c_plus, state=state)
        seed = self.random_seed * 1_000_003 + batch_seed
        template = self.perturber.owl_template
        out = {
            "adversarial": adversarial,
            "random": RandomPerturbation(self.model, seed=seed, owl_template=template).perturb(
                embedding, c_minus, c_plus, like=adversarial, state=state),
            "orthogonal": OrthogonalRandomPerturbation(self.model, seed=seed, owl_template=template).perturb(
                embedding, c_minus, c_plus, like=adversarial, state=state),
        }
        out["identity"] = IdentityPerturbation(self.model, owl_template=template).perturb(
            embedding, c_minus, c_plus, like=adversarial, start=out["random"], state=state)
        null = null or self.null
        if null is not None:
            out["null"] = self.perturber.perturb(embedding, c_minus, null, state=state)
        return out

    def assess(self, embedding: torch.Tensor, c_minus: Concept, c_plus: Concept, traits: Sequence[str], *,
               batch_seed: int = 0, extra: Mapping[str, torch.Tensor] | None = None,
               null: Concept | None = None, state: torch.Tensor | None = None) -> list[dict]:
        """E (B, 1+N, d) → B records: each condition's norms/presences and every trait's scores.

        ``extra`` adds embeddings (B, 1+N, d) to be scored beside the perturbed ones (the toy world's
        re-rendered images, the ceiling a perfect perturbation could reach). ``state``: as in ``perturbations``.
        """
        perturbed = self.perturbations(embedding, c_minus, c_plus, batch_seed, null, state)
        embeddings = {"clean": embedding, **{k: p.embedding for k, p in perturbed.items()}, **(extra or {})}
        records = [{"perturbations": {k: p.image(i) for k, p in perturbed.items()}, "scores": {}}
                   for i in range(len(embedding))]
        with torch.no_grad():  # W once per embedding, whatever the number of traits
            tokens = {name: self.model.image_tokens(e) for name, e in embeddings.items()}
        for trait in traits:
            scores = {name: self.scorer.score(e, trait, tokens=tokens[name]) for name, e in embeddings.items()}
            for i, record in enumerate(records):
                record["scores"][trait] = {name: s.image(i) for name, s in scores.items()}
        return records
