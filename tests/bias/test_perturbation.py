"""FGSM/PGD on E follow the paper's swap loss; the random control matches their norms; state is returned."""

import math

import pytest
import torch

from owlens.bias import FGSM, PGD, Concept, RandomPerturbation
from owlens.bias.perturbation import PAPER_TARGET


def _swap_loss(model, embedding, minus, plus):
    """Reference: MSE of the class logits for [C-, C+] against -1e6 / +1e6, written out by hand."""
    logits = model.detect(embedding, [*minus, *plus]).logits  # (B, N, Q)
    targets = torch.tensor([-PAPER_TARGET] * len(minus) + [PAPER_TARGET] * len(plus), dtype=logits.dtype)
    return ((logits - targets) ** 2).mean()


def _reference_gradient(model, embedding, minus, plus):
    x = embedding.clone().requires_grad_(True)
    return torch.autograd.grad(_swap_loss(model, x, minus, plus), x)[0]


def test_fgsm_is_one_signed_step_down_the_swap_loss(tiny_model, embedding):
    result = FGSM(tiny_model, epsilon=0.25).perturb(embedding, "man", "woman")
    gradient = _reference_gradient(tiny_model, embedding, ["a photo of a man"], ["a photo of a woman"])
    torch.testing.assert_close(result.embedding, embedding - 0.25 * gradient.sign())
    assert torch.allclose(result.linf, torch.full((3,), 0.25, dtype=torch.float32))
    assert torch.allclose(result.l2, torch.full((3,), 0.25 * math.sqrt(17 * 32), dtype=torch.float32))
    assert result.c_minus == "man" and result.c_plus == "woman" and result.method == "fgsm"
    assert result.settings == {"epsilon": 0.25, "norm": "linf", "steps": 1, "target": PAPER_TARGET, "region": None,
                               "layer": None}
    assert result.tokens_moved.tolist() == [17, 17, 17]  # the paper's attack moves all of E, CLS included


def test_fgsm_default_is_the_paper_setting(tiny_model, embedding):
    result = FGSM(tiny_model).perturb(embedding, "man", "woman")
    assert result.settings["epsilon"] == 1.0 and torch.allclose(result.linf, torch.ones(3))


def test_a_small_step_lowers_the_loss_and_raises_c_plus_over_c_minus(tiny_model, embedding):
    minus, plus = ["a photo of a red circle"], ["a photo of a blue circle"]
    result = FGSM(tiny_model, epsilon=1e-3).perturb(embedding, Concept("red", tuple(minus)),
                                                    Concept("blue", tuple(plus)))
    with torch.no_grad():
        assert _swap_loss(tiny_model, result.embedding, minus, plus) < _swap_loss(tiny_model, embedding, minus, plus)
    margin_before = result.presence_before[:, 1] - result.presence_before[:, 0]
    margin_after = result.presence_after[:, 1] - result.presence_after[:, 0]
    assert bool((margin_after > margin_before).all())


def test_presence_is_owls_max_over_boxes_and_queries(tiny_model, embedding):
    concept = Concept("red", ("a photo of a red circle", "a photo of a red star"))
    result = FGSM(tiny_model, epsilon=0.1).perturb(embedding, concept, "blue circle")
    with torch.no_grad():
        presence = tiny_model.detect(embedding, [*concept.queries, "a photo of a blue circle"]).presence()
    torch.testing.assert_close(result.presence_before[:, 0], presence[:, :2].amax(1).float())
    torch.testing.assert_close(result.presence_before[:, 1], presence[:, 2].float())


def test_batch_is_perturbed_image_by_image(tiny_model, embedding):
    for perturber in (FGSM(tiny_model, 0.3), PGD(tiny_model, 0.3, 3, norm="l2")):
        whole = perturber.perturb(embedding, "man", "woman").embedding
        alone = torch.cat([perturber.perturb(embedding[i:i + 1], "man", "woman").embedding for i in range(3)])
        torch.testing.assert_close(whole, alone)


