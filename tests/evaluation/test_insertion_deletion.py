"""Deletion/insertion AUC on the tiny J against a literal loop: one E per step, one forward each."""

import numpy as np
import pytest
import torch

from owlens.evaluation import DeletionInsertion
from owlens.evaluation.insertion_deletion import token_order
from owlens.toyworld.tiny import tiny_joint, tiny_processor

PROMPT = "<s> USER: <image>\nis there a star ? ASSISTANT:"


@pytest.fixture(scope="module")
def model():
    return tiny_joint(0, dtype=torch.float64, processor=tiny_processor())


def _case(model, seed=0):
    with torch.no_grad():
        embedding = model.encode(torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(seed),
                                             dtype=torch.float64))[0]
    ids = model.processor.prompts([PROMPT])["input_ids"][0]
    return embedding, ids, model.processor.mllm_tokenizer.convert_tokens_to_ids("yes")


def _literal(model, embedding, token_id, order, counts, replacement, score):
    deletion, insertion = [], []
    for count in counts:
        for curve, replaced in ((deletion, order[:count]), (insertion, order[count:])):
            changed = embedding.clone()
            changed[1 + torch.as_tensor(replaced, dtype=torch.long)] = replacement
            with torch.no_grad():
                logits = model.logits(changed[None], [PROMPT])[0, -1]
            curve.append(float(logits.softmax(-1)[token_id] if score == "probability" else logits[token_id]))
    return np.array(deletion), np.array(insertion)


@pytest.mark.parametrize("steps, score, reference", [(None, "logit", False), (5, "probability", True)])
def test_curves_equal_the_literal_loop(model, steps, score, reference):
    embedding, ids, token_id = _case(model)
    saliency_map = np.random.default_rng(1).random((48, 64))
    replacement = torch.randn(embedding.shape[-1], dtype=torch.float64) if reference else embedding[1:].mean(0)
    metric = DeletionInsertion(model, steps=steps, score=score, replacement=replacement if reference else None,
                               batch_size=7)
    result = metric(embedding, ids, token_id, saliency_map)
    order = token_order(saliency_map, model.grid)
    deletion, insertion = _literal(model, embedding, token_id, order, metric.counts, replacement, score)
    # Llama's RMSNorm runs in float32 even in a float64 model: ~1e-7 relative noise between batch shapes.
    np.testing.assert_allclose(result.deletion, deletion, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(result.insertion, insertion, rtol=1e-5, atol=1e-9)
    fractions = metric.counts / 16
    def area(y):
        return float(sum((y[i] + y[i + 1]) / 2 * (fractions[i + 1] - fractions[i]) for i in range(len(y) - 1)))

    assert result.deletion_auc == pytest.approx(area(deletion), rel=1e-5)
    assert result.insertion_auc == pytest.approx(area(insertion), rel=1e-5)
    assert result.deletion[0] == pytest.approx(result.insertion[-1], rel=1e-5)  # the games share their end points
    assert result.deletion[-1] == pytest.approx(result.insertion[0], rel=1e-5)
    assert len(result.fractions) == (steps or 16) + 1 and result.fractions[0] == 0 and result.fractions[-1] == 1


def test_token_order_averages_the_map_per_patch_and_breaks_ties_by_a_fixed_permutation():
    values = np.zeros((8, 8))  # a 4x4 grid of 2x2 patches
    values[0:2, 2:4] = 1.0  # patch 1
    values[4, 4] = 3.0  # a quarter of patch 10 at 3: patch mean 0.75
    order = token_order(values, (4, 4), seed=0)
    assert order[:2].tolist() == [1, 10]
    rest = order[2:].tolist()
    permutation = np.random.default_rng(0).permutation(16).tolist()
    assert rest == [i for i in permutation if i not in (1, 10)]  # all tied at 0: the seeded permutation's order
    assert token_order(values, (4, 4), seed=0).tolist() == order.tolist()


def test_a_map_on_the_tokens_that_matter_wins_both_games(model):
    embedding, ids, token_id = _case(model, 3)
    metric = DeletionInsertion(model)
    # The tokens whose removal alone changes the logit most, ranked first: the best map there is, near enough.
    single = [metric(embedding, ids, token_id, _one_hot(model, i)).deletion[1] for i in range(16)]
    best = np.argsort(single)  # largest drop first
    good = _grid_map(np.argsort(best)[::-1].astype(float))
    bad = _grid_map(np.argsort(best).astype(float))
    good_game, bad_game = metric(embedding, ids, token_id, good), metric(embedding, ids, token_id, bad)
    assert good_game.deletion_auc < bad_game.deletion_auc  # deletion: lower is better
    assert metric.higher_is_better == {"deletion_auc": False, "insertion_auc": True}


def _grid_map(per_token):
    return np.kron(np.asarray(per_token).reshape(4, 4), np.ones((16, 16)))


def _one_hot(model, index):
    values = np.zeros(16)
    values[index] = 1.0
    return _grid_map(values)


def test_bad_inputs(model):
    embedding, ids, token_id = _case(model)
    with pytest.raises(ValueError, match="steps must lie in 1..16"):
        DeletionInsertion(model, steps=17)
    with pytest.raises(ValueError, match="score must be 'logit' or 'probability'"):
        DeletionInsertion(model, score="loss")
    with pytest.raises(ValueError, match=r"shaped \(1\+16, d\); received \(10, 32\)"):
        DeletionInsertion(model)(embedding[:10], ids, token_id, np.zeros((64, 64)))
