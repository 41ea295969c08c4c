"""run.json for every command's run folder, so that ``owlens report DIR`` renders any of them.

The demo writes its own (``demo.py``); these write the same schema (``rundir``) for the other commands:
POPE answers (the table and a few flagged questions with their boxes), a bias run (its plot from the summary's
numbers), the three evaluations (their figures as tables), ``explain`` and ``check`` (one image with its maps
or its objects). Each is written last: a folder whose run.json exists holds a complete run.
"""

from __future__ import annotations

from pathlib import Path

from owlens.hallucination.report import score_files
from owlens.images import ImageReadError, load_image
from owlens.persist import OutsideFolderError, confined
from owlens.persist.jsonl import read_jsonl
from owlens.rundir import POPE_COLUMNS, save_image, save_saliency, table, write_run

__all__ = ["bias_run", "check_run", "evaluation_run", "explain_run", "methods_table", "model_info", "pope_run"]

_FLAGGED_SHOWN = 6  # flagged questions drawn with their image and box
_FLAGGED_LISTED = 50  # flagged questions listed in a table


def model_info(model) -> dict:
    return {**{k: v for k, v in (getattr(model, "sources", None) or {}).items() if v}, "device": str(model.device)}


def _verdict_item(folder: Path, item_id: str, image, prompt: str, text: str, verdicts: list[dict]) -> dict:
    """An image with the objects an answer claims and the detector's verdict on each."""
    return {"id": item_id, "image": save_image(folder, item_id, image), "size": list(image.size),
            "answer": {"prompt": prompt, "text": text, "tokens": []},
            "detections": [{"query": v["name"], "score": v["presence"], "box_xyxy_px": list(v["box_xyxy_px"])}
                           for v in verdicts],
            "hallucination": {"objects": verdicts}}


def pope_run(folder: Path, answers: Path, questions: Path, images: Path, model, settings: dict) -> Path:
    """POPE's figures (when the questions carry labels), and the flagged questions: a few drawn, more listed."""
    rows = read_jsonl(answers)[0]
    try:
        scores = score_files(answers, questions).pope
        pope = {questions.stem: {c: float(getattr(scores, c)) for c in POPE_COLUMNS}}
    except (ValueError, ZeroDivisionError):  # no labels, or nothing answered yet: no figures to show
        pope = {}
    flagged = [r for r in rows if r.get("flag")]
    items = []
    for row in flagged[:_FLAGGED_SHOWN]:
        try:
            image = load_image(confined(images, row["image"], what="image"))
        except (ImageReadError, OutsideFolderError):
            continue
        verdict = {"name": row["object"], "grounded": row["presence"] >= row["threshold"],
                   "presence": row["presence"], "box_xyxy_px": list(row["box_xyxy_px"])}
        items.append(_verdict_item(folder, f"q{len(items)}", image, row["question"], row["answer"], [verdict]))
    listed = table(f"flagged answers ({len(flagged)} of {len(rows)})",
                   ("question_id", "image", "question", "answer", "label", "p_c", "flag_score"),
                   [[str(r["question_id"]), r["image"], r["question"], r["answer"], r.get("label"), r["presence"],
                     r["flag_score"]] for r in flagged[:_FLAGGED_LISTED]])
    return write_run(folder, {"title": f"POPE: {questions.name}", "items": items, "pope": pope, "tables": [listed],
                              "model": model_info(model), "settings": {**settings, "answers": str(answers)}})


def bias_run(folder: Path, result: dict, title: str, model, note: str = "") -> Path:
    """The plot from the summary's numbers, a table per group (images, unreadable, OWL's swap rate) and the bias
    net of each control (adversarial − control, image by image, expected score)."""
    groups = [[group, entry.get("n_images"), entry.get("n_errors"),
               entry.get("perturbations", {}).get("adversarial", {}).get("swap_rate")]
              for group, entry in result["groups"].items()]
    net = [[group, trait, control, f["expected"]["delta"], *f["expected"]["ci95"]]
           for group, entry in result["groups"].items() for trait, controls in (entry.get("net") or {}).items()
           for control, f in controls.items()]
    tables = [table("groups", ("group", "images", "unreadable", "OWL swap rate"), groups)]
    if net:
        tables.append(table("the bias net of each control (expected score)",
                            ("group", "trait", "net of", "delta", "CI low", "CI high"), net))
    return write_run(folder, {"title": title, "items": [], "bias": {"title": title, "summary": result, "note": note},
                              "tables": tables, "model": model_info(model)})


def evaluation_run(folder: Path, title: str, tables: list[dict], model, settings: dict, *, pope: dict | None = None,
                   bias: dict | None = None) -> Path:
    payload = {"title": title, "items": [], "tables": tables, "model": model_info(model), "settings": settings}
    if pope:
        payload["pope"] = pope
    if bias:
        payload["bias"] = bias
    return write_run(folder, payload)


def explain_run(folder: Path, image, prompt: str, saliencies: list, model, settings: dict) -> Path:
    """One image, the explained tokens, and each token's map."""
    tokens = [{"index": i, "token": s.token} for i, s in enumerate(saliencies)]
    maps = {}
    for i, saliency in enumerate(saliencies):
        maps.setdefault(saliency.method, {})[str(i)] = save_saliency(folder, "image", i, saliency)
    item = {"id": "image", "image": save_image(folder, "image", image), "size": list(image.size),
            "answer": {"prompt": prompt, "text": "".join(s.token for s in saliencies), "tokens": tokens},
            "saliency": maps}
    return write_run(folder, {"title": f"owlens explain: {prompt}", "items": [item], "model": model_info(model),
                              "settings": settings})


def check_run(folder: Path, image, result, model, settings: dict) -> Path:
    item = _verdict_item(folder, "image", image, result.prompt, result.answer, [o.to_dict() for o in result.objects])
    return write_run(folder, {"title": f"owlens check: {result.prompt}", "items": [item], "model": model_info(model),
                              "settings": settings})


def _rows(figures: dict, columns) -> list[list]:
    return [[name, *(entry.get(c) if isinstance(entry.get(c), (int, float, str)) or entry.get(c) is None else None
                     for c in columns)] for name, entry in figures.items()]


def methods_table(title: str, methods: dict) -> dict:
    """A table of methods × their numeric figures (the columns every method has)."""
    columns = [c for c in next(iter(methods.values()), {}) if all(
        isinstance(m.get(c), (int, float)) and not isinstance(m.get(c), bool) for m in methods.values())]
    return table(title, ("method", *columns), _rows(methods, columns))
