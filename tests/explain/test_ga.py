"""GA against the paper's literal recipe: one backward pass per box and output, then the cosines."""

import shutil
import warnings

import pytest
import torch

from owlens.explain import AnswerTarget, ExplainInputs, GradientAlignment, TokenTarget
from owlens.explain._lm_pass import logit_gradients
from owlens.explain._owl_grads import compiled_box_cosines
from owlens.explain._reference import literal_box_cosines
from owlens.explain.targets import TokenPlan
from owlens.toyworld.tiny import tiny_joint, tiny_processor

PROMPT = "<s> USER: <image>\nwhat is in the image ? ASSISTANT:"


def _model(seed=0, dtype=torch.float64):
    return tiny_joint(seed, dtype=dtype, processor=tiny_processor())


def _inputs(model, prompts, seed=0, size=(64, 48)):
    prompts = [prompts] if isinstance(prompts, str) else prompts
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randn(len(prompts), 3, 64, 64, generator=generator, dtype=model.dtype)
    with torch.no_grad():
        embedding = model.encode(pixels)
    return ExplainInputs.from_embedding(model, embedding, prompts, image_sizes=[size] * len(prompts))


def literal_gradient(model, embedding, prompt, token_id):
    """g for the next token after ``prompt`` (text holding any earlier answer words): one backward pass."""
    leaf = embedding.detach().clone().requires_grad_(True)
    logits = model.logits(leaf, [prompt])
    return torch.autograd.grad(logits[0, -1, token_id], leaf)[0][0], float(logits[0, -1, token_id].detach())


def literal_cosines(model, embedding, query, gradient):
    """The paper's loop (N·5 calls of torch.autograd.grad) for one token: cosines (N, 5) and the boxes."""
    cosines, detections = literal_box_cosines(model.detect, embedding[0], [query], [gradient])
    return cosines[0], detections.boxes_cxcywh[0]


def _assert_matches_literal(model, saliency, embedding, prompt):
    gradient, logit = literal_gradient(model, embedding, prompt, saliency.token_id)
    cosines, boxes = literal_cosines(model, embedding, saliency.query, gradient)
    fast = torch.cat([saliency.class_cosines[:, None], saliency.coord_cosines], 1)
    torch.testing.assert_close(fast, cosines, atol=1e-5, rtol=0)
    torch.testing.assert_close(saliency.boxes_cxcywh, boxes, atol=1e-10, rtol=0)
    assert saliency.logit == pytest.approx(logit, abs=1e-8)
    assert cosines.abs().max() > 1e-3  # not a vacuous comparison


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_token_equals_the_literal_loop(seed):
    model = _model(seed)
    inputs = _inputs(model, PROMPT, seed)
    saliency = GradientAlignment(model).explain(inputs, target="circle")
    assert (saliency.token, saliency.query, saliency.method) == ("circle", "a photo of a circle", "ga")
    _assert_matches_literal(model, saliency, inputs.embedding[:1], PROMPT)


def test_batch_and_several_tokens_equal_the_literal_loop():
    model = _model(3)
    prompts = [PROMPT, "<s> USER: <image>\nis there a red star ? ASSISTANT:"]  # different lengths: padding
    inputs = _inputs(model, prompts, seed=3)
    answer = ["a", "large", "red", "star"]
    result = GradientAlignment(model).explain_all(inputs, AnswerTarget(answer=" ".join(answer)))
    assert [[s.token for s in row] for row in result] == [answer, answer]
    for b, row in enumerate(result):
        for t, saliency in enumerate(row):
            literal_prompt = " ".join([prompts[b], *answer[:t]])
            _assert_matches_literal(model, saliency, inputs.embedding[b:b + 1], literal_prompt)


def test_query_overrides_the_template():
    model = _model(4)
    inputs = _inputs(model, PROMPT, 4)
    saliency = GradientAlignment(model).explain(inputs, target="circle", query="a photo of a small blue star")
    assert saliency.query == "a photo of a small blue star" and saliency.token == "circle"
    _assert_matches_literal(model, saliency, inputs.embedding, PROMPT)


