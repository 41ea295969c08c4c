"""A run folder is data someone else may have written: nothing in it runs in the reader's browser, breaks the
page, or makes the report inline a file from outside the folder; a malformed run.json is one clear error."""

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from owlens.cli import main
from owlens.rundir import RunFormatError
from owlens.viz.report import render_report

sys.path.insert(0, str(Path(__file__).parent))
from test_report import make_run, open_in_browser, shown_map  # noqa: E402

PAYLOADS = [
    "<script>window.__pwned=1</script>",
    '<img src=x onerror="window.__pwned=1">',
    "<img src=x onerror=window.__pwned=1>",  # no quotes: survives JSON encoding, as a {{data}} slot would give it
    "<!--<script>",
    "</script><script>window.__pwned=1</script>",
    '"><svg onload="window.__pwned=1">',
    "{{data}}",
    "{{js}}",
    "a\u2028b\u2029c",
    "&lt;b&gt; & '",
]
# A slot in one field must not expand into another field's script; and all of them at once.
PAYLOADS += ["{{data}}<img src=x onerror=window.__pwned=1>", "".join(PAYLOADS)]


def _bias_summary(name: str) -> dict:
    figure = {"expected": {"delta": 0.5, "ci95": [0.1, 0.9], "n": 4}}
    return {"groups": {name: {"traits": {name: {"clean": {}, name: figure}}}}}


def _load(folder: Path) -> dict:
    return json.loads((folder / "run.json").read_text())


def _save(folder: Path, run: dict) -> None:
    (folder / "run.json").write_text(json.dumps(run))


def crafted_run(folder: Path, text: str) -> Path:
    """make_run's folder with ``text`` in every field the page shows or carries."""
    make_run(folder)
    run = _load(folder)
    run["title"] = text
    for section in ("model", "settings", "timings"):
        run[section] = {text: text, "plain": {"nested": text}}
    item = run["items"][0]
    item["id"] = text
    item["answer"] = {"prompt": text, "text": text,
                      "tokens": [{"index": i, "token": f"{text}{i}", "token_id": i} for i in range(4)]}
    item["saliency"][text] = item["saliency"].pop("random")  # a method name: an option of the menu
    item["detections"][0]["query"] = text
    for entry in item["hallucination"]["objects"]:
        entry["name"] = text
    run["pope"] = {text: run["pope"]["adversarial"]}
    run["bias"] = {"title": text, "note": text, "summary": _bias_summary(text)}
    _save(folder, run)
    for path in folder.glob("maps/**/*.json"):  # the explanation's query, shown beside the map
        explanation = json.loads(path.read_text())
        path.write_text(json.dumps({**explanation, "query": text}))
    return folder


SHOWN = """
const text = (selector) => Array.from(document.querySelectorAll(selector), (el) => el.textContent);
return {pwned: typeof window.__pwned, owlens: typeof window.owlens, title: text('head > title'), h1: text('h1'),
        prompt: text('#answer-prompt'), tokens: text('.token'), detections: text('#detections'),
        objects: text('#hallucination-rows td:first-child'), info: text('#info'), footer: text('footer dt, footer dd'),
        methods: text('#method option'), pope: text('#pope td:first-child'), note: text('#bias p'),
        bias: text('#bias svg text'),
        scripts: document.scripts.length};
"""


