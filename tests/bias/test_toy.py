"""Toy validation: the same scenes as the direct re-render measurement, and (slow) the issue's bars."""

import pytest

from owlens.bias.spec import PerturbationSpec
from owlens.evaluation.bias_validation import TOY_PERTURBATION, toy_concept, toy_scenes, validate_bias


@pytest.fixture(scope="module")
def result(tiny_model):
    return validate_bias(tiny_model, n_scenes=6, batch_size=4)


def test_scenes_are_red_single_objects_from_the_held_out_stream():
    scenes = toy_scenes(0, 5)
    assert all(len(s.objects) == 1 and s.objects[0].colour == "red" for s in scenes)
    assert [s.image.tobytes() for s in scenes] == [s.image.tobytes() for s in toy_scenes(0, 5)]
    assert scenes[0].image.tobytes() != toy_scenes(1, 1)[0].image.tobytes()


def test_ceiling_equals_the_toyworld_s_own_direct_measurement(tiny_model, result):
    from owlens.toyworld.evaluate import trait_delta_direct
    from owlens.toyworld.joint_eval import joint_callables

    next_token_logits, _ = joint_callables(tiny_model)
    for trait, figure in (("heavy", result.ceiling_biased), ("round", result.ceiling_control)):
        direct = trait_delta_direct(next_token_logits, trait, n_scenes=6, seed=0)
        assert figure["delta"] == pytest.approx(direct.delta, abs=1e-5)


def test_result_carries_the_issue_s_fields(result):
    payload = result.to_dict()
    assert payload["injected_delta"] == 4.0 and payload["settings"]["perturbation"] == TOY_PERTURBATION.to_dict()
    for name in ("biased", "control", "random_control", "identity_control"):
        assert payload[name]["n"] == 6 and payload[name]["ci"][0] <= payload[name]["delta"] <= payload[name]["ci"][1]
    assert payload["owl_swap_success"] == payload["summary"]["perturbations"]["adversarial"]["swap_rate"]
    # net of a control: the mean of the paired differences is the difference of the two figures
    for net, control in (("net_of_random", "random_control"), ("net_of_identity", "identity_control")):
        assert payload[net]["delta"] == pytest.approx(payload["biased"]["delta"] - payload[control]["delta"], abs=1e-9)
        assert payload[net]["n"] == 6


def test_shape_queries_and_bad_modes(tiny_model):
    assert toy_concept("red", "star").queries == ("a photo of a red star",)
    assert len(toy_concept("blue").queries) == 5
    shaped = validate_bias(tiny_model, n_scenes=3, queries="shape",
                          perturbation=PerturbationSpec("pgd", 0.5, steps=2), max_new_tokens=0)
    assert shaped.settings["queries"] == "shape" and shaped.biased["n"] == 3
    with pytest.raises(ValueError, match="query mode"):
        validate_bias(tiny_model, n_scenes=1, queries="size")


@pytest.fixture(scope="module")
def shipped():
    """The documented toy setting on the shipped weights (docs/benchmarks.md, "Bias assessment"), seed 0, 200 scenes:
    one run (several minutes on one thread: the orthogonal control's Jacobians) read by the tests below."""
    from owlens.models.joint import JointModel

    model = JointModel.from_pretrained(device="cpu", dtype="fp32")
    return validate_bias(model, seed=0, n_scenes=200, max_new_tokens=0)


@pytest.mark.toy_weights
def test_the_measure_recovers_the_injected_size_with_the_colour_blind_controls_on_zero(shipped):
    """What the upstream setting achieves on the shipped weights: the bias within 25% of +4 with its CI above 0,
    alone and net of the orthogonal control and of the null swap; the colour-blind question and the semantic null
    swap (red -> green, which "heavy" does not depend on) with their CIs on 0; OWL swapped on 90% of the scenes."""
    toy = shipped
    within = 0.25 * toy.injected_delta
    assert toy.biased["ci"][0] > 0 and abs(toy.biased["delta"] - toy.injected_delta) <= within
    for net in (toy.net_of_orthogonal, toy.net_of_null):  # net of the null: the control that moves E as the attack does
        assert net["ci"][0] > 0 and abs(net["delta"] - toy.injected_delta) <= within
    for control in (toy.control, toy.null_control):
        assert control["ci"][0] <= 0 <= control["ci"][1]
    assert toy.owl_swap_success >= 0.9


@pytest.mark.toy_weights
def test_the_orthogonal_control_holds_owl_s_reading_and_moves_the_answer_least(shipped):
    """The orthogonal control leaves OWL's red presence where it was (the shuffled control does not) and moves J's
    answer by less than a tenth of a point, less than the shuffled control of the same norms."""
    toy = shipped
    perturbations = toy.summary["perturbations"]
    orthogonal = perturbations["orthogonal"]
    before, after = orthogonal["presence_before_mean"], orthogonal["presence_after_mean"]
    assert abs(after[0] - before[0]) < 0.01 < abs(before[0] - perturbations["random"]["presence_after_mean"][0])
    assert abs(toy.orthogonal_control["delta"]) < min(0.1, abs(toy.random_control["delta"]))


@pytest.mark.toy_weights
def test_the_identity_swap_holds_owl_s_reading_and_moves_the_answer_less_than_the_shuffle_it_starts_from(shipped):
    """The identity control is the shuffled control's δ with OWL's concept logits put back: OWL's red presence
    where it was (the shuffle lowers it), and J's answer moved less than under the shuffle."""
    toy = shipped
    perturbations = toy.summary["perturbations"]
    before, after = perturbations["identity"]["presence_before_mean"], perturbations["identity"]["presence_after_mean"]
    assert abs(after[0] - before[0]) < 0.001 < 0.01 < abs(before[0] - perturbations["random"]["presence_after_mean"][0])
    assert perturbations["identity"]["l2_mean"] == pytest.approx(perturbations["random"]["l2_mean"], rel=0.05)
    assert abs(toy.identity_control["delta"]) < abs(toy.random_control["delta"])


@pytest.mark.toy_weights
@pytest.mark.xfail(strict=True, reason="with OWL's concepts held, the identity swap and the shuffled random control "
                   "still move 'heavy' by -0.10 and -0.13 on seed 0, CIs below 0 (docs/benchmarks.md, 'Bias "
                   "assessment'): a move of E of the attack's size costs this J a little of 'heavy' whichever way it "
                   "goes (1.2 points where the attack moves); strict: the day they read 0, this test says so")
def test_the_identity_and_shuffled_controls_read_zero(shipped):
    toy = shipped
    for control in (toy.identity_control, toy.random_control):
        assert control["ci"][0] <= 0 <= control["ci"][1]
