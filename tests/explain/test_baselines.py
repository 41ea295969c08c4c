"""Baselines against hand-computed gradients and attentions on the tiny J, and their shared contract."""

import pytest
import torch

from owlens.explain import AnswerTarget, ExplainInputs, GradientAlignment, TokenTarget
from owlens.explain._base import grid_to_image
from owlens.explain.registry import METHODS, make_explainer
from owlens.explain.rollout import rollout
from owlens.toyworld.tiny import tiny_joint, tiny_processor

PROMPT = "<s> USER: <image>\nwhat is in the image ? ASSISTANT:"
OTHER = "<s> USER: <image>\nis there a red star ? ASSISTANT:"


@pytest.fixture(scope="module")
def model():
    return tiny_joint(0, dtype=torch.float64, processor=tiny_processor())


def _inputs(model, prompts, seed=0):
    prompts = [prompts] if isinstance(prompts, str) else prompts
    pixels = torch.randn(len(prompts), 3, 64, 64, generator=torch.Generator().manual_seed(seed), dtype=model.dtype)
    with torch.no_grad():
        embedding = model.encode(pixels)
    return ExplainInputs.from_embedding(model, embedding, prompts, image_sizes=[(64, 64)] * len(prompts),
                                      pixel_values=pixels)


def _cells(saliency):
    """The 4x4 grid read back from a 64x64 map (one value per 16x16 cell)."""
    return saliency.map[8::16, 8::16].double().flatten()


def _scaled(values):
    return values / values.max() if values.max() > 0 else values  # an all-zero relevance stays zero


def _literal_forward(model, embedding, text, attentions=False):
    """One unpadded sequence, written out: v = W(E[:, 1:]) placed at the placeholders, the LM, the last logits."""
    ids = model.processor.prompts([text])["input_ids"]
    tokens = model.image_tokens(embedding[None]).detach().requires_grad_(True)
    output = model.language.llava(inputs_embeds=model.language.embed(ids, tokens), output_attentions=attentions,
                                  output_hidden_states=attentions)
    return ids[0], tokens, output


def _token_id(model, word):
    return model.processor.mllm_tokenizer.convert_tokens_to_ids(word)


@pytest.mark.parametrize("method", ["gradient", "gradient_input"])
def test_gradient_maps_equal_hand_computed_gradients_in_a_padded_batch(model, method):
    inputs = _inputs(model, [PROMPT, OTHER], seed=1)
    answer = ["a", "large", "red", "star"]
    result = make_explainer(method, model).explain_all(inputs, AnswerTarget(answer=" ".join(answer)))
    for b, prompt in enumerate([PROMPT, OTHER]):
        for t, saliency in enumerate(result[b]):
            _, tokens, output = _literal_forward(model, inputs.embedding[b], " ".join([prompt, *answer[:t]]))
            logit = output.logits[0, -1, _token_id(model, answer[t])]
            grad = torch.autograd.grad(logit, tokens)[0][0]  # (N, D)
            expected = grad.norm(dim=-1) if method == "gradient" else (grad * tokens[0]).sum(-1).clamp(min=0)
            torch.testing.assert_close(_cells(saliency), _scaled(expected.detach()), atol=1e-6, rtol=1e-5)
            assert saliency.logit == pytest.approx(float(logit.detach()), abs=1e-6)
            assert (saliency.token, saliency.method, saliency.query) == (answer[t], method, f"a photo of a {answer[t]}")


def test_gradient_input_absolute_keeps_both_signs(model):
    inputs = _inputs(model, PROMPT, seed=3)
    _, tokens, output = _literal_forward(model, inputs.embedding[0], PROMPT)
    grad = torch.autograd.grad(output.logits[0, -1, _token_id(model, "star")], tokens)[0][0]
    contribution = (grad * tokens[0]).sum(-1).detach()
    assert bool((contribution < 0).any()) and bool((contribution > 0).any())  # the choice matters here
    saliency = make_explainer("gradient_input", model, absolute=True).explain(inputs, "star")
    torch.testing.assert_close(_cells(saliency), _scaled(contribution.abs()), atol=1e-6, rtol=1e-5)
    positive = make_explainer("gradient_input", model).explain(inputs, "star")
    torch.testing.assert_close(_cells(positive), _scaled(contribution.clamp(min=0)), atol=1e-6, rtol=1e-5)