def test_script_payloads_in_every_text_field_are_shown_as_text(tmp_path):
    pages = [render_report(crafted_run(tmp_path / f"run-{k}", text)).path for k, text in enumerate(PAYLOADS)]
    driver = open_in_browser(pages[0])
    try:
        for text, page in zip(PAYLOADS, pages):
            driver.get(page.resolve().as_uri())
            shown = driver.execute_script(SHOWN)
            assert shown["pwned"] == "undefined", text
            assert shown["owlens"] == "object" and shown["scripts"] == 2, text  # the page's own script ran
            values, meta = shown_map(driver)
            assert meta["token"] == "1" and meta["method"] == "ga", text  # the first token with a map is shown
            np.testing.assert_allclose(values, np.load(page.parent / "maps/scene-000/ga/001.npy"),
                                       atol=0.5 / 255 + 1e-9)
            assert shown["title"] == shown["h1"] == [text] and shown["prompt"] == [text], text
            assert shown["tokens"] == [f"{text}{i}" for i in range(4)] and shown["methods"] == ["ga", text], text
            assert shown["detections"] == [f"{text} 0.90"] and shown["objects"] == [text, text], text
            assert shown["info"] == [f"token “{text}1” · ga · query “{text}”"], text
            footer = shown["footer"]
            assert {f"{s}.{text}" for s in ("model", "settings", "timings")} <= set(footer), text
            assert footer.count(text) == 3 and json.dumps({"nested": text}) in footer, text
            assert shown["pope"] == [text] and shown["note"] == [text], text
            assert {text, f"{text} · {text}"} <= set(shown["bias"]), text  # title, condition, row label
            errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
            assert not errors, (text, errors)
    finally:
        driver.quit()


def test_the_data_block_cannot_end_its_script_and_parses_back(tmp_path):
    text = "</script><!--<script>&\u2028\u2029"
    page = render_report(crafted_run(tmp_path, text)).path.read_text()
    block = re.search(r'<script type="application/json" id="owlens-data">(.*?)</script>', page, re.S).group(1)
    assert not set("<>&\u2028\u2029") & set(block)
    assert json.loads(block)["items"][0]["answer"]["text"] == text
    assert page.count("<script") == 2 and "{{" not in page


def test_the_size_in_the_footer_is_the_files_size(tmp_path):
    report = render_report(crafted_run(tmp_path, "{{size}}"))
    page = report.path.read_text()
    assert page.count(f"report file size: {report.size_bytes / 1e6:.2f} MB") == 1
    assert page.count("{{size}}") >= 3, "a {{size}} in the run's text is shown, not filled"


# -- paths: a run names files inside its folder only -------------------------------------------------------

SECRET = "TOP-SECRET-CONTENT"


def _outside(tmp_path: Path) -> Path:
    """Files outside the run folder that a crafted run.json points at: an image, a map, an svg."""
    outside = tmp_path / "outside"
    (outside / "maps").mkdir(parents=True)
    Image.new("RGB", (64, 48), (1, 2, 3)).save(outside / "secret.png")
    np.save(outside / "maps/001.npy", np.full((48, 64), 0.123, np.float32))
    (outside / "maps/001.json").write_text(json.dumps({"query": SECRET}))
    (outside / "secret.svg").write_text(f"<svg><script>window.__pwned=1</script>{SECRET}</svg>")
    return outside


def _point(run: dict, field: str, name: str) -> None:
    if field == "image":
        run["items"][0]["image"] = name
    elif field == "map":
        run["items"][0]["saliency"]["ga"]["1"] = name
    else:
        run["bias"] = {"svg": name, "note": "an older run"}


TARGETS = {"image": ("secret.png", "images/link.png", r"items\[0\]\.image"),
           "map": ("maps/001", "maps/link/001", r"items\[0\]\.saliency\.ga\.1"),
           "svg": ("secret.svg", "link.svg", r"bias\.svg")}


@pytest.mark.parametrize("how", ["absolute", "climbing", "symlink"])
@pytest.mark.parametrize("field", sorted(TARGETS))
def test_paths_leaving_the_run_folder_are_refused(tmp_path, field, how):
    folder, outside = make_run(tmp_path / "run"), _outside(tmp_path)
    target, link, message = TARGETS[field]
    if how == "symlink":  # a link inside the folder to the outside file (for a map: to its folder)
        if field == "map":
            (folder / "maps/link").symlink_to(outside / "maps")
        else:
            (folder / link).symlink_to(outside / target)
        name = link
    else:
        name = str(outside / target) if how == "absolute" else f"../outside/{target}"
    run = _load(folder)
    _point(run, field, name)
    _save(folder, run)
    with pytest.raises(RunFormatError, match=message) as raised:
        render_report(folder)
    assert "\n" not in str(raised.value)
    assert not (folder / "report.html").exists()  # nothing rendered, so nothing of the outside file in a page