def test_teacher_forcing_equals_the_earlier_tokens_in_the_prompt():
    model = _model(5)
    ga = GradientAlignment(model)
    answer = ["a", "small", "green", "cross"]
    forced = ga.explain_all(_inputs(model, PROMPT, 5), AnswerTarget(answer=" ".join(answer)))[0]
    for t, saliency in enumerate(forced):
        literal = ga.explain(_inputs(model, " ".join([PROMPT, *answer[:t]]), 5), target=answer[t])
        assert literal.token_id == saliency.token_id and literal.position == saliency.position
        assert literal.logit == pytest.approx(saliency.logit, abs=1e-10)
        torch.testing.assert_close(literal.class_cosines, saliency.class_cosines, atol=1e-10, rtol=0)
        torch.testing.assert_close(literal.map, saliency.map)


def test_generated_answer_is_explained_token_by_token():
    model = _model(6)
    inputs = _inputs(model, PROMPT, 6)
    with torch.no_grad():
        generated = model.generate(inputs.embedding, {"input_ids": inputs.input_ids,
                                                      "attention_mask": inputs.attention_mask}, max_new_tokens=3)
    row = GradientAlignment(model).explain_all(inputs, AnswerTarget(max_new_tokens=3))[0]
    assert [s.token_id for s in row] == generated.token_ids[0]
    prompt_length = int(inputs.attention_mask.sum())
    assert [s.position for s in row] == [prompt_length - 1 + t for t in range(len(row))]


def test_gradient_matches_finite_differences():
    model = _model(7)
    inputs = _inputs(model, PROMPT, 7)
    ids = inputs.input_ids[0].tolist()
    token_id = model.processor.mllm_tokenizer.convert_tokens_to_ids("star")
    plan = TokenPlan(ids, [len(ids) - 1], [token_id], ["star"], ["a photo of a star"])
    gradient, logits = logit_gradients(model, inputs.embedding, [plan])
    generator = torch.Generator().manual_seed(0)

    def logit(shift):
        with torch.no_grad():
            return float(model.logits(inputs.embedding + shift, [PROMPT])[0, -1, token_id])

    assert float(logits[0, 0]) == pytest.approx(logit(0.0), abs=1e-12)
    for _ in range(3):
        v = torch.randn(inputs.embedding.shape, generator=generator, dtype=torch.float64)
        # Five-point stencil with a large step: Llama's RMSNorm computes in float32 even in a float64 model,
        # so the logit carries ~1e-7 of rounding noise that a small step would amplify.
        h = 3e-2
        numeric = (-logit(2 * h * v) + 8 * logit(h * v) - 8 * logit(-h * v) + logit(-2 * h * v)) / (12 * h)
        assert float((gradient[0, 0] * v[0]).sum()) == pytest.approx(numeric, rel=1e-4, abs=2e-6)
    assert float(gradient[0, 0, 0].abs().max()) == 0.0  # W reads patch tokens only: no gradient on CLS


def test_map_is_the_boxes_painted_with_their_class_weights():
    model = _model(8)
    saliency = GradientAlignment(model).explain(_inputs(model, PROMPT, 8, size=(50, 30)), target="square")
    width, height = saliency.image_size
    expected = torch.zeros(height, width)
    for (x0, y0, x1, y1), weight in zip(saliency.boxes_xyxy_px().tolist(), saliency.class_weights.tolist()):
        for r in range(height):
            for c in range(width):  # pixel (r, c) covers [c, c+1) x [r, r+1); the box must overlap it
                if min(x1, c + 1) > max(x0, c) and min(y1, r + 1) > max(y0, r):
                    expected[r, c] = max(expected[r, c], weight)
    assert saliency.map.shape == (30, 50) and saliency.map.dtype == torch.float32
    torch.testing.assert_close(saliency.map, expected)
    assert saliency.map_array().shape == (30, 50)


