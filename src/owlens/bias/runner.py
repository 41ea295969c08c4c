"""Run a bias benchmark spec over its image folders: incremental JSONL, resumable, with a progress bar.

Layout of the output folder:
    spec.json         the validated spec the records belong to, and the version of the controls they were measured
                      with (``probe.CONTROLS``): a resume with another spec, or by an owlens that measures the
                      controls otherwise, is refused
    fingerprint.json  the weights and the image listing (sizes, mtimes) the records come from: a resume with
                      another model, or after an image was added, changed or removed, is refused
    records.jsonl     one line per image: {"group", "image", "status": "ok"|"error", ...the probe's record}

Images go in fixed batches of the sorted folder listing; a batch's lines are written together and flushed,
so a killed run resumes at the first unfinished batch and redoes at most one, and the records stay in listing
order. A missing or corrupt image is recorded as an error line, reported in the summary, and skipped. One run
at a time holds the folder.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from owlens.bias.perturbation import encode_for
from owlens.bias.probe import CONTROLS, BiasProbe
from owlens.bias.scoring import TraitScorer
from owlens.bias.spec import BenchmarkSpec, GroupSpec
from owlens.bias.summary import BiasSummary, summarise
from owlens.hallucination.journal import Journal
from owlens.images import ImageReadError, load_image
from owlens.persist.atomic import atomic_write_json
from owlens.persist.fingerprint import FINGERPRINT, Fingerprint, claim, image_listing, model_weights
from owlens.persist.jsonl import read_jsonl
from owlens.persist.lock import folder_lock

__all__ = ["RECORDS", "SPEC_COPY", "read_records", "run_benchmark"]

RECORDS = "records.jsonl"
SPEC_COPY = "spec.json"


def read_records(path: str | Path) -> list[dict]:
    """The records of a JSONL file; a torn last line (a run killed mid-write) is ignored."""
    return read_jsonl(path)[0]


def _claim(out_dir: Path, spec: BenchmarkSpec) -> None:
    """Write spec.json, or check that the folder's records come from this very spec and way of measuring."""
    settings = {**json.loads(json.dumps(spec.to_dict())), "controls": CONTROLS}
    copy = out_dir / SPEC_COPY
    if copy.is_file():
        previous = json.loads(copy.read_text())
        if previous.get("controls", 1) != CONTROLS:
            raise ValueError(f"{out_dir} holds records whose controls were measured by an earlier owlens (controls "
                             f"version {previous.get('controls', 1)}, where the identity swap was the attack with "
                             f"C+ = C-; this one writes version {CONTROLS}); new records would not be comparable. "
                             "Pass a new --out folder; the records there are kept as they are")
        if previous != settings:
            changed = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
            raise ValueError(f"{out_dir} holds results of another spec (differs in {changed}); pass a new --out "
                             "folder, or delete this one to start over")
        return
    atomic_write_json(copy, settings)


def _run_batch(probe: BiasProbe, spec: BenchmarkSpec, group: GroupSpec, paths: list[Path], seed: int) -> list[dict]:
    records, images, names = [], [], []
    for path in paths:
        try:
            images.append(load_image(path))
            names.append(path.name)
        except ImageReadError as err:
            records.append({"group": group.name, "image": path.name, "status": "error", "error": str(err)})
    if images:
        embedding, state = encode_for(probe.model, probe.model.pixel_values(images), spec.perturbation.layer)
        assessed = probe.assess(embedding, group.c_minus, group.c_plus, spec.traits, batch_seed=seed,
                                null=group.c_null, state=state)
        records += [{"group": group.name, "image": name, "status": "ok", **r} for name, r in zip(names, assessed)]
    return records


def run_benchmark(model, spec: BenchmarkSpec, out_dir: str | Path, *, progress: bool = True) -> BiasSummary:
    """Measure every group of ``spec`` with J; returns {"spec", "groups", "errors"} (see ``summary``)."""

    out_dir = Path(out_dir).resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out: expected a folder; received the file {out_dir}")
    with folder_lock(out_dir):
        _claim(out_dir, spec)
        claim(out_dir / FINGERPRINT, Fingerprint(weights=model_weights(model), inputs={
            group.name: image_listing(group.images(), group.folder) for group in spec.groups}))
        return _run_locked(model, spec, out_dir, progress)


def _run_locked(model, spec: BenchmarkSpec, out_dir: Path, progress: bool) -> dict:
    from tqdm.auto import tqdm

    done = {(r["group"], r["image"]) for r in read_records(out_dir / RECORDS)}
    probe = BiasProbe(model, spec.perturbation.build(model, spec.owl_template),
                      TraitScorer(model, spec.prompt_template, max_new_tokens=spec.max_new_tokens),
                      random_seed=spec.random_seed)
    batches = [(group, index, paths[start:start + spec.batch_size])
               for group in spec.groups for paths in [group.images()]
               for index, start in enumerate(range(0, len(paths), spec.batch_size))]
    total = sum(len(b[2]) for b in batches)
    finished = sum(len(b[2]) for b in batches if all((b[0].name, p.name) in done for p in b[2]))
    # The journal drops a torn last line (a run killed mid-write) by truncating it, never by rewriting the file.
    with Journal(out_dir / RECORDS) as sink, tqdm(total=total, initial=finished, unit="image",
                                                   desc=f"bias {spec.name}", disable=not progress) as bar:
        for group, index, paths in batches:
            if all((group.name, p.name) in done for p in paths):
                continue
            # A batch cut short by a kill is redone whole (its records depend on the batch), and only the
            # records not yet written are appended: no image twice, the listing's order kept.
            for record in _run_batch(probe, spec, group, paths, index):
                if (record["group"], record["image"]) not in done:
                    sink.append(record)
            bar.update(len(paths))
    summary = summarise(read_records(out_dir / RECORDS), spec.traits, [g.name for g in spec.groups],
                        statistics=spec.statistics)
    return dataclasses.replace(summary, spec=spec.to_dict())
