"""A run folder: what a run computed, as files a report (or a person, or a script) can read back.

    RUN_DIR/run.json                      schema "owlens-run/1": model, settings, timings, items, pope, bias,
                                          tables
    RUN_DIR/images/ITEM.png               each item's image
    RUN_DIR/maps/ITEM/METHOD/NNN.npy      the saliency map (H, W) float32 in [0, 1] of answer token NNN
    RUN_DIR/maps/ITEM/METHOD/NNN.json     that explanation's ``Saliency.to_dict()`` (per-box weights, query)

Paths inside run.json are relative to RUN_DIR, so a run folder can be moved or archived whole; a run folder
may come from someone else, so ``read_run`` refuses a path that leads outside it and a field of the wrong type.
"""

from __future__ import annotations

import json
import math
import re
import reprlib
from pathlib import Path

import numpy as np

from owlens.persist import OutsideFolderError, atomic_write_bytes, atomic_write_json, atomic_write_text, confined

__all__ = ["POPE_COLUMNS", "SCHEMA", "RunFormatError", "map_path", "read_run", "read_saliency", "run_path",
           "save_image", "save_saliency", "table", "write_run"]

SCHEMA = "owlens-run/1"
POPE_COLUMNS = ("accuracy", "precision", "recall", "f1", "yes_ratio")  # a split's figures, as the report shows them


class RunFormatError(ValueError):
    """A run folder is missing run.json, has another schema, a field of the wrong type, or names files that are
    not there or lie outside the folder."""


def map_path(item_id: str, method: str, token_index: int) -> str:
    """The relative base path (no suffix) of one explanation's files."""
    return f"maps/{item_id}/{method}/{token_index:03d}"


def save_image(folder: Path, item_id: str, image) -> str:
    import io

    relative = f"images/{item_id}.png"
    (folder / relative).parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(folder / relative, buffer.getvalue())
    return relative


def save_saliency(folder: Path, item_id: str, token_index: int, saliency) -> str:
    """Write the map (.npy) and its explanation (.json); returns the relative base path."""
    base = map_path(item_id, saliency.method, token_index)
    (folder / base).parent.mkdir(parents=True, exist_ok=True)
    import io

    buffer = io.BytesIO()
    np.save(buffer, saliency.map_array())
    atomic_write_bytes(folder / f"{base}.npy", buffer.getvalue())
    atomic_write_text(folder / f"{base}.json", json.dumps(saliency.to_dict()))
    return base