def test_saliency_serialises_to_json():
    import json

    model = _model(12, torch.float32)
    saliency = GradientAlignment(model).explain(_inputs(model, PROMPT, 12, size=(20, 10)), target="star")
    payload = json.loads(json.dumps(saliency.to_dict(include_map=True)))
    assert payload["map_shape"] == [10, 20] and len(payload["map"]) == 10 and len(payload["coord_weights"][0]) == 4
    assert payload["image_size"] == [20, 10] and payload["token_id"] == saliency.token_id
    assert "map" not in saliency.to_dict()


def test_minmax_columns_span_zero_to_one():
    model = _model(9)
    saliency = GradientAlignment(model).explain(_inputs(model, PROMPT, 9), target="star")
    for column in [saliency.class_weights, *saliency.coord_weights.T]:
        assert float(column.min()) == 0.0 and float(column.max()) == 1.0
    order = torch.argsort(saliency.class_cosines)
    assert torch.equal(torch.argsort(saliency.class_weights), order)


def test_batched_padded_gradients_equal_one_image_at_a_time():
    model = _model(10)
    prompts = [PROMPT, "<s> USER: <image>\nis there a red star ? ASSISTANT:"]
    inputs = _inputs(model, prompts, 10)
    tokenizer = model.processor.mllm_tokenizer
    answer = tokenizer("a blue", add_special_tokens=False)["input_ids"]
    plans = []
    for row, mask in zip(inputs.input_ids, inputs.attention_mask):
        ids = row[mask.bool()].tolist()
        plans.append(TokenPlan(ids + answer[:1], [len(ids) - 1, len(ids)], answer, ["a", "blue"], ["", ""]))
    gradients, logits = logit_gradients(model, inputs.embedding, plans)
    for b, prompt in enumerate(prompts):
        for t, token_id in enumerate(answer):
            gradient, logit = literal_gradient(model, inputs.embedding[b:b + 1], " ".join([prompt, "a"][:t + 1]),
                                               token_id)
            torch.testing.assert_close(gradients[b, t], gradient, atol=1e-10, rtol=0)
            assert float(logits[b, t]) == pytest.approx(logit, abs=1e-10)


@pytest.mark.parametrize("token, match", [("zebra", "'zebra' is not in the MLLM's vocabulary"),
                                          ("  ", "'  ' is not in the MLLM's vocabulary"),
                                          (999, "token id 999 is outside")])
def test_unknown_tokens_are_refused_by_name(token, match):
    model = _model(0, torch.float32)
    with pytest.raises(ValueError, match=match):
        GradientAlignment(model).explain(_inputs(model, PROMPT), target=token)


def test_bad_calls_say_what_was_expected():
    model = _model(0, torch.float32)
    ga = GradientAlignment(model)
    with pytest.raises(ValueError, match="explain takes one image; received 2"):
        ga.explain(_inputs(model, [PROMPT, PROMPT]), target="circle")
    with pytest.raises(ValueError, match="two queries"):
        ga.explain(_inputs(model, PROMPT), target=TokenTarget("circle", "a photo of a star"), query="a circle")
    with pytest.raises(ValueError, match="needs a '{}'"):
        GradientAlignment(model, query_template="a photo of a")
    with pytest.raises(ValueError, match="needs the model's processor"):
        GradientAlignment(tiny_joint(0))


def _state(model):
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())
    return ([m.training for m in model.modules()], [p.requires_grad for p in model.parameters()], hooks)


