"""Perturbations applied upstream of E: δ on the state entering an earlier OWL encoder layer, E' from OWL's layers."""

import pytest
import torch

from owlens.bias import PGD, Concept, RandomPerturbation
from owlens.bias.perturbation import encode_for
from owlens.bias.random_control import IdentityPerturbation, OrthogonalRandomPerturbation
from owlens.bias.spec import PerturbationSpec, SpecError

# words the tiny model's toy tokenizer knows, so that the three queries differ
MINUS = Concept("red", ("a photo of a red circle",))
PLUS = Concept("blue", ("a photo of a blue circle", "a photo of a blue star"))
QUERIES = [*MINUS.queries, *PLUS.queries]


@pytest.fixture(scope="module")
def pixels():
    return torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_the_state_of_any_layer_leads_on_to_the_same_E(tiny_model, pixels, layer):
    with torch.no_grad():
        state = tiny_model.encoder_state(pixels, layer)
        torch.testing.assert_close(tiny_model.encode_from(state, layer), tiny_model.encode(pixels), rtol=0, atol=0)
    embedding, returned = encode_for(tiny_model, pixels, layer)
    assert torch.equal(returned, state) and torch.equal(embedding, tiny_model.encode(pixels))
    assert encode_for(tiny_model, pixels, None)[1] is None


@pytest.mark.parametrize("layer", [-1, 3, 1.0])
def test_a_layer_outside_the_encoder_is_refused(tiny_model, pixels, layer):
    with pytest.raises(ValueError, match=r"encoder layer in 0\.\.2"):
        tiny_model.encoder_state(pixels, layer)


def test_pgd_upstream_moves_the_state_and_E_follows_through_owl(tiny_model, pixels):
    embedding, state = encode_for(tiny_model, pixels, 1)
    attack = PGD(tiny_model, 2.0, 3, norm="l2", region=0.5, layer=1)
    result = attack.perturb(embedding, MINUS, PLUS, state=state)
    assert result.layer == 1 and result.settings["layer"] == 1
    with torch.no_grad():
        torch.testing.assert_close(result.embedding, tiny_model.encode_from(state + result.delta.to(state), 1))
    torch.testing.assert_close(result.l2, result.delta.flatten(1).norm(dim=1).float())  # δ's norms, in its space
    assert (result.l2 <= 2.0 + 1e-5).all() and (result.tokens_moved == embedding.shape[1]).all()  # every token
    # the swap went the right way: summed over the boxes, OWL's C+ logits rose against its C- logit
    with torch.no_grad():
        before, after = (tiny_model.detect(e, QUERIES).logits for e in (embedding, result.embedding))
    margin = lambda logits: (logits[..., 1:].mean(-1) - logits[..., 0]).sum(1)  # noqa: E731  (B,)
    assert (margin(after) > margin(before)).all()
    with pytest.raises(ValueError, match="encoder_state"):
        attack.perturb(embedding, MINUS, PLUS)
    with pytest.raises(ValueError, match="expected E's shape"):
        attack.perturb(embedding, MINUS, PLUS, state=state[:, :5])


def test_the_controls_act_where_the_attack_did(tiny_model, pixels):
    embedding, state = encode_for(tiny_model, pixels, 1)
    like = PGD(tiny_model, 2.0, 3, norm="l2", region=0.5, layer=1).perturb(embedding, MINUS, PLUS, state=state)
    shuffled = RandomPerturbation(tiny_model, seed=1).perturb(embedding, MINUS, PLUS, like=like, state=state)
    assert shuffled.layer == 1
    for a, b in zip(shuffled.delta, like.delta):  # the same entries, moved and re-signed
        assert torch.equal(a.abs().flatten().sort().values, b.abs().flatten().sort().values)
    with torch.no_grad():
        torch.testing.assert_close(shuffled.embedding, tiny_model.encode_from(state + shuffled.delta.to(state), 1))
    orthogonal = OrthogonalRandomPerturbation(tiny_model, seed=1).perturb(embedding, MINUS, PLUS, like=like,
                                                                          state=state)
    torch.testing.assert_close(orthogonal.l2, like.l2, rtol=0.1, atol=0)
    queries = QUERIES
    with torch.no_grad():  # held: the concepts' logits at the boxes the swap loss reads
        region = tiny_model.detect(embedding, queries[:1]).scores[..., 0]
        region = region >= 0.5 * region.amax(1, keepdim=True)
        clean = tiny_model.detect(embedding, queries).logits[region]
        after = tiny_model.detect(orthogonal.embedding, queries).logits[region]
        moved = tiny_model.detect(shuffled.embedding, queries).logits[region]
    assert (after - clean).abs().max() < 1e-3 * max(1.0, float(clean.abs().max()))
    assert (moved - clean).abs().max() > 100 * (after - clean).abs().max()
    with pytest.raises(ValueError, match="encoder_state"):
        RandomPerturbation(tiny_model).perturb(embedding, MINUS, PLUS, like=like)
    # the identity: the shuffled δ in the same space, corrected there, E' through OWL's layers
    identity = IdentityPerturbation(tiny_model).perturb(embedding, MINUS, PLUS, like=like, start=shuffled, state=state)
    assert identity.layer == 1 and torch.equal(identity.delta.abs().amax(-1) > 0, shuffled.delta.abs().amax(-1) > 0)
    with torch.no_grad():
        torch.testing.assert_close(identity.embedding, tiny_model.encode_from(state + identity.delta.to(state), 1))
        held = tiny_model.detect(identity.embedding, QUERIES).logits[region]
    assert (held - clean).abs().max() < 1e-3 * max(1.0, float(clean.abs().max())) < (moved - clean).abs().max()
    with pytest.raises(ValueError, match="encoder_state"):
        IdentityPerturbation(tiny_model).perturb(embedding, MINUS, PLUS, like=like, start=shuffled)


@pytest.mark.parametrize("layer", [-1, 1.5, True, "1"])
def test_a_spec_s_layer_is_an_encoder_layer_or_null(layer):
    with pytest.raises(SpecError, match="perturbation.layer"):
        PerturbationSpec("pgd", 1.0, steps=2, layer=layer)
    assert PerturbationSpec("pgd", 1.0, steps=2, layer=1).build(None).layer == 1