def read_saliency(folder: str | Path, base: str, field: str) -> tuple[np.ndarray, dict]:
    """One explanation's map (H, W) and its fields a report reads, or ``RunFormatError`` naming the file."""
    npy, explanation = run_path(folder, f"{base}.npy", field), run_path(folder, f"{base}.json", field)
    try:
        values = np.load(npy, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise RunFormatError(f"{field}: cannot read the map {npy}: {err}") from None
    if values.ndim != 2 or values.size == 0 or values.dtype.kind not in "fiu":
        raise RunFormatError(f"{field}: {npy}: expected a non-empty (H, W) array of numbers; received shape "
                             f"{values.shape}, dtype {values.dtype}")
    try:
        payload = json.loads(explanation.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunFormatError(f"{field}: cannot read the explanation {explanation}: {err}") from None
    where = f"{field}: {explanation}"
    _check_explanation(_object(payload, where), where)
    return values, payload


def write_run(folder: Path, payload: dict) -> Path:
    """Write run.json last and atomically: a folder whose run.json exists is complete."""
    return atomic_write_json(Path(folder) / "run.json", {"schema": SCHEMA, **payload})


def table(title: str, columns, rows) -> dict:
    """A run.json table: the report shows it as written (texts escaped, numbers to 4 significant digits)."""
    def cell(value):  # JSON has no NaN: a figure that could not be computed is an empty cell
        return None if isinstance(value, float) and not math.isfinite(value) else value

    return {"title": title, "columns": list(columns), "rows": [[cell(v) for v in row] for row in rows]}


def run_path(folder: str | Path, name, what: str) -> Path:
    """``folder / name`` resolved, or ``RunFormatError`` naming the field when ``name`` would leave the folder."""
    try:
        return confined(folder, name, what=what)
    except OutsideFolderError as err:
        raise RunFormatError(str(err)) from None


def read_run(folder: str | Path) -> dict:
    """Load run.json, check the fields a report reads, and check that every file it names is there, inside
    the folder. Any departure is a ``RunFormatError`` naming the field (``items[0].answer.tokens``)."""
    folder = Path(folder)
    path = folder / "run.json"
    if not path.is_file():
        raise RunFormatError(f"{folder} is not a run folder: expected {path} (written by `owlens demo` and the "
                             "other run commands)")
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunFormatError(f"{path}: expected JSON; {err}") from None
    _check(isinstance(run, dict), "run.json", "a JSON object", run)
    if run.get("schema") != SCHEMA:
        raise RunFormatError(f"{path}: expected schema {SCHEMA!r}, received {run.get('schema')!r}")
    _check_run(run)
    missing = [name for i, item in enumerate(run["items"]) for name, field in _files(item, f"items[{i}]")
               if not run_path(folder, name, field).is_file()]
    if missing:
        raise RunFormatError(f"{folder}: run.json names {len(missing)} missing file(s), e.g. {missing[:3]}")
    bias = run.get("bias") or {}
    if "svg" in bias:  # an older run's plot file: never read, but a run must not name a file outside it
        run_path(folder, bias["svg"], "bias.svg")
    return run


def _files(item: dict, field: str) -> list[tuple[str, str]]:
    """(relative path, field) of every file an item names."""
    names = [(item["image"], f"{field}.image")]
    for method, per_token in item.get("saliency", {}).items():
        names += [(f"{base}{suffix}", f"{field}.saliency.{method}.{token}")
                  for token, base in per_token.items() for suffix in (".npy", ".json")]
    return names


# What a run.json must hold for a report to render it: the fields report.py and report.js read, typed.

def _check(ok: bool, field: str, expected: str, value) -> None:
    if not ok:
        raise RunFormatError(f"{field}: expected {expected}; received {type(value).__name__} {reprlib.repr(value)}")


def _finite(value) -> bool:
    """A real finite number (bool is not one; an int too large for a float is not finite)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _string(value, field: str) -> None:
    _check(isinstance(value, str), field, "a string", value)


def _number(value, field: str) -> None:
    _check(_finite(value), field, "a finite number", value)


def _numbers(value, field: str, count: int) -> None:
    _check(isinstance(value, list) and len(value) == count and all(map(_finite, value)), field,
           f"a list of {count} finite numbers", value)


def _count(value, field: str) -> None:
    _check(isinstance(value, int) and not isinstance(value, bool) and value >= 0, field, "an integer >= 0", value)


def _object(value, field: str) -> dict:
    _check(isinstance(value, dict), field, "a JSON object", value)
    return value


def _list(value, field: str) -> list:
    _check(isinstance(value, list), field, "a list", value)
    return value


def _check_run(run: dict) -> None:
    if "title" in run:
        _string(run["title"], "title")
    for section in ("model", "settings", "timings"):
        _object(run.get(section, {}), section)
    items = _list(run.get("items"), "items")
    # A run without images (a bias run, an evaluation) is browsable by its figures alone.
    _check(bool(items) or any(run.get(k) for k in ("pope", "bias", "tables")), "items",
           "at least one item, or a pope, bias or tables section", items)
    for i, item in enumerate(items):
        _check_item(_object(item, f"items[{i}]"), f"items[{i}]")
    for split, scores in _object(run.get("pope") or {}, "pope").items():
        for column in POPE_COLUMNS:
            _number(_object(scores, f"pope.{split}").get(column), f"pope.{split}.{column}")
    if run.get("bias") is not None:
        _check_bias(_object(run["bias"], "bias"))
    for k, entry in enumerate(_list(run.get("tables", []), "tables")):
        _check_table(_object(entry, f"tables[{k}]"), f"tables[{k}]")


def _check_table(entry: dict, field: str) -> None:
    _string(entry.get("title"), f"{field}.title")
    columns = _list(entry.get("columns"), f"{field}.columns")
    for k, column in enumerate(columns):
        _string(column, f"{field}.columns[{k}]")
    for r, row in enumerate(_list(entry.get("rows"), f"{field}.rows")):
        _check(isinstance(row, list) and len(row) == len(columns), f"{field}.rows[{r}]",
               f"a list of {len(columns)} cells", row)
        for c, cell in enumerate(row):
            _check(cell is None or isinstance(cell, str) or _finite(cell), f"{field}.rows[{r}][{c}]",
                   "a string, a finite number or null", cell)


def _check_item(item: dict, field: str) -> None:
    _string(item.get("id"), f"{field}.id")
    _string(item.get("image"), f"{field}.image")
    size = item.get("size")
    _numbers(size, f"{field}.size", 2)
    _check(all(v > 0 for v in size), f"{field}.size", "a positive width and height", size)
    answer = _object(item.get("answer"), f"{field}.answer")
    _string(answer.get("prompt"), f"{field}.answer.prompt")
    _string(answer.get("text", ""), f"{field}.answer.text")
    for k, token in enumerate(_list(answer.get("tokens"), f"{field}.answer.tokens")):
        where = f"{field}.answer.tokens[{k}]"
        _count(_object(token, where).get("index"), f"{where}.index")
        _string(token.get("token"), f"{where}.token")
    for method, per_token in _object(item.get("saliency", {}), f"{field}.saliency").items():
        for token, base in _object(per_token, f"{field}.saliency.{method}").items():
            _check(re.fullmatch(r"[0-9]+", token) is not None, f"{field}.saliency.{method}", "token indices as keys",
                   token)
            _string(base, f"{field}.saliency.{method}.{token}")
    for k, detection in enumerate(_list(item.get("detections", []), f"{field}.detections")):
        _string(_object(detection, f"{field}.detections[{k}]").get("query"), f"{field}.detections[{k}].query")
        _number(detection.get("score"), f"{field}.detections[{k}].score")
    if item.get("hallucination") is not None:
        _check_hallucination(_object(item["hallucination"], f"{field}.hallucination"), f"{field}.hallucination")


def _check_hallucination(hallucination: dict, field: str) -> None:
    if hallucination.get("threshold") is not None:
        _number(hallucination["threshold"], f"{field}.threshold")
    if hallucination.get("threshold_source") is not None:
        _string(hallucination["threshold_source"], f"{field}.threshold_source")
    for k, entry in enumerate(_list(hallucination.get("objects", []), f"{field}.objects")):
        where = f"{field}.objects[{k}]"
        _string(_object(entry, where).get("name"), f"{where}.name")
        _check(isinstance(entry.get("grounded"), bool), f"{where}.grounded", "true or false", entry.get("grounded"))
        _number(entry.get("presence"), f"{where}.presence")
        _numbers(entry.get("box_xyxy_px"), f"{where}.box_xyxy_px", 4)


def _check_explanation(explanation: dict, field: str) -> None:
    """The query and the per-box weights a report draws (``Saliency.to_dict``); either may be null."""
    query, weights, boxes = (explanation.get(k) for k in ("query", "class_weights", "boxes_cxcywh"))
    _check(query is None or isinstance(query, str), f"{field}: query", "a string or null", query)
    if weights is None or boxes is None:
        return
    _check(isinstance(weights, list) and all(map(_finite, weights)), f"{field}: class_weights",
           "a list of finite numbers", weights)
    for k, box in enumerate(_list(boxes, f"{field}: boxes_cxcywh")):
        _numbers(box, f"{field}: boxes_cxcywh[{k}]", 4)
    _check(len(boxes) == len(weights), f"{field}: boxes_cxcywh", f"one box per class weight ({len(weights)})", boxes)
    _numbers(explanation.get("image_size"), f"{field}: image_size", 2)
    objects = explanation.get("objects")
    if objects is not None:
        for k, obj in enumerate(_list(objects, f"{field}: objects")):
            where = f"{field}: objects[{k}]"
            _object(obj, where)
            _string(obj.get("concept"), f"{where}.concept")
            for key in ("concept_score", "logit_without", "logit_drop"):
                _number(obj.get(key), f"{where}.{key}")
            if obj.get("logit_without_first") is not None:
                _number(obj["logit_without_first"], f"{where}.logit_without_first")
            _numbers(obj.get("box_xyxy_px"), f"{where}.box_xyxy_px", 4)


def _check_bias(bias: dict) -> None:
    for key in ("note", "title"):
        if key in bias:
            _string(bias[key], f"bias.{key}")
    if "summary" in bias:
        _check_bias_summary(bias["summary"], "bias.summary")


def _check_bias_summary(summary, field: str, reading: str = "expected") -> None:
    """The part of a bias summary that ``bias_plot_svg`` draws: groups, traits, conditions, one reading."""
    for group, entry in _object(_object(summary, field).get("groups"), f"{field}.groups").items():
        traits = _object(_object(entry, f"{field}.groups.{group}").get("traits", {}), f"{field}.groups.{group}.traits")
        for trait, conditions in traits.items():
            where = f"{field}.groups.{group}.traits.{trait}"
            for condition, figures in _object(conditions, where).items():
                if condition != "clean":  # the clean score is the reference, not a row of the plot
                    _check_figure(_object(_object(figures, f"{where}.{condition}").get(reading),
                                          f"{where}.{condition}.{reading}"), f"{where}.{condition}.{reading}")


def _check_figure(figure: dict, field: str) -> None:
    """delta and ci95 are finite numbers or None (no pairs); n counts the pairs."""
    _check(figure.get("delta") is None or _finite(figure["delta"]), f"{field}.delta",
           "a finite number or null", figure.get("delta"))
    ci95 = figure.get("ci95")
    _check(isinstance(ci95, list) and len(ci95) == 2 and all(v is None or _finite(v) for v in ci95),
           f"{field}.ci95", "a list of 2 finite numbers or nulls", ci95)
    _count(figure.get("n"), f"{field}.n")