@pytest.mark.parametrize("fail", [False, True])
def test_borrowed_state_is_returned_even_after_an_error(monkeypatch, fail):
    import owlens.explain.ga as ga_module

    model = _model(11, torch.float32)
    model.train()
    model.owl.eval()
    for index, parameter in enumerate(model.parameters()):
        parameter.requires_grad_(index % 2 == 0)
    before = _state(model)
    inputs = _inputs(model, PROMPT, 11)
    embedding = inputs.embedding.requires_grad_(True)
    seen = {}

    def spy(branch, *args, **kwargs):
        seen["training"] = any(m.training for m in model.modules())
        seen["requires_grad"] = any(p.requires_grad for p in model.parameters())
        if fail:
            raise RuntimeError("boom in the middle")
        return box_cosines(branch, *args, **kwargs)

    box_cosines = ga_module.box_cosines
    monkeypatch.setattr(ga_module, "box_cosines", spy)
    if fail:
        with pytest.raises(RuntimeError, match="boom"):
            GradientAlignment(model).explain(inputs, target="circle")
    else:
        GradientAlignment(model).explain(inputs, target="circle")
    assert seen == {"training": False, "requires_grad": False}  # borrowed: eval mode, frozen weights
    assert _state(model) == before
    assert embedding.requires_grad and embedding.grad is None
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.toy_weights
def test_toy_world_equals_the_literal_loop():
    import numpy as np

    from owlens.models.joint import JointModel
    from owlens.toyworld.world import sample_scene

    model = JointModel.from_pretrained(dtype=torch.float64, device="cpu")
    scene = sample_scene(np.random.default_rng(0), n_objects=2, prior=False)
    prompt = model.processor.chat("what is in the image ?")
    inputs = ExplainInputs.from_images(model, scene.pil(), prompt)
    saliency = GradientAlignment(model).explain(inputs, target=scene.objects[0].shape)
    assert saliency.map.shape == (64, 64)
    _assert_matches_literal(model, saliency, inputs.embedding, prompt)


def test_compiled_owl_side_equals_the_literal_loop():
    """``compile=True`` fuses the closed form's kernels; the cosines must not move (float64, the tiny J)."""
    model = _model(3)
    inputs = _inputs(model, [PROMPT, PROMPT.replace("what", "is there a star ? what")], 3)
    eager = GradientAlignment(model).explain_all(inputs, TokenTarget("circle"))
    compiled = GradientAlignment(model, compile=True).explain_all(inputs, TokenTarget("circle"))
    for b in range(2):
        torch.testing.assert_close(compiled[b][0].class_cosines, eager[b][0].class_cosines, atol=1e-10, rtol=0)
        torch.testing.assert_close(compiled[b][0].coord_cosines, eager[b][0].coord_cosines, atol=1e-10, rtol=0)
    _assert_matches_literal(model, compiled[0][0], inputs.embedding[:1], PROMPT)
    if shutil.which("cc") or shutil.which("g++"):  # with a compiler the compiled path must really have run
        assert not compiled_box_cosines._failed


def test_a_failing_compiler_warns_once_and_gives_the_same_result(monkeypatch):
    import owlens.explain.ga as ga_module
    from owlens.explain._owl_grads import _Compiled

    def broken(fn):
        def call(*args, **kwargs):
            raise RuntimeError("no C++ compiler found\nlong trace")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    monkeypatch.setattr(ga_module, "compiled_box_cosines", _Compiled())
    model = _model(0)
    inputs = _inputs(model, PROMPT, 0)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler found"):
        first = GradientAlignment(model, compile=True).explain(inputs, "circle")
    expected = GradientAlignment(model).explain(inputs, "circle")
    torch.testing.assert_close(first.class_cosines, expected.class_cosines, atol=0, rtol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second call neither warns nor retries the compiler
        GradientAlignment(model, compile=True).explain(inputs, "circle")


def test_bad_inputs_raise_as_uncompiled_and_keep_the_compiler(monkeypatch):
    """An error that eager GA raises too is the caller's, not the compiler's: no warning, compiling stays on."""
    from owlens.explain._owl_grads import _Compiled

    monkeypatch.setattr(torch, "compile", lambda fn: fn)  # "compiled" = eager, so the error is a genuine one
    compiled, model = _Compiled(), _model(0)
    wrong_width = torch.zeros(17, 7, dtype=model.dtype)  # E of the tiny OWL is (17, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeError):
            compiled(model.detection, wrong_width, torch.zeros(1, 16, dtype=model.dtype), wrong_width[None],
                     torch.tensor([0]))
    assert not compiled._failed
