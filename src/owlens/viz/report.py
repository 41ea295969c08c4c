"""One self-contained HTML file from a run folder (issue 7): no network, images and maps inlined.

Maps are stored in the page as 8-bit values (round(255·v)) at no more than ``max_map_side`` pixels a side;
the page decodes a map only when its token is clicked and draws one item at a time, so a run of hundreds
of images stays usable. The toy world's 64×64 maps go in at full resolution.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from owlens.rundir import read_run

__all__ = ["ReportFile", "render_report"]

_ASSETS = Path(__file__).with_name("report_assets")
_TOP_BOXES = 5


@dataclass(frozen=True)
class ReportFile:
    path: Path
    size_bytes: int
    items: int


def _image_uri(path: Path) -> str:
    buffer = io.BytesIO()
    Image.open(path).convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _map_entry(folder: Path, base: str, max_side: int) -> dict:
    values = np.load(folder / f"{base}.npy")  # (H, W) in [0, 1]
    if max(values.shape) > max_side:
        scale = max_side / max(values.shape)
        size = (max(1, round(values.shape[1] * scale)), max(1, round(values.shape[0] * scale)))
        values = np.asarray(Image.fromarray(values.astype(np.float32), mode="F").resize(size, Image.BILINEAR))
    quantised = np.clip(np.rint(values * 255), 0, 255).astype(np.uint8)
    explanation = json.loads((folder / f"{base}.json").read_text())
    return {"shape": list(quantised.shape), "data": base64.b64encode(quantised.tobytes()).decode(),
            "query": explanation.get("query", ""), "boxes": _top_boxes(explanation)}


def _top_boxes(explanation: dict) -> list[dict]:
    weights, boxes = explanation.get("class_weights"), explanation.get("boxes_cxcywh")
    if not weights or not boxes:
        return []
    width, height = explanation["image_size"]
    order = sorted(range(len(weights)), key=lambda i: -weights[i])[:_TOP_BOXES]
    return [{"xyxy": [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height],
             "weight": weights[i], "label": f"box {i}: class weight {weights[i]:.2f}"}
            for i in order for cx, cy, w, h in [boxes[i]]]


def _item(folder: Path, item: dict, max_side: int) -> dict:
    maps = {method: {int(token): _map_entry(folder, base, max_side) for token, base in per_token.items()}
            for method, per_token in item.get("saliency", {}).items()}
    return {"id": item["id"], "image": _image_uri(folder / item["image"]), "size": item["size"],
            "answer": item["answer"], "detections": item.get("detections", []),
            "hallucination": item.get("hallucination"), "maps": maps}


def _definition_list(values: dict) -> str:
    def text(value) -> str:
        return html.escape(json.dumps(value) if isinstance(value, (dict, list)) else str(value))

    rows = "".join(f"<dt>{html.escape(str(k))}</dt><dd>{text(v)}</dd>" for k, v in values.items())
    return f"<dl>{rows}</dl>"


def _pope_table(pope: dict | None) -> str:
    if not pope:
        return ""
    columns = ("accuracy", "precision", "recall", "f1", "yes_ratio")
    head = "".join(f"<th>{c}</th>" for c in columns)
    rows = "".join(f"<tr><td>{html.escape(split)}</td>" + "".join(f"<td>{scores[c]:.3f}</td>" for c in columns)
                   + "</tr>" for split, scores in pope.items())
    return f'<section id="pope"><h2>POPE</h2><table><tr><th>split</th>{head}</tr>{rows}</table></section>'


def _bias_section(folder: Path, bias: dict | None) -> str:
    if not bias:
        return ""
    svg = (folder / bias["svg"]).read_text() if bias.get("svg") else ""
    note = html.escape(bias.get("note", ""))
    return f'<section id="bias" class="bias"><h2>Bias</h2>{svg}<p class="info">{note}</p></section>'


def render_report(run_dir: str | Path, out: str | Path | None = None, *, max_map_side: int = 256) -> ReportFile:
    """Render RUN_DIR/run.json into one HTML file (default RUN_DIR/report.html)."""
    folder = Path(run_dir)
    run = read_run(folder)
    data = {"items": [_item(folder, item, max_map_side) for item in run["items"]]}
    page = (_ASSETS / "report.html").read_text()
    footer = _definition_list({**{f"model.{k}": v for k, v in run.get("model", {}).items()},
                               **{f"settings.{k}": v for k, v in run.get("settings", {}).items()},
                               **{f"timings.{k}": v for k, v in run.get("timings", {}).items()}})
    filled = (page.replace("{{title}}", html.escape(run.get("title", "owlens run")))
              .replace("{{css}}", (_ASSETS / "report.css").read_text())
              .replace("{{pope}}", _pope_table(run.get("pope")))
              .replace("{{bias}}", _bias_section(folder, run.get("bias")))
              .replace("{{footer}}", footer)
              .replace("{{data}}", json.dumps(data).replace("</", "<\\/"))
              .replace("{{js}}", (_ASSETS / "report.js").read_text()))
    path = Path(out) if out else folder / "report.html"
    # The size is measured before its own few characters go in: exact to a dozen bytes.
    size = len(filled.encode())
    filled = filled.replace("{{size}}", f"{size / 1e6:.2f} MB")
    partial = path.with_name(path.name + ".partial")
    partial.write_text(filled)
    partial.replace(path)
    return ReportFile(path, path.stat().st_size, len(data["items"]))
