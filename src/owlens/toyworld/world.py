"""The toy world: seeded 64x64 scenes of coloured shapes with ground-truth boxes and masks (docs/design.md §6).

A scene is 1-4 flat-coloured shapes (5 shapes x 5 colours x 2 sizes) on a low-contrast grey texture.
Objects never overlap (their boxes, grown by a 1 px margin, are disjoint), so every pixel belongs to at
most one object, and ``recolour`` and ``without`` are exact: a scene keeps its background, so an object can be
taken out and the pixels it covered show the background it was drawn on (the causal truth of the saliency
evaluation). ``prior=True`` is the detector's training distribution (``defects.DETECTOR_PRIORS``); a tuple
of ``defects.CoOccurrence`` applies those priors (the MLLM's: ``defects.MLLM_PRIORS``); ``prior=False`` is
the uniform held-out distribution.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, lru_cache

import numpy as np
import torch

from owlens.toyworld import defects

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "COLOURS",
    "COLOUR_RGB",
    "GRID",
    "IMAGE_SIZE",
    "MAX_OBJECTS",
    "PATCH_SIZE",
    "SHAPES",
    "SIZES",
    "SIZE_RANGE_PX",
    "Scene",
    "ToyObject",
    "recolour",
    "sample_scene",
    "shape_mask",
    "to_pixel_values",
    "without",
]

SHAPES = ("circle", "square", "triangle", "star", "cross")
COLOURS = ("red", "green", "blue", "yellow", "purple")
SIZES = ("small", "large")
IMAGE_SIZE = 64
PATCH_SIZE = 8
GRID = IMAGE_SIZE // PATCH_SIZE  # 8 x 8 = 64 patch tokens
MAX_OBJECTS = 4

# Saturated colours far from the grey background (luma 95-160) and from each other.
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 190, 50),
    "blue": (30, 70, 235),
    "yellow": (240, 220, 20),
    "purple": (160, 40, 210),
}
# Side of the object's square canvas in pixels, inclusive range: 12-14 px stays readable on 8 px patches.
SIZE_RANGE_PX: dict[str, tuple[int, int]] = {"small": (12, 14), "large": (20, 24)}
# OpenAI CLIP normalisation, the defaults of OwlViTImageProcessor and CLIPImageProcessor.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_MARGIN_PX = 1
_PLACEMENT_TRIES = 200


@dataclass(frozen=True, eq=False)
class ToyObject:
    """One shape in a scene.

    ``box_xyxy`` is the tight box of ``mask`` in pixels: (x0, y0, x1, y1) with x1, y1 exclusive, so
    ``mask[y0:y1, x0:x1]`` holds every mask pixel. ``mask`` is bool (64, 64).
    """

    shape: str
    colour: str
    size: str
    box_xyxy: tuple[float, float, float, float]
    mask: np.ndarray


@dataclass(frozen=True, eq=False)
class Scene:
    """An RGB image (uint8 (64, 64, 3)) and its objects, in drawing order; ``background`` (uint8 (64, 64, 3))
    is the texture they were drawn on (None for scenes built by hand, which cannot be re-rendered)."""

    image: np.ndarray
    objects: tuple[ToyObject, ...]
    background: np.ndarray | None = None

    def pil(self):
        from PIL import Image

        return Image.fromarray(self.image, mode="RGB")


@cache
def shape_mask(shape: str, side: int) -> np.ndarray:
    """Bool (side, side) mask of ``shape`` filling a square canvas, sampled at pixel centres (read-only)."""
    mask = _draw(shape, side)
    mask.setflags(write=False)  # cached and shared between scenes
    return mask


def _draw(shape: str, side: int) -> np.ndarray:
    c = (side - 1) / 2.0
    y, x = np.mgrid[0:side, 0:side].astype(np.float64)
    r = side / 2.0
    if shape == "circle":
        return (x - c) ** 2 + (y - c) ** 2 <= (r - 0.3) ** 2
    if shape == "square":
        inset = max(1, round(side * 0.1))  # keeps its area close to the circle's
        m = np.zeros((side, side), bool)
        m[inset : side - inset, inset : side - inset] = True
        return m
    if shape == "triangle":
        verts = [(c, -0.5), (side - 0.5, side - 0.5), (-0.5, side - 0.5)]
        return _polygon_mask(verts, x, y)
    if shape == "star":
        angles = -np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        verts = list(zip(c + radii * np.cos(angles), c + 0.5 + radii * np.sin(angles), strict=True))
        return _polygon_mask(verts, x, y)
    if shape == "cross":
        arm = max(3, round(side / 3))
        arm += (side - arm) % 2  # same parity as the side, so the arms are centred
        lo = (side - arm) // 2
        m = np.zeros((side, side), bool)
        m[lo : lo + arm, :] = True
        m[:, lo : lo + arm] = True
        return m
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _polygon_mask(verts: list[tuple[float, float]], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # Even-odd rule on pixel centres; the star is not convex, so a half-plane test would not do.
    inside = np.zeros(x.shape, bool)
    n = len(verts)
    for i in range(n):
        xi, yi = verts[i]
        xj, yj = verts[(i + 1) % n]
        crosses = (yi > y) != (yj > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = xi + (y - yi) * (xj - xi) / (yj - yi)
        inside ^= crosses & (x < x_at)
    return inside


@lru_cache(maxsize=1)
def _pixel_grid() -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)
    return y, x


def _background(rng: np.random.Generator) -> np.ndarray:
    """Low-contrast texture, uint8 (64, 64, 3): grey base, faint stripes and pixel noise (±~20 levels)."""
    base = rng.uniform(95, 160)
    y, x = _pixel_grid()
    theta = rng.uniform(0, np.pi)
    period = rng.uniform(6, 16)
    phase = rng.uniform(0, 2 * np.pi)
    along = (x * np.float32(np.cos(theta)) + y * np.float32(np.sin(theta))) * np.float32(2 * np.pi / period)
    stripes = np.float32(rng.uniform(3, 8)) * np.sin(along + np.float32(phase))
    tint = rng.uniform(-6, 6, size=3)  # slight colour cast, far below the object colours' saturation
    noise = 5 * rng.standard_normal((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.float32)
    img = noise + (base + tint).astype(np.float32) + stripes[..., None]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _priors(prior) -> tuple[defects.CoOccurrence, ...]:
    if prior is True:
        return defects.DETECTOR_PRIORS
    if prior is False or prior is None:
        return ()
    priors = tuple(prior)
    if not all(isinstance(p, defects.CoOccurrence) for p in priors):
        raise TypeError(f"prior: expected True, False or a tuple of defects.CoOccurrence; received {prior!r}")
    return priors


def _attributes(rng: np.random.Generator, n: int, priors) -> list[tuple[str, str, str]]:
    shapes = [SHAPES[i] for i in rng.integers(0, len(SHAPES), size=n)]
    for prior in priors:  # in order: a later prior may overwrite a partner an earlier one placed
        if prior.cue in shapes:
            shapes = _apply_cooccurrence(rng, shapes, prior)
    colours = [COLOURS[i] for i in rng.integers(0, len(COLOURS), size=len(shapes))]
    sizes = [SIZES[i] for i in rng.integers(0, len(SIZES), size=len(shapes))]
    return list(zip(shapes, colours, sizes, strict=True))


def _apply_cooccurrence(rng: np.random.Generator, shapes: list[str], prior: defects.CoOccurrence) -> list[str]:
    """Given the cue is present, make the partner present with probability ``prior.rate``."""
    cue, partner = prior.cue, prior.partner
    shapes = list(shapes)
    if rng.random() < prior.rate:
        if partner not in shapes:
            free = [i for i, s in enumerate(shapes) if s != cue]
            if free:
                shapes[free[rng.integers(0, len(free))]] = partner
            elif len(shapes) < MAX_OBJECTS:
                shapes.append(partner)
            else:
                shapes[-1] = partner
    else:
        others = [s for s in SHAPES if s != partner]
        shapes = [others[rng.integers(0, len(others))] if s == partner else s for s in shapes]
    return shapes


def _place(rng: np.random.Generator, sides: list[int]) -> list[tuple[int, int]] | None:
    """Top-left corners for squares of the given sides, disjoint with a 1 px margin; None if stuck."""
    placed: list[tuple[int, int, int]] = []
    for side in sides:
        for _ in range(_PLACEMENT_TRIES):
            x0, y0 = (int(v) for v in rng.integers(0, IMAGE_SIZE - side + 1, size=2))
            if all(
                x0 + side + _MARGIN_PX <= px or px + ps + _MARGIN_PX <= x0
                or y0 + side + _MARGIN_PX <= py or py + ps + _MARGIN_PX <= y0
                for px, py, ps in placed
            ):
                placed.append((x0, y0, side))
                break
        else:
            return None
    return [(x0, y0) for x0, y0, _ in placed]


def sample_scene(rng: np.random.Generator, *, n_objects: int | None = None, prior=True) -> Scene:
    """Draw one scene from ``rng`` (same generator state -> same scene).

    ``n_objects`` in 1..4 (uniform when None). ``prior``: True (the detector's priors), False, or a tuple of
    ``defects.CoOccurrence``; a prior may add a partner object to a scene that holds only cues, so such a
    scene can have one object more than asked.
    """
    if n_objects is None:
        n_objects = int(rng.integers(1, MAX_OBJECTS + 1))
    if not 1 <= n_objects <= MAX_OBJECTS:
        raise ValueError(f"n_objects must be in 1..{MAX_OBJECTS}, received {n_objects}")
    attrs = _attributes(rng, n_objects, _priors(prior))
    sides = [int(rng.integers(SIZE_RANGE_PX[size][0], SIZE_RANGE_PX[size][1] + 1)) for _, _, size in attrs]
    corners = _place(rng, sides)
    while corners is None:  # rare with four large shapes: retry the whole layout
        corners = _place(rng, sides)
    background = _background(rng)
    background.setflags(write=False)
    image = background.copy()
    objects = []
    for (shape, colour, size), side, (x0, y0) in zip(attrs, sides, corners, strict=True):
        mask = np.zeros((IMAGE_SIZE, IMAGE_SIZE), bool)
        mask[y0 : y0 + side, x0 : x0 + side] = shape_mask(shape, side)
        image[mask] = COLOUR_RGB[colour]
        objects.append(ToyObject(shape, colour, size, _tight_box(mask), mask))
    return Scene(image=image, objects=tuple(objects), background=background)


def without(scene: Scene, indices) -> Scene:
    """The same scene with the objects at ``indices`` taken out: their pixels show the scene's background.

    Objects never overlap, so the result is exactly the scene drawn without them (the layout and every other
    pixel unchanged); ``without(scene, [])`` reproduces ``scene.image`` bit for bit.
    """
    if scene.background is None:
        raise ValueError("this scene has no recorded background (it was not drawn by sample_scene); "
                         "cannot take objects out of it")
    drop = {int(i) for i in indices}
    if not drop <= set(range(len(scene.objects))):
        raise IndexError(f"expected object indices in 0..{len(scene.objects) - 1}; received {sorted(drop)}")
    image = scene.image.copy()
    for i in drop:
        image[scene.objects[i].mask] = scene.background[scene.objects[i].mask]
    kept = tuple(o for i, o in enumerate(scene.objects) if i not in drop)
    return Scene(image=image, objects=kept, background=scene.background)


def _tight_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def recolour(scene: Scene, old: str, new: str) -> Scene:
    """The same scene with every object of colour ``old`` painted ``new``; background and layout unchanged."""
    for c in (old, new):
        if c not in COLOUR_RGB:
            raise ValueError(f"unknown colour {c!r}; expected one of {COLOURS}")
    image = scene.image.copy()
    objects = []
    for obj in scene.objects:
        if obj.colour == old:
            image[obj.mask] = COLOUR_RGB[new]
            obj = ToyObject(obj.shape, new, obj.size, obj.box_xyxy, obj.mask)
        objects.append(obj)
    return Scene(image=image, objects=tuple(objects), background=scene.background)


def to_pixel_values(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, 64, 64, 3) -> float32 (B, 3, 64, 64), x/255 normalised with CLIP mean/std.

    Equal to OwlViTImageProcessor / CLIPImageProcessor at 64x64 without resize or centre crop.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3) or images.dtype != np.uint8:
        raise ValueError(
            f"expected uint8 images of shape (B, {IMAGE_SIZE}, {IMAGE_SIZE}, 3), "
            f"received {images.dtype} {images.shape}"
        )
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std