def test_an_older_runs_bias_svg_is_never_read(tmp_path):
    folder = make_run(tmp_path)
    (folder / "bias.svg").write_text(f"<svg><script>window.__pwned=1</script>{SECRET}</svg>")
    run = _load(folder)
    run["bias"] = {"svg": "bias.svg", "note": "measured on 40 scenes"}
    _save(folder, run)
    page = render_report(folder).path.read_text()
    assert "measured on 40 scenes" in page and SECRET not in page and "<svg><script" not in page
    assert '<section id="bias" class="bias"><h2>Bias</h2><p class="info">' in page


def test_the_bias_plot_is_drawn_from_the_summary(tmp_path):
    folder = make_run(tmp_path)
    run = _load(folder)
    summary = _bias_summary("red")
    summary["groups"]["red"]["traits"]["red"]["random"] = {"expected": {"delta": 0.2, "ci95": [None, 0.4], "n": 3}}
    run["bias"] = {"title": "toy <plot>", "note": "n", "summary": summary}
    _save(folder, run)
    page = render_report(folder).path.read_text()
    assert "toy &lt;plot&gt;" in page and "red · red" in page and "+0.200 [n/a, +0.400], n=3" in page


# -- malformed run folders: one error naming the field ------------------------------------------------------

def _set(path: str, value):
    """A mutation of run.json: the field at ``path`` (dots, numeric parts index lists) set to ``value``."""
    def mutate(run: dict) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        holder = run
        for part in parents:
            holder = holder[part]
        holder[last] = value
    return mutate


