"""Loading J's parts from hub ids or local folders, with errors that say which weights are missing and what to do.

``load_parts`` reads the detector, the MLLM, W and the processor between them; ``JointModel.from_pretrained``
joins them, so this module never needs the model class and a subclass of it loads as itself.

Nothing is downloaded when ``HF_HUB_OFFLINE=1`` (or ``offline=True``); with no names at all the shipped toy
world is loaded, so every command works on a fresh machine without network.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from torch import nn

from owlens.models.alignment import Alignment, AlignmentConfig
from owlens.models.device import resolve_device, resolve_dtype
from owlens.models.processor import LLAVA_15_TEMPLATE, JointProcessor, check_grids

__all__ = ["CheckpointNotFoundError", "JointParts", "load_parts", "toy_checkpoints", "OWLENS_CONFIG"]

# Optional, beside an MLLM's weights: {"prompt_template": ...}; beside a detector's: {"vocabulary": [queries]}.
OWLENS_CONFIG = "owlens.json"
TOY_WEIGHTS = Path(__file__).resolve().parent.parent / "toyworld" / "weights"


class CheckpointNotFoundError(FileNotFoundError):
    """Weights for one part of J are not on disk and cannot be fetched."""


def toy_checkpoints() -> dict[str, Path]:
    """The shipped toy world's folders: owl, mllm, projector."""
    folders = {"owl": TOY_WEIGHTS / "owl", "mllm": TOY_WEIGHTS / "llava", "projector": TOY_WEIGHTS / "align"}
    missing = [str(p) for p in folders.values() if not p.is_dir()]
    if missing:
        raise CheckpointNotFoundError(
            f"the toy-world weights are missing ({', '.join(missing)}); reinstall owlens or rebuild them with "
            "`owlens toyworld train`"
        )
    return folders


def _offline(offline: bool | None) -> bool:
    if offline is not None:
        return offline
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def _looks_local(source: str) -> bool:
    # Hub ids are "name" or "org/name"; anything else that looks like a path is a folder the user meant.
    return source.startswith((".", "/", "~")) or source.count("/") > 1 or Path(source).expanduser().exists()


def _load(cls, source: str | Path, role: str, *, offline: bool, **kwargs):
    source = str(source)
    if _looks_local(source) and not Path(source).expanduser().is_dir():
        raise CheckpointNotFoundError(f"{role} weights not found: folder {source!r} does not exist; pass an "
                                      "existing folder or a hub id such as 'google/owlvit-base-patch32'")
    try:
        return cls.from_pretrained(str(Path(source).expanduser()) if _looks_local(source) else source,
                                   local_files_only=offline, **kwargs)
    except OSError as err:
        how = ("HF_HUB_OFFLINE is set, so only the local cache was searched; download it on a machine with "
               "network access (`hf download " + source + "`) and pass its folder") if offline else \
            "check the id, or download it where there is network access and pass the local folder"
        raise CheckpointNotFoundError(f"{role} weights {source!r} could not be loaded: {how}. ({err})") from err
    except (SafetensorError, RuntimeError, KeyError, TypeError, AttributeError) as err:
        # A damaged weight file, or a folder holding another kind of model (an OWL folder passed as --mllm).
        raise ValueError(f"{role} weights {source!r} could not be read as a {cls.__name__}: "
                         f"{type(err).__name__}: {err}") from err


def _owl_class(source: str, offline: bool):
    from transformers import AutoConfig, Owlv2ForObjectDetection, OwlViTForObjectDetection

    config = _load(AutoConfig, source, "detector (owl)", offline=offline)
    classes = {"owlvit": OwlViTForObjectDetection, "owlv2": Owlv2ForObjectDetection}
    if config.model_type not in classes:
        raise ValueError(f"the detector {source!r} is a {config.model_type!r} model; expected one of {sorted(classes)}")
    return classes[config.model_type]


