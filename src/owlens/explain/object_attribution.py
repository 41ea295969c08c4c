"""Object attribution: OWL's boxes as the atoms of the explanation, weighted by the MLLM's own evidence.

What only the joint model can say: *which object* an output token rests on, named by what the detector reads
there. The atoms are OWL's boxes (all N of them, one per patch, or those left by non-maximum suppression over
their best score on a vocabulary of concepts), less the boxes whose best score on that vocabulary is under
``min_score`` (0.01: background, which names no concept; it also halves the encodings). An atom's weight is what
the explained raw logit loses without it, read through the whole of J (``weighting``):
- "pixels" (default): the atom's box is filled in the detector's input image with the image's per-channel median
  (the background, for most images: objects are a minority of pixels), OWL encodes the image again, W and the LM
  read it. An object is spread over many of E's tokens by OWL's attention, so this is the occlusion that takes it
  away; all atoms run batched, identical filled regions once.
- "occlusion": the tokens of E whose patch centre lies inside the box are replaced by the image's mean patch
  token (one LM forward for all atoms, no new encoding: cheaper, and weaker, because the other tokens still
  carry the object).
- "gradient": the explained logit's gradient mass on those tokens, Σ_i ‖∂ logit / ∂E_i‖.
The weight is the drop clipped at 0 and divided by the largest. With ``rounds=2`` (default, "pixels" only) the
heaviest atom's box stays filled and the other objects' drops are read again, one box per object: objects that
stand in for one another (two squares behind "square") lower the logit little alone, and the second round finds
the one the logit falls back on. An atom's weight is then the larger of its first-round weight and
``second_weight`` (0.5) times its second-round one, so the map's maximum stays on the first round's object and
the next objects rank before the rest. The map paints each atom's box with its weight, pixelwise max as GA
paints its boxes, plus ``tie_weight`` times the per-token gradient norm, so that inside a box the tokens the
logit depends on most come first (deletion and insertion read that order), plus ``centre_weight`` (1e-4) times
the pixelwise sum of the weighted boxes: pixels still equal after that (one patch of one box) are ordered by how
much box weight covers them, which peaks at an object's centre, not at its bounding box's corners. Last, the map
is multiplied by 1 + ``pixel_weight`` (1e-3) times each pixel's distance from the image's per-channel median
(scaled to [0, 1]; whenever the inputs hold the image, as "pixels" weighting needs): a box is a rectangle and an
object is not, so inside a plateau the object's own pixels come before the background around it (a cross fills
about half its box). The product reorders only pixels within 0.1% of each other.
The heaviest atoms are listed as ``Saliency.objects`` with their concept (the best query of the vocabulary over
the boxes that overlap the atom at IoU >= 0.5: a box predicted from a patch at an object's edge is named by the
object's best box) and the logit the MLLM gives without them. Listed atoms do not overlap one another at
IoU >= 0.5, so the list names distinct objects.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from owlens.boxes import box_iou
from owlens.explain._base import Explainer, grid_to_image
from owlens.explain._lm_pass import logit_gradients, padded_plans
from owlens.explain.maps import boxes_to_pixels, paint_boxes
from owlens.explain.saliency import ObjectEvidence, Saliency
from owlens.explain.targets import TokenPlan
from owlens.hallucination.vocabulary import coco_vocabulary
from owlens.models.language import position_ids
from owlens.models.postprocess import nms

__all__ = ["ObjectAttribution", "covered_tokens", "default_vocabulary", "pixel_contrast"]

ATOMS = ("nms", "all")
_SAME_OBJECT_IOU = 0.5
WEIGHTINGS = ("pixels", "occlusion", "gradient")
_ROWS = 32  # variants per forward: one chunk keeps memory flat on large images


def pixel_contrast(pixels: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """How unlike the background each pixel is: pixels (3, h, w) → (H, W) in [0, 1] at the map's ``shape``.

    The distance of each pixel from the image's per-channel median (the fill of a blanked box: the background of
    most images), resized to the map the way boxes are (normalised coordinates), scaled by its maximum.
    """
    values = pixels.detach().float().cpu()
    median = values.flatten(1).median(dim=1).values[:, None, None]
    contrast = (values - median).norm(dim=0)  # (h, w)
    contrast = torch.nn.functional.interpolate(contrast[None, None], size=shape, mode="nearest")[0, 0]
    return contrast / max(float(contrast.max()), 1e-12)


def default_vocabulary(model) -> tuple[str, ...]:
    """The detector's own query list when its checkpoint ships one (the toy world's 30), else COCO's 80 classes."""
    vocabulary = getattr(model.processor, "vocabulary", None)
    if vocabulary:
        return tuple(vocabulary)
    return tuple(f"a photo of a {name}" for name in coco_vocabulary().names)