def test_pgd_with_one_full_step_is_fgsm(tiny_model, embedding):
    fgsm = FGSM(tiny_model, 0.2).perturb(embedding, "man", "woman")
    pgd = PGD(tiny_model, 0.2, steps=1, step_size=0.2).perturb(embedding, "man", "woman")
    torch.testing.assert_close(pgd.embedding, fgsm.embedding)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_stays_in_its_budget_and_beats_fgsm_of_the_same_budget(tiny_model, embedding, norm):
    epsilon = 0.05 if norm == "linf" else 1.0
    result = PGD(tiny_model, epsilon, steps=5, norm=norm).perturb(embedding, "man", "woman")
    norms = result.linf if norm == "linf" else result.l2
    assert bool((norms <= epsilon * (1 + 1e-5)).all())
    minus, plus = ["a photo of a man"], ["a photo of a woman"]
    with torch.no_grad():
        assert _swap_loss(tiny_model, result.embedding, minus, plus) < _swap_loss(tiny_model, embedding, minus, plus)


def test_random_control_has_the_same_norms_and_another_direction(tiny_model, embedding):
    adversarial = PGD(tiny_model, 0.3, steps=3).perturb(embedding, "man", "woman")
    control = RandomPerturbation(tiny_model, seed=1).perturb(embedding, "man", "woman", like=adversarial)
    torch.testing.assert_close(control.linf, adversarial.linf)
    torch.testing.assert_close(control.l2, adversarial.l2)
    delta_a, delta_r = (adversarial.embedding - embedding).flatten(1), (control.embedding - embedding).flatten(1)
    assert bool((torch.nn.functional.cosine_similarity(delta_a, delta_r).abs() < 0.2).all())
    again = RandomPerturbation(tiny_model, seed=1).perturb(embedding, "man", "woman", like=adversarial)
    other = RandomPerturbation(tiny_model, seed=2).perturb(embedding, "man", "woman", like=adversarial)
    assert torch.equal(again.embedding, control.embedding) and not torch.equal(other.embedding, control.embedding)
    with pytest.raises(ValueError, match="shape"):
        RandomPerturbation(tiny_model).perturb(embedding[:2], "man", "woman", like=adversarial)


def test_a_swap_of_a_concept_with_itself_holds_it_where_the_paper_s_loss_pulls_it_to_zero(tiny_model, embedding):
    # The paper's loss with C+ = C- is (l + T)^2 + (l - T)^2 = 2 l^2 + const: its gradient is not zero at E
    assert _reference_gradient(tiny_model, embedding, ["a photo of a man"], ["a photo of a man"]).abs().max() > 0
    # ... while the cancelled pushes are held at the clean logits: the loss is at its minimum, nothing moves
    for attack in (FGSM(tiny_model, 0.1), PGD(tiny_model, 3.0, 3, norm="l2", region=0.5)):
        result = attack.perturb(embedding, "man", "man")
        assert torch.equal(result.embedding, embedding)
        torch.testing.assert_close(result.presence_after[:, 0], result.presence_after[:, 1])
        assert not bool(result.swapped.any()) and result.l2.max() == 0
    # a text in one concept only keeps the paper's constant push: the attack still moves E
    assert FGSM(tiny_model, 0.1).perturb(embedding, "man", "woman").l2.min() > 0


def test_result_is_detached_json_ready_and_keeps_dtype(tiny_model, embedding):
    result = FGSM(tiny_model, 0.1).perturb(embedding, "man", "woman")
    assert not result.embedding.requires_grad and result.embedding.dtype == embedding.dtype
    payload = result.to_dict()
    assert len(payload["images"]) == 3 and 0.0 <= payload["swap_rate"] <= 1.0
    assert set(payload["images"][0]) == {"linf", "l2", "tokens_moved", "presence_before", "presence_after",
                                         "swapped"}


def test_borrowed_state_is_returned_even_after_an_exception(tiny_model, embedding, monkeypatch):
    parameters = list(tiny_model.parameters())
    parameters[0].requires_grad_(False)
    tiny_model.train()
    flags = [p.requires_grad for p in parameters]
    perturber = FGSM(tiny_model, 0.1)
    real_detect = tiny_model.detect

    def failing(x, queries):
        if x.requires_grad:
            assert not any(p.requires_grad for p in parameters) and not tiny_model.training
            raise RuntimeError("boom")
        return real_detect(x, queries)

    monkeypatch.setattr(tiny_model, "detect", failing)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            perturber.perturb(embedding, "man", "woman")
        assert [p.requires_grad for p in parameters] == flags and tiny_model.training
    finally:
        parameters[0].requires_grad_(True)
        tiny_model.eval()


