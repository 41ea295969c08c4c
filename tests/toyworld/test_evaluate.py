"""The toy-world metrics on hand-built callables whose answers are known, and on the shipped LLaVA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from owlens.models.loading import TOY_WEIGHTS
from owlens.toyworld import defects, evaluate, world
from owlens.toyworld.text import CAPTION_QUESTION, caption
from owlens.toyworld.tokenizer import vocabulary

VOCAB = vocabulary()
V = len(VOCAB)
SHIPPED = TOY_WEIGHTS / "llava"


def _one_hot(words: list[str]) -> torch.Tensor:
    out = torch.full((len(words), V), -20.0)
    out[torch.arange(len(words)), [VOCAB[w] for w in words]] = 20.0
    return out  # (B, V)


def always_yes(images, prompts):
    return _one_hot(["yes"] * len(prompts))


class Oracle:
    """Answers from the true scene behind each image: every scene evaluation draws is recorded."""

    def __init__(self, monkeypatch):
        self.scenes: dict[bytes, world.Scene] = {}
        sample, recolour = world.sample_scene, world.recolour

        def record(scene):
            self.scenes[scene.image.tobytes()] = scene
            return scene

        # patched where the metrics look them up (evaluate imports them by name)
        monkeypatch.setattr(evaluate, "sample_scene", lambda *a, **k: record(sample(*a, **k)))
        monkeypatch.setattr(evaluate, "recolour", lambda *a, **k: record(recolour(*a, **k)))

    def answer(self, scene: world.Scene, question: str) -> str:
        words = question.split()
        if words[:3] == ["from", "one", "to"]:
            return str(defects.trait_score(scene.objects[0], words[6]))
        colour, shape = (None, words[3]) if words[4] == "?" else (words[3], words[4])
        hit = any(o.shape == shape and colour in (None, o.colour) for o in scene.objects)
        return "yes" if hit else "no"

    def next_token_logits(self, images, prompts):
        questions = [p.split("\n")[1].split(" ASSISTANT:")[0] for p in prompts]
        return _one_hot([self.answer(self.scenes[im.tobytes()], q) for im, q in zip(images, questions, strict=True)])

    def generate(self, images, prompts, max_new_tokens):
        assert all(CAPTION_QUESTION in p for p in prompts)
        return [caption(self.scenes[im.tobytes()]) for im in images]


def test_always_yes():
    presence = evaluate.presence_accuracy(always_yes, n_questions=200)
    assert presence.accuracy == 0.5 and presence.yes_ratio == 1.0
    assert presence.hard_negative == 0.0 and presence.colour_shape_positive == 1.0
    adversarial = evaluate.adversarial_yes_rate_absent(always_yes, n_scenes=50)
    assert adversarial.yes_rate == 1.0 and adversarial.control_yes_rate == 1.0


def test_oracle_scores_perfectly_and_recovers_the_design_delta(monkeypatch):
    oracle = Oracle(monkeypatch)
    presence = evaluate.presence_accuracy(oracle.next_token_logits, n_questions=300)
    assert presence.accuracy == 1.0 and presence.hard_negative == 1.0 and presence.n_hard_negative > 30
    assert evaluate.caption_f1(oracle.generate, n_scenes=50).f1 == 1.0
    assert evaluate.adversarial_yes_rate_absent(oracle.next_token_logits, n_scenes=50).yes_rate == 0.0
    bias = evaluate.trait_delta_direct(oracle.next_token_logits, defects.BIAS_TRAIT, n_scenes=50)
    assert bias.delta == pytest.approx(defects.BIAS_DELTA, abs=1e-4)
    assert bias.ci95[0] <= bias.delta <= bias.ci95[1]
    control = evaluate.trait_delta_direct(oracle.next_token_logits, defects.CONTROL_TRAIT, n_scenes=50)
    assert control.delta == pytest.approx(0.0, abs=1e-4)


def test_presence_split_is_balanced_and_seeded():
    seen = []

    def record(images, prompts):
        seen.append(list(prompts))
        return always_yes(images, prompts)

    evaluate.presence_accuracy(record, n_questions=40, seed=3, batch_size=7)
    first = sum(seen, [])
    seen.clear()
    evaluate.presence_accuracy(record, n_questions=40, seed=3, batch_size=40)
    assert sum(seen, []) == first and len(first) == 40


def test_expected_trait_score_of_uniform_logits_is_the_midpoint():
    images = np.zeros((4, 64, 64, 3), np.uint8)
    score = evaluate.expected_trait_score(lambda im, p: torch.zeros(len(p), V), images, defects.BIAS_TRAIT)
    np.testing.assert_allclose(score, 5.5, atol=1e-6)


def test_caption_f1_counts_pairs(monkeypatch):
    oracle = Oracle(monkeypatch)

    def half_right(images, prompts, max_new_tokens):
        return [caption(oracle.scenes[im.tobytes()]).replace("circle", "square") for im in images]

    result = evaluate.caption_f1(half_right, n_scenes=40)
    assert 0.0 < result.f1 < 1.0 and result.precision <= 1.0


@pytest.mark.toy_weights
def test_shipped_llava_answers_presence_questions():
    from transformers import LlavaForConditionalGeneration

    from owlens.toyworld.tokenizer import build_tokenizer

    model = LlavaForConditionalGeneration.from_pretrained(SHIPPED).eval()
    next_token_logits, _ = evaluate.llava_callables(model, build_tokenizer())
    assert evaluate.presence_accuracy(next_token_logits, n_questions=200, seed=1).accuracy >= 0.95


@pytest.mark.toy_weights
@pytest.mark.parametrize("prior, bar", [(defects.CROSS_STAR, 0.2), (defects.SQUARE_TRIANGLE, 0.3)],
                         ids=lambda v: getattr(v, "name", v))
def test_shipped_models_carry_both_injected_hallucinations(prior, bar):
    # The toy world's bars for the adversarial split: the LLaVA and J both answer "yes" about the absent partner
    # on at least `bar` of the partner-less cue scenes (seed 3: not a seed the docs report).
    from owlens.models.joint import JointModel
    from owlens.toyworld.joint_eval import joint_callables

    model = JointModel.from_pretrained()
    for name, (logits_fn, _) in {"llava": evaluate.llava_callables(model.llava, model.processor.mllm_tokenizer),
                                 "joint": joint_callables(model)}.items():
        result = evaluate.adversarial_yes_rate_absent(logits_fn, n_scenes=200, seed=3, prior=prior)
        assert result.yes_rate >= bar, (name, result)
