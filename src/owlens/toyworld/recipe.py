"""The whole toy-world recipe, stage by stage: detector → LLaVA (tower, captions, instructions) → W.

Each stage trains into its own folder and resumes from its last checkpoint when rerun, so an interrupted
``owlens toyworld train`` continues where it stopped. ``ship=True`` copies the final weights into the
package (what every command loads when no checkpoint is named).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from owlens.models.loading import OWLENS_CONFIG, TOY_WEIGHTS
from owlens.persist.atomic import atomic_write_json
from owlens.persist.lock import folder_lock
from owlens.toyworld import train_align, train_llava, train_owl
from owlens.toyworld.owl_loss import QUERIES
from owlens.toyworld.text import PROMPT_TEMPLATE, owl_query

__all__ = ["STAGES", "train_all", "ship_weights", "SMOKE"]

STAGES = ("owl", "llava", "align")
SMOKE = {"owl_steps": 3, "llava_steps": 3, "align_scenes": 128}  # a few steps of every stage, for CI


def _write_prompt_template(llava_dir: Path) -> None:
    atomic_write_json(llava_dir / OWLENS_CONFIG, {"prompt_template": PROMPT_TEMPLATE})


def _write_vocabulary(owl_dir: Path) -> None:
    """The detector's 30 training queries beside its weights: the concepts ``object_attribution`` names boxes by."""
    atomic_write_json(owl_dir / OWLENS_CONFIG, {"vocabulary": [owl_query(c, s) for c, s in QUERIES]})


def train_all(out_dir: str | Path, *, seed: int = 0, smoke: bool = False, log=print) -> dict[str, Path]:
    """Run (or resume) every stage into ``out_dir``; returns the final folders {owl, mllm, projector}."""
    out_dir = Path(out_dir)
    with folder_lock(out_dir):  # two trainers on one folder would overwrite each other's checkpoints
        return _train_stages(out_dir, seed, smoke, log)


def _train_stages(out_dir: Path, seed: int, smoke: bool, log) -> dict[str, Path]:
    owl_steps = {"steps": SMOKE["owl_steps"]} if smoke else {}
    owl = out_dir / "owl" / "final"
    if not (owl / "config.json").exists():  # a finished stage is kept, as the LLaVA stages keep theirs
        owl = train_owl.train(out_dir / "owl", seed=seed, log=log, **owl_steps)
    _write_vocabulary(owl)
    recipe = train_llava.LlavaRecipe()
    if smoke:
        steps = SMOKE["llava_steps"]
        recipe = train_llava.LlavaRecipe(tower_steps=steps, caption_steps=steps, instruct_steps=steps)
    llava = train_llava.train(out_dir / "llava", seed=seed, recipe=recipe, log=log)
    _write_prompt_template(llava)
    scenes = {"scenes": SMOKE["align_scenes"]} if smoke else {}
    projector = train_align.train(out_dir / "align", owl_dir=owl, llava_dir=llava, seed=seed, log=log, **scenes)
    return {"owl": owl, "mllm": llava, "projector": projector}


def ship_weights(folders: dict[str, Path], destination: Path | None = None) -> Path:
    """Copy the final weights into the package (replacing what is there only once all three are copied)."""
    destination = Path(destination or TOY_WEIGHTS)
    staging = destination.with_name(destination.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    for name, source in (("owl", folders["owl"]), ("llava", folders["mllm"]), ("align", folders["projector"])):
        shutil.copytree(source, staging / name, ignore=shutil.ignore_patterns("*.pt", "checkpoint*"))
    _write_prompt_template(staging / "llava")
    shutil.rmtree(destination, ignore_errors=True)
    staging.rename(destination)
    return destination