def test_works_under_no_grad(tiny_model, embedding):
    with torch.no_grad():
        result = FGSM(tiny_model, 0.1).perturb(embedding, "man", "woman")
    assert torch.allclose(result.linf, torch.full((3,), 0.1))


@pytest.mark.parametrize("make, match", [
    (lambda m: FGSM(m, 0.0), "epsilon"),
    (lambda m: FGSM(m, -1.0), "epsilon"),
    (lambda m: FGSM(m, 1.0, target=0), "target"),
    (lambda m: PGD(m, 1.0, steps=0), "steps"),
    (lambda m: PGD(m, 1.0, norm="l3"), "norm"),
    (lambda m: PGD(m, 1.0, step_size=-0.1), "step_size"),
    (lambda m: FGSM(m, 1.0, region=0.0), "region"),
    (lambda m: PGD(m, 1.0, region=1.5), "region"),
])
def test_bad_settings_say_what_was_expected(tiny_model, make, match):
    with pytest.raises(ValueError, match=match):
        make(tiny_model)


@pytest.mark.parametrize("value", ["", "  ", None, 3])
def test_bad_concepts_are_refused(value):
    with pytest.raises(ValueError, match="concept"):
        Concept.of(value)


def test_concept_from_a_name_uses_owls_template():
    assert Concept.of("man").queries == ("a photo of a man",)
    assert Concept.of("man", "an image of {}").queries == ("an image of man",)
    with pytest.raises(ValueError, match="queries"):
        Concept("red", ())


def test_region_moves_only_the_patches_where_owl_sees_c_minus(tiny_model, embedding):
    from owlens.bias.region import owl_region

    queries = tiny_model.query_embeds(["a photo of a man", "a photo of a woman"])
    region = owl_region(tiny_model, embedding, queries, 1, 0.99)  # (3, 16)
    with torch.no_grad():
        best = tiny_model.detect(embedding, ["a photo of a man"]).logits[..., 0].argmax(1)  # (3,)
    assert bool(region[torch.arange(3), best].all()) and int(region.sum()) < 3 * 16
    for perturber in (FGSM(tiny_model, 0.2, region=0.99), PGD(tiny_model, 2.0, 3, norm="l2", region=0.99)):
        result = perturber.perturb(embedding, "man", "woman")
        moved = (result.embedding - embedding).abs().amax(-1) > 0  # (3, 17)
        assert not bool(moved[:, 0].any()) and torch.equal(moved[:, 1:], region)
        assert result.tokens_moved.tolist() == region.sum(1).tolist() and result.settings["region"] == 0.99
        control = RandomPerturbation(tiny_model).perturb(embedding, "man", "woman", like=result)
        assert torch.equal((control.embedding - embedding).abs().amax(-1) > 0, moved)
        torch.testing.assert_close(control.l2, result.l2)


def test_region_of_one_is_the_best_box_and_the_loss_covers_it_only(tiny_model, embedding):
    from owlens.bias.region import owl_region

    queries = tiny_model.query_embeds(["a photo of a man", "a photo of a woman"])
    region = owl_region(tiny_model, embedding, queries, 1, 1.0)
    assert region.sum(1).tolist() == [1, 1, 1]
    result = FGSM(tiny_model, 0.1, region=1.0).perturb(embedding, "man", "woman")
    x = embedding.clone().requires_grad_(True)
    logits = tiny_model.detect(x, ["a photo of a man", "a photo of a woman"]).logits  # (3, 16, 2)
    targets = torch.tensor([-PAPER_TARGET, PAPER_TARGET], dtype=logits.dtype)
    loss = (((logits - targets) ** 2).mean(-1) * region).sum()
    gradient = torch.autograd.grad(loss, x)[0][:, 1:] * region[..., None]
    torch.testing.assert_close(result.embedding[:, 1:], embedding[:, 1:] - 0.1 * gradient.sign())