BIAS_FIGURE = "bias.summary.groups.g.traits.t.adversarial.expected"
MALFORMED = {
    "title": (_set("title", 3), r"^title: expected a string; received int 3$"),
    "items": (_set("items", "x"), r"^items: expected a list"),
    # a run with no image may still show its figures; one with nothing at all to show is refused
    "no items": (lambda run: run.update(items=[], pope=None, bias=None, tables=[]),
                 r"^items: expected at least one item, or a pope, bias or tables section"),
    "table row": (_set("tables", [{"title": "t", "columns": ["a", "b"], "rows": [["x"]]}]),
                  r"^tables\[0\]\.rows\[0\]: expected a list of 2 cells"),
    "table cell": (_set("tables", [{"title": "t", "columns": ["a"], "rows": [[{"x": 1}]]}]),
                   r"^tables\[0\]\.rows\[0\]\[0\]: expected a string, a finite number or null"),
    "item": (_set("items.0", None), r"^items\[0\]: expected a JSON object"),
    "tokens": (_set("items.0.answer.tokens", "a red"), r"^items\[0\]\.answer\.tokens: expected a list"),
    "token index": (_set("items.0.answer.tokens.1.index", "1"), r"^items\[0\]\.answer\.tokens\[1\]\.index"),
    "token text": (_set("items.0.answer.tokens.1.token", 7), r"^items\[0\]\.answer\.tokens\[1\]\.token"),
    "prompt": (_set("items.0.answer.prompt", ["x"]), r"^items\[0\]\.answer\.prompt"),
    "size": (_set("items.0.size", [64]), r"^items\[0\]\.size: expected a list of 2 finite numbers"),
    "image": (_set("items.0.image", 5), r"^items\[0\]\.image: expected a string"),
    "presence": (_set("items.0.hallucination.objects.0.presence", "high"),
                 r"^items\[0\]\.hallucination\.objects\[0\]\.presence: expected a finite number"),
    "grounded": (_set("items.0.hallucination.objects.0.grounded", "yes"),
                 r"^items\[0\]\.hallucination\.objects\[0\]\.grounded"),
    "box": (_set("items.0.hallucination.objects.0.box_xyxy_px", [1, 2, 3]),
            r"^items\[0\]\.hallucination\.objects\[0\]\.box_xyxy_px: expected a list of 4 finite numbers"),
    "score": (_set("items.0.detections.0.score", None), r"^items\[0\]\.detections\[0\]\.score"),
    "saliency key": (_set("items.0.saliency.ga", {"one": "maps/scene-000/ga/001"}),
                     r"^items\[0\]\.saliency\.ga: expected token indices"),
    "model": (_set("model", ["toy"]), r"^model: expected a JSON object"),
    "pope": (_set("pope.adversarial.f1", "0.8"), r"^pope\.adversarial\.f1: expected a finite number"),
    "bias": (_set("bias", "plot"), r"^bias: expected a JSON object"),
    "bias delta": (_set("bias", {"summary": {"groups": {"g": {"traits": {"t": {"adversarial": {"expected": {
        "delta": "big", "ci95": [0, 1], "n": 2}}}}}}}}), rf"^{re.escape(BIAS_FIGURE)}\.delta"),
    "bias nan": (_set("bias", {"summary": {"groups": {"g": {"traits": {"t": {"adversarial": {"expected": {
        "delta": float("nan"), "ci95": [0, 1], "n": 2}}}}}}}}), rf"^{re.escape(BIAS_FIGURE)}\.delta"),
    "bias n": (_set("bias", {"summary": {"groups": {"g": {"traits": {"t": {"adversarial": {"expected": {
        "delta": 1, "ci95": [0, 1], "n": "<b>"}}}}}}}}), rf"^{re.escape(BIAS_FIGURE)}\.n"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_run_json_is_one_error_naming_the_field(tmp_path, case, capsys):
    mutate, message = MALFORMED[case]
    folder = make_run(tmp_path)
    run = _load(folder)
    mutate(run)
    _save(folder, run)
    with pytest.raises(RunFormatError, match=message):
        render_report(folder)
    assert main(["report", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("owlens report: error: ") and err.count("\n") == 1, err


@pytest.mark.parametrize("content, message", [
    ("{", r"run\.json: expected JSON"),
    ("[1, 2]", r"^run\.json: expected a JSON object"),
])
def test_run_json_that_is_no_object_is_refused(tmp_path, content, message):
    (tmp_path / "run.json").write_text(content)
    with pytest.raises(RunFormatError, match=message):
        render_report(tmp_path)


@pytest.mark.parametrize("path, content, message", [
    ("images/scene-000.png", b"not a png", r"^items\[0\]\.image: cannot read image .*scene-000\.png"),
    ("maps/scene-000/ga/001.npy", b"not a npy", r"^items\[0\]\.saliency\.ga\.1: cannot read the map .*001\.npy"),
    ("maps/scene-000/ga/001.json", b"{", r"^items\[0\]\.saliency\.ga\.1: cannot read the explanation .*001\.json"),
    ("maps/scene-000/ga/001.json", b'{"class_weights": ["x"], "boxes_cxcywh": [[0, 0, 1, 1]]}',
     r"^items\[0\]\.saliency\.ga\.1: .*001\.json: class_weights: expected a list of finite numbers"),
])
def test_unreadable_files_are_one_error_naming_them(tmp_path, path, content, message, capsys):
    folder = make_run(tmp_path)
    (folder / path).write_bytes(content)
    with pytest.raises(RunFormatError, match=message):
        render_report(folder)
    assert main(["report", str(folder)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_a_decompression_bomb_is_an_unreadable_image(tmp_path, monkeypatch):
    folder = make_run(tmp_path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # the 64x48 image is then more than twice the limit
    with pytest.raises(RunFormatError, match=r"^items\[0\]\.image: cannot read image .*scene-000\.png"):
        render_report(folder)


def test_a_map_that_is_no_image_is_refused(tmp_path):
    folder = make_run(tmp_path)
    np.save(folder / "maps/scene-000/ga/001.npy", np.zeros(5, np.float32))
    with pytest.raises(RunFormatError, match=r"^items\[0\]\.saliency\.ga\.1: .*001\.npy: expected a non-empty "
                                             r"\(H, W\) array of numbers; received shape \(5,\)"):
        render_report(folder)
