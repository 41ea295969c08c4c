"""One self-contained HTML file from a run folder: no network, images and maps inlined.

Maps are stored in the page as 8-bit values (round(255·v)) at no more than ``max_map_side`` pixels a side;
the page decodes a map only when its token is clicked and draws one item at a time, so a run of hundreds
of images stays usable. The toy world's 64×64 maps go in at full resolution.

A run folder may come from someone else, so nothing in it can put markup or script into the page: every text
goes in through ``_text`` (HTML-escaped) or inside the JSON data block (``_script_json``), the template's slots
are filled in one pass (a value is never scanned for slots), the bias plot is drawn here from the numbers in
run.json (never pasted from an .svg file), and ``read_run`` keeps every file it names inside the folder.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from owlens.boxes import cxcywh_to_xyxy
from owlens.images import ImageReadError, load_image
from owlens.persist import atomic_write_bytes
from owlens.rundir import POPE_COLUMNS, RunFormatError, read_run, read_saliency, run_path
from owlens.viz.bias_plot import bias_plot_svg

__all__ = ["ReportFile", "render_report"]

_ASSETS = Path(__file__).with_name("report_assets")
_TOP_BOXES = 5
_SLOT = re.compile(r"\{\{(\w+)\}\}")
# Inside <script> the HTML parser ends the block at "</script" and treats "<!--" specially; JavaScript once
# ended lines at U+2028/U+2029. JSON's own \u escapes keep the text and JSON.parse gives it back unchanged.
_SCRIPT_SAFE = str.maketrans({c: f"\\u{ord(c):04x}" for c in "<>&\u2028\u2029"})


@dataclass(frozen=True)
class ReportFile:
    path: Path
    size_bytes: int
    items: int


def _text(value) -> str:
    """The one way a text from the run enters the page's HTML."""
    return html.escape(str(value), quote=True)


def _script_json(data) -> str:
    """JSON that cannot end or confuse its <script type="application/json"> block."""
    return json.dumps(data, allow_nan=False).translate(_SCRIPT_SAFE)


def _fill(template: str, slots: dict[str, str]) -> str:
    """Every {{slot}} of the template replaced in one pass: a value is never scanned again."""
    return _SLOT.sub(lambda match: slots[match.group(1)], template)


def _image_uri(folder: Path, name: str, field: str) -> str:
    try:
        image = load_image(run_path(folder, name, field))
    except ImageReadError as err:
        raise RunFormatError(f"{field}: {err}") from None
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _map_entry(folder: Path, base: str, field: str, max_side: int) -> dict:
    values, explanation = read_saliency(folder, base, field)  # (H, W) in [0, 1]
    if max(values.shape) > max_side:
        scale = max_side / max(values.shape)
        size = (max(1, round(values.shape[1] * scale)), max(1, round(values.shape[0] * scale)))
        values = np.asarray(Image.fromarray(values.astype(np.float32), mode="F").resize(size, Image.BILINEAR))
    quantised = np.clip(np.rint(values * 255), 0, 255).astype(np.uint8)
    return {"shape": list(quantised.shape), "data": base64.b64encode(quantised.tobytes()).decode(),
            "query": explanation.get("query") or "", "boxes": _top_boxes(explanation),
            "objects": _objects(explanation)}


def _objects(explanation: dict) -> list[dict]:
    """The objects an object-level explanation rests on, as lines the page shows as text (escaped by the DOM)."""
    out = []
    for obj in explanation.get("objects") or []:
        concept = re.sub(r"^a photo of (an?|the) ", "", obj["concept"])
        out.append({"xyxy": obj["box_xyxy_px"],
                    "text": f"rests on the object OWL reads as “{concept}” (p {obj['concept_score']:.2f}); "
                            f"without it the logit goes {obj['logit_without'] + obj['logit_drop']:.1f} → "
                            f"{obj['logit_without']:.1f}"
                            + ("" if obj.get("logit_without_first") is None else
                               f", {obj['logit_without_first']:.1f} with the first object gone too")})
    return out


