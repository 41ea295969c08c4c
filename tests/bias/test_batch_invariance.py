"""The measurement of one image does not depend on which images share its batch (shipped toy world, float32).

A swap of a concept with itself once pushed each class logit toward the mean of the targets −T and +T, i.e.
toward 0, written as two squared errors against ±1e6 whose difference kept only float32's ~0.1 of resolution:
PGD then followed rounding noise, and which noise depended on the batch's size. That loss now holds the
cancelled pushes at the clean logits, and the identity control is the shuffled control's δ corrected by
Gauss-Newton steps; these tests pin both down on the weights where the problem showed.
"""

import dataclasses

import numpy as np
import pytest
import torch

from owlens.bias.perturbation import Concept

pytestmark = pytest.mark.toy_weights  # every test here runs on the shipped toy world


@pytest.fixture(scope="module")
def toy():
    from owlens.models.joint import JointModel

    return JointModel.from_pretrained(device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def pixels():
    from owlens.evaluation.bias_validation import toy_scenes
    from owlens.toyworld.world import to_pixel_values

    return to_pixel_values(np.stack([s.image for s in toy_scenes(0, 50)]))  # (50, 3, 64, 64)


@pytest.fixture(scope="module")
def scenes_embedding(toy, pixels):
    with torch.no_grad():
        return toy.encode(pixels)  # (50, 1+N, d)


def _rows(perturbation, rows: slice):
    """The images ``rows`` of a ``Perturbation``: every batch-first tensor sliced."""
    return dataclasses.replace(perturbation, **{f.name: getattr(perturbation, f.name)[rows]
                                                for f in dataclasses.fields(perturbation)
                                                if isinstance(getattr(perturbation, f.name), torch.Tensor)})


def _identity_scores(toy, pixels, batch_size, setting):
    # The shuffled control's draw depends on the images beside it (one generator per batch), so the start is
    # drawn once for all 50 images and each batch gets its own rows of it: what is compared is the correction.
    from owlens.bias.perturbation import encode_for
    from owlens.bias.random_control import IdentityPerturbation, RandomPerturbation
    from owlens.bias.scoring import TraitScorer
    from owlens.evaluation.bias_validation import BIAS_C_PLUS, TOY_PROMPT, toy_concept

    perturber = setting.build(toy)
    red, blue = toy_concept("red"), toy_concept(BIAS_C_PLUS)
    embedding, state = encode_for(toy, pixels, setting.layer)
    adversarial = perturber.perturb(embedding, red, blue, state=state)
    start = RandomPerturbation(toy, seed=0).perturb(embedding, red, blue, like=adversarial, state=state)
    scorer = TraitScorer(toy, TOY_PROMPT, max_new_tokens=0)
    scores = []
    for first in range(0, len(pixels), batch_size):
        rows = slice(first, first + batch_size)
        identity = IdentityPerturbation(toy).perturb(embedding[rows], red, blue, like=_rows(adversarial, rows),
                                                     start=_rows(start, rows),
                                                     state=None if state is None else state[rows])
        scores.append(scorer.score(identity.embedding, "heavy").expected)
    return torch.cat(scores)


@pytest.mark.parametrize("setting", ["TOY_PERTURBATION", "E_PERTURBATION"])
def test_identity_scores_do_not_depend_on_the_batch_size(toy, pixels, setting):
    from owlens.evaluation import bias_validation

    by_size = {size: _identity_scores(toy, pixels, size, getattr(bias_validation, setting)) for size in (1, 7, 50)}
    for size in (7, 50):
        difference = (by_size[size] - by_size[1]).abs().max().item()
        assert difference <= 1e-4, f"batch size {size} vs 1: identity scores differ by up to {difference:.2e}"


@pytest.mark.parametrize("setting", ["TOY_PERTURBATION", "E_PERTURBATION"])
def test_the_attack_swapping_red_for_red_leaves_every_image_as_it_was(toy, pixels, setting):
    # Before, this attack followed Σ l² and moved E by the whole budget (rounding noise, batch by batch).
    from owlens.bias.perturbation import encode_for
    from owlens.evaluation import bias_validation
    from owlens.evaluation.bias_validation import toy_concept

    spec = getattr(bias_validation, setting)
    red = toy_concept("red")
    for size in (1, 7, 50):
        embedding, state = encode_for(toy, pixels[:size], spec.layer)
        result = spec.build(toy).perturb(embedding, red, red, state=state)
        assert result.l2.max().item() == 0 and torch.equal(result.embedding, embedding)


def test_a_concept_named_twice_is_the_same_attack_as_once(toy, scenes_embedding):
    # Duplicate queries are one query with summed weight: the grouped loss has the same gradient.
    from owlens.bias.pgd import PGD

    embedding = scenes_embedding[:4]
    once = Concept("red", ("a photo of a red circle",))
    twice = Concept("red", ("a photo of a red circle", "a photo of a red circle"))
    blue = Concept("blue", ("a photo of a blue circle",))
    pgd = PGD(toy, 5.0, 3, norm="l2")
    a, b = pgd.perturb(embedding, once, blue).embedding, pgd.perturb(embedding, twice, blue).embedding
    assert not torch.equal(a, embedding)
    assert (pgd.perturb(embedding, twice, blue).embedding - embedding).norm() > 0
    # two C- queries against one C+ weigh C- twice: not the same attack as once (the test can tell them apart)
    assert (a - b).abs().max() > 1e-3