def _distinct(order: list[int], overlap: torch.Tensor) -> list[int]:
    """Atom indices in ``order``, dropping any that overlaps (``overlap`` (A, A) bool) one kept before it."""
    kept: list[int] = []
    for a in order:
        if not any(bool(overlap[a, k]) for k in kept):
            kept.append(a)
    return kept


def covered_tokens(boxes_xyxy_px: torch.Tensor, grid: tuple[int, int], image_size: tuple[int, int]) -> torch.Tensor:
    """Boxes (A, 4) pixel corners in an image of ``image_size`` (width, height) → bool (A, N): the patches whose
    centre lies inside each box.

    A box is predicted by one patch (box a by patch a when A = N); a box too small to hold any centre covers
    the patch nearest its own centre, so that no atom is empty.
    """
    rows, cols = grid
    width, height = image_size
    r, c = torch.meshgrid(torch.arange(rows, dtype=torch.float64), torch.arange(cols, dtype=torch.float64),
                          indexing="ij")
    cx, cy = ((c + 0.5) * width / cols).flatten(), ((r + 0.5) * height / rows).flatten()  # (N,)
    x0, y0, x1, y1 = boxes_xyxy_px.double().unbind(-1)
    inside = ((cx >= x0[:, None]) & (cx < x1[:, None]) & (cy >= y0[:, None]) & (cy < y1[:, None]))  # (A, N)
    centre_x, centre_y = (x0 + x1) / 2, (y0 + y1) / 2
    nearest = ((cx - centre_x[:, None]) ** 2 + (cy - centre_y[:, None]) ** 2).argmin(-1)  # (A,)
    empty = ~inside.any(-1)
    inside[empty, nearest[empty]] = True
    return inside


def _median(pixels: torch.Tensor) -> torch.Tensor:
    """Pixels (3, H, W) → the per-channel median (3, 1, 1): the background, for most images."""
    return pixels.flatten(1).median(dim=1).values[:, None, None]


def _spans(pixels: torch.Tensor, boxes_cxcywh: torch.Tensor) -> torch.Tensor:
    """Boxes (A, 4) → the pixel spans (A, 4) x0, y0, x1, y1 they fill: the pixels whose centre lies inside, at
    least one."""
    height, width = pixels.shape[-2:]
    corners = boxes_to_pixels(boxes_cxcywh.double(), (width, height))
    low = torch.floor(corners[:, :2] + 0.5).clamp(min=0)
    high = torch.maximum(torch.floor(corners[:, 2:] + 0.5), low + 1)
    return torch.cat([low.clamp(max=torch.tensor([width - 1, height - 1])),
                      high.clamp(max=torch.tensor([width, height]))], -1).long()