def _top_boxes(explanation: dict) -> list[dict]:
    weights, boxes = explanation.get("class_weights"), explanation.get("boxes_cxcywh")
    if not weights or not boxes:
        return []
    order = sorted(range(len(weights)), key=lambda i: -weights[i])[:_TOP_BOXES]
    corners = cxcywh_to_xyxy(np.asarray(boxes, dtype=np.float64), tuple(explanation["image_size"])).tolist()
    return [{"xyxy": corners[i], "weight": weights[i], "label": f"box {i}: class weight {weights[i]:.2f}"}
            for i in order]


def _item(folder: Path, item: dict, field: str, max_side: int) -> dict:
    maps = {method: {int(token): _map_entry(folder, base, f"{field}.saliency.{method}.{token}", max_side)
                     for token, base in per_token.items()}
            for method, per_token in item.get("saliency", {}).items()}
    return {"id": item["id"], "image": _image_uri(folder, item["image"], f"{field}.image"), "size": item["size"],
            "answer": item["answer"], "detections": item.get("detections", []),
            "hallucination": item.get("hallucination"), "maps": maps}


def _definition_list(values: dict) -> str:
    def shown(value):
        return json.dumps(value) if isinstance(value, (dict, list)) else value

    rows = "".join(f"<dt>{_text(k)}</dt><dd>{_text(shown(v))}</dd>" for k, v in values.items())
    return f"<dl>{rows}</dl>"


def _pope_table(pope: dict | None) -> str:
    if not pope:
        return ""
    head = "".join(f"<th>{c}</th>" for c in POPE_COLUMNS)
    rows = "".join(f"<tr><td>{_text(split)}</td>" + "".join(f"<td>{scores[c]:.3f}</td>" for c in POPE_COLUMNS)
                   + "</tr>" for split, scores in pope.items())
    return f'<section id="pope"><h2>POPE</h2><table><tr><th>split</th>{head}</tr>{rows}</table></section>'


def _bias_section(bias: dict | None) -> str:
    """The plot drawn from the summary's numbers (checked by ``read_run``); an older run's bias.svg is not read."""
    if not bias:
        return ""
    figure = bias_plot_svg(bias["summary"], title=bias.get("title")) if bias.get("summary") else ""
    note = _text(bias.get("note", ""))
    return f'<section id="bias" class="bias"><h2>Bias</h2>{figure}<p class="info">{note}</p></section>'


def _cell(value) -> str:
    return "" if value is None else _text(f"{value:.4g}" if isinstance(value, float) else value)


def _tables(tables: list) -> str:
    """Each table of run.json as written; every cell goes in through ``_text``."""
    sections = []
    for entry in tables:
        head = "".join(f"<th>{_text(c)}</th>" for c in entry["columns"])
        rows = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in entry["rows"])
        sections.append(f'<section class="table"><h2>{_text(entry["title"])}</h2><table><tr>{head}</tr>{rows}'
                        "</table></section>")
    return "".join(sections)


def _sized(template: str, slots: dict[str, str]) -> str:
    """The page with its own size in it: measured without the size text, plus that text's own few bytes."""
    base = len(_fill(template, {**slots, "size": ""}).encode())
    size = f"{(base + len(f'{base / 1e6:.2f} MB')) / 1e6:.2f} MB"
    return _fill(template, {**slots, "size": size})


def render_report(run_dir: str | Path, out: str | Path | None = None, *, max_map_side: int = 256) -> ReportFile:
    """Render RUN_DIR/run.json into one HTML file (default RUN_DIR/report.html)."""
    folder = Path(run_dir)
    run = read_run(folder)
    data = {"items": [_item(folder, item, f"items[{i}]", max_map_side) for i, item in enumerate(run["items"])]}
    footer = _definition_list({**{f"model.{k}": v for k, v in run.get("model", {}).items()},
                               **{f"settings.{k}": v for k, v in run.get("settings", {}).items()},
                               **{f"timings.{k}": v for k, v in run.get("timings", {}).items()}})
    filled = _sized((_ASSETS / "report.html").read_text(), {
        "title": _text(run.get("title", "owlens run")), "css": (_ASSETS / "report.css").read_text(),
        "pope": _pope_table(run.get("pope")), "bias": _bias_section(run.get("bias")),
        "tables": _tables(run.get("tables", [])), "footer": footer,
        "data": _script_json(data), "js": (_ASSETS / "report.js").read_text()})
    path = Path(out) if out else folder / "report.html"
    atomic_write_bytes(path, filled.encode())
    return ReportFile(path, path.stat().st_size, len(data["items"]))