def _owlens_settings(folder) -> dict:
    """The optional owlens.json beside a checkpoint's weights (hub ids have none)."""
    path = Path(str(folder)) / OWLENS_CONFIG
    if not path.is_file():
        return {}
    try:
        settings = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: expected a JSON object of owlens settings; cannot read it ({err})") from err
    if not isinstance(settings, dict):
        raise ValueError(f"{path}: expected a JSON object of owlens settings; received {type(settings).__name__}")
    return settings


@dataclass(frozen=True)
class JointParts:
    """What J is built from, read from disk or the hub: the two models and W in the requested dtype, the
    processor between them, the device they go to, and where each came from."""

    owl: nn.Module
    llava: nn.Module
    alignment: Alignment
    processor: JointProcessor
    device: torch.device
    sources: dict[str, str | None]  # role -> folder or hub id; a run folder fingerprints these files
    projector_folder: Path | None  # the folder W was read from, where its calibration lives (None: a fresh W)


def load_parts(owl=None, mllm=None, projector=None, *, dtype="auto", device="auto",
               offline: bool | None = None, init_projector: str | None = None, init_seed: int = 0) -> JointParts:
    """Read J's parts: an OWL detector, a LLaVA-family MLLM and a trained W (hub ids or folders).

    With none of the three named, the toy world shipped in the package. ``init_projector`` ("paper" or
    "light") makes a fresh, untrained W when ``projector`` is None — what the alignment trainer starts from.
    """
    from transformers import AutoImageProcessor, AutoTokenizer, LlavaForConditionalGeneration

    if owl is None and mllm is None and projector is None and init_projector is None:
        toy = toy_checkpoints()
        owl, mllm, projector = toy["owl"], toy["mllm"], toy["projector"]
    if owl is None or mllm is None:
        raise ValueError("name both checkpoints (owl= and mllm=), or none of them for the toy world")
    offline = _offline(offline)
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)

    owl_model = _load(_owl_class(str(owl), offline), owl, "detector (owl)", offline=offline, dtype=dtype)
    llava = _load(LlavaForConditionalGeneration, mllm, "MLLM (mllm)", offline=offline, dtype=dtype)
    grid = check_grids(owl_model.config, llava.config)
    if projector is not None:
        alignment = Alignment.from_pretrained(projector) if Path(str(projector)).is_dir() else None
        if alignment is None:
            raise CheckpointNotFoundError(f"alignment W folder {str(projector)!r} does not exist; train one with "
                                          "`owlens align train` or pass the folder it wrote")
    elif init_projector in ("paper", "light"):
        width_in = owl_model.config.vision_config.hidden_size
        width_out = llava.get_input_embeddings().weight.shape[1]
        with torch.random.fork_rng():  # a fresh W is the same W for the same seed, whatever ran before
            torch.manual_seed(init_seed)
            alignment = Alignment(getattr(AlignmentConfig, init_projector)(width_in, width_out))
    else:
        raise ValueError("no alignment W: pass projector=FOLDER, or init_projector='paper'|'light' to train one")

    owl_tokenizer = _load(AutoTokenizer, owl, "detector tokenizer", offline=offline)
    mllm_tokenizer = _load(AutoTokenizer, mllm, "MLLM tokenizer", offline=offline)
    owl_images = _load(AutoImageProcessor, owl, "detector image processor", offline=offline)
    llava_images = _load(AutoImageProcessor, mllm, "MLLM image processor", offline=offline)
    settings, owl_settings = _owlens_settings(mllm), _owlens_settings(owl)
    processor = JointProcessor(
        owl_images, JointProcessor.without_centre_crop(llava_images, llava.config.vision_config.image_size),
        owl_tokenizer, mllm_tokenizer, grid=grid, image_token_id=int(llava.config.image_token_id),
        prompt_template=settings.get("prompt_template", LLAVA_15_TEMPLATE),
        query_length=owl_model.config.text_config.max_position_embeddings,
        vocabulary=owl_settings.get("vocabulary"),
    )
    return JointParts(owl_model, llava, alignment.to(dtype), processor, device,
                      sources={"owl": str(owl), "mllm": str(mllm),
                               "projector": None if projector is None else str(projector)},
                      projector_folder=None if projector is None else Path(str(projector)).expanduser())