def test_orthogonal_control_matches_tokens_and_l2_and_leaves_the_concepts_logits_put(tiny_model, embedding):
    from owlens.bias.random_control import OrthogonalRandomPerturbation

    minus, plus = Concept("man", ("a photo of a man",)), Concept("woman", ("a photo of a woman", "a photo of a girl"))
    like = PGD(tiny_model, 3.0, 3, norm="l2", region=0.5).perturb(embedding, minus, plus)
    control = OrthogonalRandomPerturbation(tiny_model, seed=3).perturb(embedding, minus, plus, like=like)
    shuffled = RandomPerturbation(tiny_model, seed=3).perturb(embedding, minus, plus, like=like)
    delta, reference = control.embedding - embedding, like.embedding - embedding
    assert torch.equal(delta.abs().amax(-1) > 0, reference.abs().amax(-1) > 0)  # the same tokens
    torch.testing.assert_close(control.l2, like.l2, rtol=0.1, atol=0)  # about the same L2
    queries = ["a photo of a man", "a photo of a woman", "a photo of a girl"]
    moved = reference.abs().amax(-1)[:, 1:] > 0  # (B, N) the boxes the swap loss reads
    with torch.no_grad():
        clean = tiny_model.detect(embedding, queries).logits[moved]
        after = tiny_model.detect(control.embedding, queries).logits[moved]
        shuffled_after = tiny_model.detect(shuffled.embedding, queries).logits[moved]
    assert (after - clean).abs().max() < 1e-3 * max(1.0, float(clean.abs().max()))
    assert (shuffled_after - clean).abs().max() > 100 * (after - clean).abs().max()  # the shuffle does move them
    again = OrthogonalRandomPerturbation(tiny_model, seed=3).perturb(embedding, minus, plus, like=like)
    assert torch.equal(again.embedding, control.embedding)
    with pytest.raises(ValueError, match="steps >= 1"):
        OrthogonalRandomPerturbation(tiny_model, steps=0)


def test_identity_control_starts_from_the_shuffled_control_and_puts_the_concepts_logits_back(tiny_model, embedding):
    from owlens.bias.random_control import IdentityPerturbation

    minus, plus = Concept("man", ("a photo of a man",)), Concept("woman", ("a photo of a woman", "a photo of a girl"))
    like = PGD(tiny_model, 3.0, 3, norm="l2", region=0.5).perturb(embedding, minus, plus)
    shuffled = RandomPerturbation(tiny_model, seed=3).perturb(embedding, minus, plus, like=like)
    identity = IdentityPerturbation(tiny_model).perturb(embedding, minus, plus, like=like, start=shuffled)
    delta, start = identity.embedding - embedding, shuffled.embedding - embedding
    assert identity.method == "identity" and identity.settings["corrections"] == 6
    assert torch.equal(delta.abs().amax(-1) > 0, start.abs().amax(-1) > 0)  # the start's tokens, no others
    torch.testing.assert_close(identity.l2, shuffled.l2, rtol=0.1, atol=0)  # the corrections are small beside δ
    queries = ["a photo of a man", "a photo of a woman", "a photo of a girl"]
    moved = start.abs().amax(-1)[:, 1:] > 0
    with torch.no_grad():
        clean = tiny_model.detect(embedding, queries).logits[moved]
        after = tiny_model.detect(identity.embedding, queries).logits[moved]
        before = tiny_model.detect(shuffled.embedding, queries).logits[moved]
    assert (after - clean).abs().max() < 1e-3 * max(1.0, float(clean.abs().max()))
    assert (before - clean).abs().max() > 100 * (after - clean).abs().max()
    with pytest.raises(ValueError, match="corrections >= 1"):
        IdentityPerturbation(tiny_model, corrections=0)
    with pytest.raises(ValueError, match="starts from the random control"):
        IdentityPerturbation(tiny_model).perturb(embedding[:2], minus, plus, like=PGD(tiny_model, 3.0, 1).perturb(
            embedding[:2], minus, plus), start=shuffled)