def _fill(pixels: torch.Tensor, spans: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Pixels (3, H, W), spans (K, 4), fill (3, 1, 1) → (K, 3, H, W): the image with each span filled."""
    images = pixels.expand(len(spans), -1, -1, -1).clone()
    for image, (x0, y0, x1, y1) in zip(images, spans.tolist()):
        image[:, y0:y1, x0:x1] = fill
    return images


class ObjectAttribution(Explainer):
    """``ObjectAttribution(model).explain((image, prompt), target="star")`` → a map, and ``Saliency.objects``.

    vocabulary: the concepts that name a box (default ``default_vocabulary(model)``); atoms: "nms" (boxes
    suppressed at ``nms_iou``, at most ``max_atoms``) or "all" (every box); weighting: "pixels" (logit drop with
    the box filled in the image, which the inputs must then hold: ``ExplainInputs.from_images`` keeps it),
    "occlusion" (logit drop with the covered tokens of E replaced) or "gradient" (mass of ‖∂logit/∂E_i‖ on
    them); tie_weight: the share of the per-token gradient added to order tokens inside a box; top_objects: how
    many atoms ``objects`` lists; min_score: the best vocabulary score a box needs to be an atom; rounds: 2 to
    read the drops again with the heaviest atom filled ("pixels"), weighted by second_weight; centre_weight: the
    share of the summed box weights that orders pixels the rest leaves equal; pixel_weight: how much a pixel's
    distance from the image's median lifts it (orders a plateau by where the object's pixels are).
    """

    method = "object_attribution"

    def __init__(self, model, *, vocabulary: Sequence[str] | None = None, atoms: str = "all",
                 weighting: str = "pixels", nms_iou: float = 0.5, max_atoms: int = 8, tie_weight: float = 0.01,
                 top_objects: int = 3, min_score: float = 0.01, rounds: int = 2, second_weight: float = 0.5,
                 centre_weight: float = 1e-4, pixel_weight: float = 1e-3, **options):
        super().__init__(model, **options)
        if atoms not in ATOMS:
            raise ValueError(f"atoms must be one of {ATOMS}; received {atoms!r}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}; received {weighting!r}")
        if not 0 <= tie_weight < 1 or max_atoms < 1 or top_objects < 1 or not 0 < nms_iou <= 1:
            raise ValueError(f"expected 0 <= tie_weight < 1, max_atoms >= 1, top_objects >= 1, 0 < nms_iou <= 1; "
                             f"received {tie_weight}, {max_atoms}, {top_objects}, {nms_iou}")
        if rounds not in (1, 2) or not 0 <= min_score < 1 or not 0 < second_weight < 1 or not 0 <= centre_weight < 1:
            raise ValueError(f"expected rounds 1 or 2, 0 <= min_score < 1, 0 < second_weight < 1, 0 <= centre_weight "
                             f"< 1; received {rounds}, {min_score}, {second_weight}, {centre_weight}")
        self.vocabulary = tuple(vocabulary) if vocabulary is not None else default_vocabulary(model)
        if not self.vocabulary or not all(isinstance(v, str) and v.strip() for v in self.vocabulary):
            raise ValueError(f"expected a non-empty list of concept texts as the vocabulary; received "
                             f"{list(self.vocabulary)!r}")
        self.atoms, self.weighting, self.nms_iou, self.max_atoms = atoms, weighting, nms_iou, max_atoms
        self.tie_weight, self.top_objects = tie_weight, top_objects
        self.min_score, self.rounds, self.second_weight = min_score, rounds, second_weight
        if not 0 <= pixel_weight < 1:
            raise ValueError(f"expected 0 <= pixel_weight < 1; received {pixel_weight}")
        self.centre_weight, self.pixel_weight = centre_weight, pixel_weight
        self._query_embeds = None

    def _vocabulary_embeds(self) -> torch.Tensor:
        if self._query_embeds is None:  # the text encoder runs once per explainer, not once per image
            with torch.no_grad():
                self._query_embeds = self.model.query_embeds(list(self.vocabulary))
        return self._query_embeds

    def _explain(self, inputs, plans):
        if self.weighting == "pixels" and inputs.pixel_values is None:
            raise ValueError("object_attribution's 'pixels' weighting fills boxes in the image and encodes it "
                             "again, and these inputs hold only E: build them with ExplainInputs.from_images (or "
                             "pass pixel_values= to from_embedding), or use weighting='occlusion'")
        grads, logits = logit_gradients(self.model, inputs.embedding, plans)  # (B, L, 1+N, d), (B, L)
        relevance = grads[:, :, 1:].float().norm(dim=-1).cpu()  # (B, L, N)
        with torch.no_grad():
            detections = self.model.detect(inputs.embedding, self._vocabulary_embeds())
        scores = detections.scores.cpu()  # (B, N, C)
        boxes = detections.boxes_cxcywh.detach().float().cpu()  # (B, N, 4)
        pixels = inputs.pixel_values
        return [self._image(inputs.embedding[b], None if pixels is None else pixels[b], plan, relevance[b],
                            logits[b].float().cpu(), scores[b], boxes[b], inputs.image_sizes[b])
                for b, plan in enumerate(plans)]

    def _image(self, embedding, pixels, plan: TokenPlan, relevance, logits, scores, boxes, size) -> list[Saliency]:
        """One image: E (1+N, d), pixels (3, H, W) or None, relevance (L, N), logits (L,), scores (N, C), boxes
        (N, 4), size (width, height) → one map per token."""
        corners = boxes_to_pixels(boxes, size)  # (N, 4) float64
        overlap = box_iou(corners, corners) >= _SAME_OBJECT_IOU  # (N, N)
        # Name each box by the best query over the boxes that overlap it: (N, C) max over its neighbours.
        named = torch.where(overlap[:, :, None], scores[None].float(), 0.0).amax(1)
        best_score, best_concept = named.max(-1)  # (N,)
        if self.atoms == "nms":
            atoms = nms(corners, best_score, iou=self.nms_iou, max_keep=self.max_atoms)
        else:
            atoms = list(range(len(boxes)))
        own = scores.float().max(-1).values  # (N,) each box's own best concept score
        if self.min_score > 0:  # boxes the detector reads as none of the concepts are background, not objects
            atoms = [a for a in atoms if float(own[a]) >= self.min_score] or [int(own.argmax())]
        covered = covered_tokens(corners[atoms], self.model.grid, size)  # (A, N)
        mass = relevance @ covered.T.float()  # (L, A)
        listed = sorted({int(a) for row in mass for a in row.argsort(descending=True)[:4 * self.top_objects]})
        without = torch.full((len(plan.positions), len(atoms)), float("nan"))
        if self.weighting != "gradient":  # the drops are the weights: every atom's is needed
            listed = list(range(len(atoms)))
        if self.weighting == "pixels":
            without[:, listed] = self._filled(pixels, boxes[atoms][listed], plan).T
        else:
            without[:, listed] = self._occluded(embedding, plan, covered[listed]).T
        lift = None
        if self.pixel_weight > 0 and pixels is not None:
            lift = 1 + self.pixel_weight * pixel_contrast(pixels, (size[1], size[0]))  # (H, W)
        out = []
        for t in range(len(plan.positions)):
            raw = mass[t] if self.weighting == "gradient" else (logits[t] - without[t]).clamp(min=0)
            weights = raw / raw.max() if float(raw.max()) > 0 else torch.zeros_like(raw)
            first, second = int(raw.argmax()), torch.full((len(atoms),), float("nan"))  # (A,) logits, 2nd round
            if self.rounds == 2 and self.weighting == "pixels" and float(raw.max()) > 0:
                again, second = self._second_round(pixels, boxes[atoms], corners[atoms], own[atoms],
                                                   overlap[atoms][:, atoms], plan, t, first, without[t])
                weights = torch.maximum(weights, self.second_weight * again)
            token_map = relevance[t] / relevance[t].max() if float(relevance[t].max()) > 0 else relevance[t]
            canvas = paint_boxes(corners[atoms], weights, size) + self.tie_weight * grid_to_image(
                token_map, self.model.grid, size)
            if self.centre_weight > 0:
                total = paint_boxes(corners[atoms], weights, size, combine="sum")
                canvas = canvas + self.centre_weight * total / max(float(total.max()), 1e-12)
            if lift is not None:
                canvas = canvas * lift.to(canvas.dtype)
            peak = float(canvas.max())
            per_box = torch.zeros(len(boxes))
            per_box[atoms] = weights
            order = _distinct([a for a in weights.argsort(descending=True).tolist() if a in listed],
                              overlap[atoms][:, atoms])[:self.top_objects]
            objects = tuple(ObjectEvidence(
                index=atoms[a], box_cxcywh=tuple(boxes[atoms[a]].tolist()),
                box_xyxy_px=tuple(corners[atoms[a]].tolist()),
                concept=self.vocabulary[int(best_concept[atoms[a]])], concept_score=float(best_score[atoms[a]]),
                weight=float(weights[a]), tokens=int(covered[a].sum()), logit_without=float(without[t, a]),
                logit_drop=float(logits[t] - without[t, a]),
                logit_without_first=None if a == first or bool(second[a].isnan()) else float(second[a]))
                for a in order)
            out.append(Saliency(map=canvas / peak if peak > 0 else canvas, token=plan.tokens[t],
                                token_id=plan.token_ids[t], position=plan.positions[t], logit=float(logits[t]),
                                query=plan.queries[t], method=self.method, image_size=size, boxes_cxcywh=boxes,
                                class_weights=per_box, objects=objects))
        return out

    def _second_round(self, pixels, boxes_cxcywh, corners, own, overlap, plan: TokenPlan, t: int, first: int,
                      without) -> tuple[torch.Tensor, torch.Tensor]:
        """The atoms' drops (A,) with atom ``first`` (the heaviest) already filled, scaled to a maximum of 1 (0
        where none), and the logits (A,) they were read from (NaN for the first object's own boxes).

        Atoms overlapping the heaviest (``overlap`` (A, A), IoU >= 0.5) are its object, gone already: they read 0.
        The others are read once per object: non-maximum suppression over their own best score (``own``) keeps
        one box of each, and every atom takes the largest drop of the kept boxes it overlaps (it overlaps the one
        that suppressed it), which costs a handful of encodings instead of one per box.

        Objects that stand in for one another (two squares for "square") each lower the logit little alone; once
        the first is gone, the next one carries it. Deletion takes them away in that order, so the map ranks them
        so too. The fill stays the original image's median.
        """
        fill = _median(pixels)
        blanked = _fill(pixels, _spans(pixels, boxes_cxcywh[first:first + 1]), fill)[0]
        others = torch.nonzero(~overlap[first]).flatten()
        again, read = torch.zeros(len(boxes_cxcywh)), torch.full((len(boxes_cxcywh),), float("nan"))
        if len(others):
            kept = others[nms(corners[others], own[others], iou=_SAME_OBJECT_IOU, max_keep=len(others))]
            logits = self._filled(blanked, boxes_cxcywh[kept], plan, fill)[:, t]  # (K,)
            drop = torch.where(overlap[others][:, kept], (without[first] - logits).clamp(min=0)[None], -1.0)
            best = drop.argmax(-1)  # (O,) the kept box each atom overlaps with the largest drop
            again[others], read[others] = drop.gather(1, best[:, None])[:, 0].clamp(min=0), logits[best]
        return (again / again.max() if float(again.max()) > 0 else torch.zeros_like(again)), read

    @torch.no_grad()
    def _filled(self, pixels: torch.Tensor, boxes_cxcywh: torch.Tensor, plan: TokenPlan,
                fill: torch.Tensor | None = None) -> torch.Tensor:
        """Pixels (3, H, W), boxes (A, 4) → the plan's explained logits (A, L) with each box filled in the image.

        A box covers the pixels whose centre lies inside it (at least one); the fill is the image's per-channel
        median unless given. Boxes that fill the same pixels run once.
        """
        fill = _median(pixels) if fill is None else fill
        spans, rows = torch.unique(_spans(pixels, boxes_cxcywh), dim=0, return_inverse=True)
        logits = [self._read(plan, self.model.image_tokens(self.model.encode(_fill(pixels, spans[s:s + _ROWS], fill))))
                  for s in range(0, len(spans), _ROWS)]
        return torch.cat(logits)[rows.cpu()]

    @torch.no_grad()
    def _occluded(self, embedding: torch.Tensor, plan: TokenPlan, masks: torch.Tensor) -> torch.Tensor:
        """E (1+N, d), masks (K, N) → the plan's explained logits (K, L) with each mask's tokens replaced.

        Boxes predicted by the patches of one object cover the same tokens: each distinct mask runs once.
        """
        masks, rows = torch.unique(masks, dim=0, return_inverse=True)
        tokens = self.model.image_tokens(embedding[None])[0]  # (N, D): W is per token, so apply it once
        mean_token = embedding[1:].mean(0)[None, None].to(self.model.dtype)  # (1, 1, d)
        replacement = self.model.alignment(mean_token)[0, 0]  # (D,)
        variants = tokens.expand(len(masks), -1, -1).clone()  # (K, N, D)
        variants[masks.to(variants.device)] = replacement
        return self._read(plan, variants)[rows.cpu()]

    def _read(self, plan: TokenPlan, image_tokens: torch.Tensor) -> torch.Tensor:
        """Image tokens (K, N, D) of K variants of one image → the plan's explained raw logits (K, L)."""
        ids, mask, positions, token_ids, _ = padded_plans(self.model, [plan], image_tokens.device)
        count = len(image_tokens)
        embeds = self.model.language.embed(ids.expand(count, -1), image_tokens)
        keep = torch.unique(positions)
        if len(keep) == 1:  # one explained position: the LM runs up to it, its last layer there alone
            end = int(keep[0]) + 1
            logits = self.model.language.last_logits(embeds[:, :end], mask[:, :end].expand(count, -1))  # (K, V)
            return logits[:, token_ids[0]].float().cpu()
        output = self.model.language.llava(inputs_embeds=embeds, attention_mask=mask.expand(count, -1),
                                           position_ids=position_ids(mask).expand(count, -1), logits_to_keep=keep,
                                           use_cache=False)
        return output.logits[:, torch.searchsorted(keep, positions[0]), token_ids[0]].float().cpu()  # (K, L)
