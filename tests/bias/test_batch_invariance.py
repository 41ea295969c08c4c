"""The measurement of one image does not depend on which images share its batch (shipped toy world, float32).

The identity control (C+ = C−) pushes each class logit toward the mean of the targets −T and +T, i.e. toward 0.
Written as two squared errors against ±1e6, its gradient is the difference of two numbers near 2e6 and kept
only float32's ~0.1 of resolution, so once the logits came near 0 every L2-normalised PGD step followed
rounding noise, and which noise depended on the batch's size. These tests pin the fix down on the weights
where it showed.
"""

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


def _identity_scores(toy, pixels, batch_size, setting):
    from owlens.bias.perturbation import encode_for
    from owlens.bias.scoring import TraitScorer
    from owlens.evaluation.bias_validation import TOY_PROMPT, toy_concept

    perturber = setting.build(toy)
    scorer = TraitScorer(toy, TOY_PROMPT, max_new_tokens=0)
    red = toy_concept("red")
    scores = []
    for start in range(0, len(pixels), batch_size):
        embedding, state = encode_for(toy, pixels[start:start + batch_size], setting.layer)
        scores.append(scorer.score(perturber.perturb(embedding, red, red, state=state).embedding, "heavy").expected)
    return torch.cat(scores)


@pytest.mark.parametrize("setting", ["TOY_PERTURBATION", "E_PERTURBATION"])
def test_identity_scores_do_not_depend_on_the_batch_size(toy, pixels, setting):
    from owlens.evaluation import bias_validation

    by_size = {size: _identity_scores(toy, pixels, size, getattr(bias_validation, setting)) for size in (1, 7, 50)}
    for size in (7, 50):
        difference = (by_size[size] - by_size[1]).abs().max().item()
        assert difference <= 1e-4, f"batch size {size} vs 1: identity scores differ by up to {difference:.2e}"


def test_the_identity_step_follows_the_exact_gradient_of_the_squared_logits(toy, scenes_embedding):
    # C+ = C−: the loss is Σ l² + const, so one FGSM step is −ε·sign(∇ Σ l²), here taken in float64 as truth.
    import copy

    from owlens.bias.fgsm import FGSM
    from owlens.evaluation.bias_validation import toy_concept

    red = toy_concept("red")
    embedding = scenes_embedding[:10]
    step = FGSM(toy, 1.0).perturb(embedding, red, red).embedding - embedding
    exact = copy.deepcopy(toy).double()
    x = embedding.double().requires_grad_(True)
    logits = exact.detect(x, list(red.queries)).logits  # (B, N, Q)
    truth = -torch.autograd.grad((logits ** 2).sum(), x)[0].sign()
    agreement = (step.sign() == truth.float()).float().mean().item()
    assert agreement > 0.999, f"the identity step agrees with the exact gradient's sign on {agreement:.4f} of E"


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