def _hand_attention(model, hidden, ids):
    """Last-layer attention probabilities (H, T, T) from the layer's input, written out (Llama: RoPE, GQA, causal)."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    lm = model.language.llava.model.language_model
    layer, config = lm.layers[-1], lm.config
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    width = config.hidden_size // heads
    x = layer.input_layernorm(hidden)  # (1, T, D)
    length = x.shape[1]
    q = layer.self_attn.q_proj(x).view(1, length, heads, width).transpose(1, 2)
    k = layer.self_attn.k_proj(x).view(1, length, kv_heads, width).transpose(1, 2)
    cos, sin = lm.rotary_emb(x, torch.arange(length)[None])
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    k = k.repeat_interleave(heads // kv_heads, dim=1)
    scores = (q @ k.transpose(-1, -2)) / width ** 0.5
    scores = scores.masked_fill(torch.triu(torch.ones(length, length, dtype=torch.bool), 1), float("-inf"))
    return scores.softmax(-1)[0]


def test_attention_map_equals_hand_computed_last_layer_attention(model):
    inputs = _inputs(model, [PROMPT, OTHER], seed=3)
    saliencies = make_explainer("attention", model).explain_all(inputs, "circle")
    for b, prompt in enumerate([PROMPT, OTHER]):
        ids, _, output = _literal_forward(model, inputs.embedding[b], prompt, attentions=False)
        with torch.no_grad():
            hidden = model.language.llava(inputs_embeds=model.language.embed(
                ids[None], model.image_tokens(inputs.embedding[b:b + 1])), output_hidden_states=True).hidden_states
            probs = _hand_attention(model, hidden[-2], ids)  # hidden_states[-2]: the last layer's input
        image = (ids == model.language.image_token_id).nonzero()[:, 0]
        expected = probs[:, -1, image].mean(0)
        torch.testing.assert_close(_cells(saliencies[b][0]), _scaled(expected), atol=1e-6, rtol=1e-5)


def test_rollout_by_hand_on_two_layers():
    first = torch.tensor([[[1.0, 0.0], [0.5, 0.5]]])  # (H=1, T, T)
    second = torch.tensor([[[1.0, 0.0], [0.2, 0.8]]])
    # Â1 = [[1, 0], [.25, .75]], Â2 = [[1, 0], [.1, .9]]; row 1 of Â2 Â1 = [.1 + .9·.25, .9·.75].
    torch.testing.assert_close(rollout([first, second], torch.tensor([1])), torch.tensor([[0.325, 0.675]]))
    torch.testing.assert_close(rollout([first], torch.tensor([1, 0])), torch.tensor([[0.25, 0.75], [1.0, 0.0]]))
    two_heads = torch.stack([first[0], second[0]])  # heads are averaged first: [[1, 0], [.35, .65]]
    torch.testing.assert_close(rollout([two_heads], torch.tensor([1])), torch.tensor([[0.175, 0.825]]))


def test_rollout_map_equals_the_unpadded_rollout_of_hf_attentions(model):
    inputs = _inputs(model, [PROMPT, OTHER], seed=4)
    saliencies = make_explainer("rollout", model).explain_all(inputs, "star")
    model.language.llava.set_attn_implementation({"text_config": "eager"})
    try:
        for b, prompt in enumerate([PROMPT, OTHER]):
            ids, _, output = _literal_forward(model, inputs.embedding[b], prompt, attentions=True)
            length = len(ids)
            flow = torch.zeros(length, dtype=torch.float64)
            flow[-1] = 1.0
            for layer in reversed(output.attentions):
                flow = flow @ (0.5 * layer[0].mean(0).double() + 0.5 * torch.eye(length, dtype=torch.float64))
            image = (ids == model.language.image_token_id).nonzero()[:, 0]
            torch.testing.assert_close(_cells(saliencies[b][0]), _scaled(flow[image].detach()), atol=1e-6, rtol=1e-5)
    finally:
        model.language.llava.set_attn_implementation({"text_config": "sdpa"})


def test_detection_only_paints_owl_scores_for_the_query(model):
    from owlens.explain.maps import boxes_to_pixels, paint_boxes

    inputs = _inputs(model, PROMPT, seed=5)
    saliency = make_explainer("detection_only", model).explain(inputs, "circle", query="a photo of a star")
    with torch.no_grad():
        detections = model.detect(inputs.embedding, ["a photo of a star"])
    scores = detections.scores[0, :, 0]
    expected = paint_boxes(boxes_to_pixels(detections.boxes_cxcywh[0], (64, 64)), scores, (64, 64))
    torch.testing.assert_close(saliency.map, expected)
    torch.testing.assert_close(saliency.class_weights, scores)
    assert saliency.query == "a photo of a star" and saliency.token == "circle" and saliency.coord_weights is None


def test_random_is_seeded_and_leaves_the_global_generator_alone(model):
    inputs = _inputs(model, PROMPT, seed=6)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = make_explainer("random", model, seed=7).explain(inputs, "circle").map
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(make_explainer("random", model, seed=7).explain(inputs, "circle").map, first)
    assert not torch.equal(make_explainer("random", model, seed=8).explain(inputs, "circle").map, first)
    cells = _cells(make_explainer("random", model, seed=7).explain(inputs, "circle"))
    assert cells.max() == 1.0 and len(cells.unique()) == 16


def test_every_method_explains_the_same_logit_as_ga(model):
    inputs = _inputs(model, [PROMPT, OTHER], seed=7)
    target = AnswerTarget(answer="a small blue cross")
    reference = GradientAlignment(model).explain_all(inputs, target)
    for name in METHODS:
        result = make_explainer(name, model).explain_all(inputs, target)
        for row, expected in zip(result, reference):
            assert [(s.token, s.token_id, s.position) for s in row] == [(s.token, s.token_id, s.position)
                                                                        for s in expected]
            for saliency, other in zip(row, expected):
                assert saliency.logit == pytest.approx(other.logit, abs=1e-6)
                assert saliency.map.shape == (64, 64) and saliency.map.dtype == torch.float32
                assert 0.0 <= float(saliency.map.min()) and float(saliency.map.max()) <= 1.0
                assert saliency.method == name


def test_registry_and_unknown_names(model):
    assert list(METHODS) == ["ga", "object_attribution", "gradient", "gradient_input", "attention", "rollout",
                             "detection_only", "random"]
    assert make_explainer("random", model, seed=3).seed == 3
    with pytest.raises(ValueError, match="unknown explanation method 'lime'; expected one of ga, object_attribution, "):
        make_explainer("lime", model)


@pytest.mark.parametrize("name", [n for n in METHODS if n != "ga"])
def test_bad_calls_say_what_was_expected(model, name):
    explainer = make_explainer(name, model)
    with pytest.raises(ValueError, match="explain takes one image; received 2"):
        explainer.explain(_inputs(model, [PROMPT, PROMPT]), target="circle")
    with pytest.raises(ValueError, match="two queries"):
        explainer.explain(_inputs(model, PROMPT), TokenTarget("circle", "a photo of a star"), query="a circle")
    with pytest.raises(ValueError, match="'zebra' is not in the MLLM's vocabulary"):
        explainer.explain(_inputs(model, PROMPT), target="zebra")
    with pytest.raises(ValueError, match="needs the model's processor"):
        make_explainer(name, tiny_joint(0))


def _state(model):
    return ([m.training for m in model.modules()], [p.requires_grad for p in model.parameters()],
            model.language.llava.config.text_config._attn_implementation)


@pytest.mark.parametrize("name, module", [("attention", "attention"), ("rollout", "rollout"),
                                          ("gradient", "gradient")])
@pytest.mark.parametrize("fail", [False, True])
def test_borrowed_state_is_returned_even_after_an_error(monkeypatch, name, module, fail):
    import importlib

    model = tiny_joint(1, processor=tiny_processor())
    model.train()
    for index, parameter in enumerate(model.parameters()):
        parameter.requires_grad_(index % 2 == 0)
    before = _state(model)
    target = importlib.import_module(f"owlens.explain.{module}")
    real = target.lm_pass
    seen = {}

    def spy(*args, **kwargs):
        seen["state"] = (any(m.training for m in model.modules()), any(p.requires_grad for p in model.parameters()),
                         model.language.llava.config.text_config._attn_implementation)
        if fail:
            raise RuntimeError("boom in the middle")
        return real(*args, **kwargs)

    monkeypatch.setattr(target, "lm_pass", spy)
    inputs = _inputs(model, PROMPT)
    if fail:
        with pytest.raises(RuntimeError, match="boom"):
            make_explainer(name, model).explain(inputs, "circle")
    else:
        make_explainer(name, model).explain(inputs, "circle")
    assert seen["state"] == (False, False, "sdpa" if name == "gradient" else "eager")
    assert _state(model) == before
    assert all(p.grad is None for p in model.parameters())


def test_grid_to_image_paints_cells_and_keeps_the_larger_value_on_shared_pixels():
    values = torch.tensor([0.1, 0.2, 0.3, 0.4])
    painted = grid_to_image(values, (2, 2), (4, 4))
    torch.testing.assert_close(painted, torch.tensor([[0.1, 0.1, 0.2, 0.2], [0.1, 0.1, 0.2, 0.2],
                                                      [0.3, 0.3, 0.4, 0.4], [0.3, 0.3, 0.4, 0.4]]))
    odd = grid_to_image(values, (2, 2), (3, 3))  # the middle column and row straddle two cells
    torch.testing.assert_close(odd, torch.tensor([[0.1, 0.2, 0.2], [0.3, 0.4, 0.4], [0.3, 0.4, 0.4]]))
    with pytest.raises(ValueError, match=r"one value per grid cell \(2x2 = 4\); received 3"):
        grid_to_image(values[:3], (2, 2), (4, 4))


def test_attentions_outside_eager_attention_are_refused(model):
    from owlens.explain._lm_pass import lm_pass
    from owlens.explain.targets import plan_tokens

    inputs = _inputs(model, PROMPT)
    plans = plan_tokens(model, inputs.input_ids, inputs.attention_mask, inputs.embedding, TokenTarget("circle"),
                        "a photo of a {}")
    with pytest.raises(RuntimeError, match="run inside eager_attention"):
        lm_pass(model, inputs.embedding, plans, attentions=True)


def test_nested_borrows_restore_the_state_once_at_the_outer_exit():
    from torch import nn

    from owlens.explain._borrow import borrowed

    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)).train()
    model[0].bias.requires_grad_(False)
    with borrowed(model):
        with borrowed(model):
            assert not model.training and not any(p.requires_grad for p in model.parameters())
        # The inner exit gives nothing back: the outer block still holds the model.
        assert not model.training and not model[0].weight.requires_grad
    assert model.training and model[1].training
    assert model[0].weight.requires_grad and not model[0].bias.requires_grad
    with pytest.raises(RuntimeError):
        with borrowed(model):
            raise RuntimeError("an explainer failed")
    assert model.training and model[0].weight.requires_grad


def test_shared_lm_passes_run_each_distinct_request_once_with_the_same_maps(model, monkeypatch):
    from owlens.explain import _lm_pass

    inputs = _inputs(model, [PROMPT, OTHER], seed=5)
    target = AnswerTarget(answer="a small blue cross")
    alone = {name: make_explainer(name, model).explain_all(inputs, target) for name in METHODS}
    requests = []
    real = _lm_pass._lm_pass

    def counted(model_, embedding, plans, gradients, attentions):
        requests.append((gradients, attentions))
        return real(model_, embedding, plans, gradients, attentions)

    monkeypatch.setattr(_lm_pass, "_lm_pass", counted)
    with _lm_pass.shared_lm_passes():
        shared = {name: make_explainer(name, model).explain_all(inputs, target) for name in METHODS}
        # Other plans (one token, not the whole answer) and another E are requests of their own.
        make_explainer("gradient", model).explain_all(inputs, TokenTarget("circle"))
        make_explainer("gradient", model).explain_all(_inputs(model, [PROMPT, OTHER], seed=6), target)
    # Six explainers read three kinds of pass (GA and object_attribution ∂/∂E, the gradient baselines ∂/∂v, the
    # attention baselines the probabilities; the others at most a plain forward): each ran once, then the
    # other plans and the other E once each.
    first, rest = requests[:-2], requests[-2:]
    assert len(first) == len(set(first)) and {("embedding", False), ("image_tokens", False), (None, True)} <= set(first)
    assert rest == [("image_tokens", False), ("image_tokens", False)]
    for name in METHODS:
        for row, expected in zip(shared[name], alone[name]):
            for saliency, other in zip(row, expected):
                assert torch.equal(saliency.map, other.map), name
    requests.clear()  # outside the block nothing is kept
    make_explainer("gradient", model).explain_all(inputs, target)
    make_explainer("gradient_input", model).explain_all(inputs, target)
    assert len(requests) == 2
