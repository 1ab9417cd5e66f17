"""Audit a box layer: how doubtful each box is, and which objects no box covers.

Every box gets independent opinions: the proposals' masks inside it (:mod:`jmlnet_geo.proposals`),
its look-alikes among the other boxes (:mod:`jmlnet_geo.audit_appearance`) and, with a model,
the predicted class map around it. Where they disagree with each other or
with the box, the box is doubtful. The pure functions here score one box from arrays; the
orchestration (reading scenes, boxes, proposal and prediction rasters, writing the GeoPackage)
is in :mod:`jmlnet_geo.audit_run`; the ``missing`` layer's objects in
:mod:`jmlnet_geo.audit_missing`.

Coordinate space: everything here is in the pixel space of one scene (or of a crop of it);
boxes are int (4,) ``col0, row0, col1, row1`` with the end exclusive
(:func:`jmlnet_geo.proposals.compose.pixel_boxes`). Class maps are uint8 class ids (0
background, 1..K classes, 255 ignore / nodata).

The doubt of a box is the largest of three parts, each in [0, 1]; its reason names the largest:

- ``class?``: the box looks like another class: the share of its look-alikes labelled with
  another class (appearance); with a model, the larger of that and the model's share of the
  dominant other class over the object pixels of the box's and that class (either opinion
  alone may see it: a layer of one class has no look-alike of another).
- ``empty?``: little inside the box is object: ``1 - object share / empty_share``, clipped;
  with proposals only, at least the share of the proposals that found nothing (below).
- ``extent?``: the object's extent is not the box's: ``1 -`` the IoU of the envelope of the
  predicted object (its connected component, which may reach past the box) with the box; with
  proposals only, the proposals' part below; in both cases at least the size part of the
  appearance opinion, ``|ln(side / look-alikes' side)| / ln 2`` clipped to 1 (a box twice or
  half the size of the boxes of its class that look like it scores 1).

A proposal that found nothing in a box is the filled box (the fallback of
:mod:`jmlnet_geo.proposals.compose`). When *every* proposal is the filled box, the box is
doubtful (``empty?`` 1): GrabCut falls back when the box holds nothing that differs from its
surroundings, which is what a box moved off its object, or shifted so that the object continues
past its sides, looks like (iSAID samples, corrupted layer: GrabCut filled 15 of 15 shifted
boxes and 32 of 246 clean ones; both GrabCut and the CRF 14 of 15 shifted, 30 of 246 clean).
One filled mask among others is not counted: the CRF fills the box of an object often (146 of
the 246 clean boxes). :func:`proposal_fallback` gives the share of filled masks;
``agreement``, ``fill`` and ``extent`` of a box whose proposals all fell back are not
computed (``fill`` is 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from jmlnet_geo.proposals.agreement import box_iou
from jmlnet_geo.vocabulary import BACKGROUND, IGNORE

#: The reasons, in the order they win ties.
REASONS = ("class?", "empty?", "extent?")


@dataclass(frozen=True)
class AuditOptions:
    """How boxes are scored and missing objects found.

    Attributes:
        margin: Context read around a box for the model's object, as a fraction of its larger
            side (the object's component may reach past a shifted or tight box).
        empty_share: A box whose object share is below this is (partly) ``empty?``.
        model_weight: With a model and proposals, the model's share of the extent doubt.
        min_pixels: ``missing``: smallest predicted component in pixels (None: per class, a
            quarter of the 5th percentile of its box areas, at least 4;
            :func:`jmlnet_geo.audit_missing.default_min_pixels`).
        min_score: ``missing``: smallest mean probability of the component's class (0-1).
        max_boxed_share: ``missing``: largest share of a component's pixels inside boxes.
        min_look_alike: ``missing``, with the appearance opinion: smallest share of a
            candidate's look-alikes labelled with its class (0-1).
        min_object_share: ``missing``: smallest candidate, as a share of the median size of
            the objects the model predicts in the boxes of its class (a fragment is smaller).
        aspect_slack: ``missing``: a candidate's envelope may be this factor more elongated
            (either way) than the most elongated box of its class (>= 1;
            :func:`jmlnet_geo.audit_missing.drop_misshapen`).
        appearance: Ask the appearance opinion (``class?`` without a model).
        look_alikes: Its look-alikes per box (``k`` of
            :func:`jmlnet_geo.audit_appearance.look_alike_votes`).
        size_weight: Its weight of the box size against the look.
    """

    margin: float = 0.5
    empty_share: float = 0.15
    model_weight: float = 0.75
    min_pixels: int | None = None
    min_score: float = 0.5
    max_boxed_share: float = 0.5
    min_look_alike: float = 0.5
    min_object_share: float = 0.25
    aspect_slack: float = 1.1
    appearance: bool = True
    look_alikes: int = 10
    size_weight: float = 0.3

    def check(self) -> None:
        """Raise :class:`jmlnet_geo.errors.OptionError` for out-of-range settings."""
        from jmlnet_geo.errors import OptionError

        if not 0 <= self.min_score <= 1:
            raise OptionError(f"--min-score {self.min_score}: give a probability in [0, 1]")
        if self.min_pixels is not None and self.min_pixels < 1:
            raise OptionError(f"--min-pixels {self.min_pixels}: give at least 1 pixel")
        if not self.aspect_slack >= 1:
            raise OptionError(f"aspect_slack {self.aspect_slack}: give a factor >= 1")
        if not 0 < self.empty_share <= 1:
            raise OptionError(f"--empty-share {self.empty_share}: give a share in (0, 1]")


@dataclass(frozen=True)
class ModelScores:
    """What the model says about one box (shares are of the box's pixels, 0-1).

    Attributes:
        class_share: Share predicted as the box's class.
        other_class: Class id of the dominant other object class (0 when none).
        other_share: Its share.
        object_share: Share predicted as any object class.
        extent_iou: IoU of the envelope of the predicted object component overlapping the box
            most with the box (0 when no object pixel is in the box).
    """

    class_share: float
    other_class: int
    other_share: float
    object_share: float
    extent_iou: float


def box_area(box: Sequence[int]) -> int:
    """Pixels of an int (4,) ``col0, row0, col1, row1`` box (end exclusive)."""
    c0, r0, c1, r1 = (int(v) for v in box)
    return max(0, c1 - c0) * max(0, r1 - r0)


def rect_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two ``col0, row0, col1, row1`` rectangles (end exclusive); 0 when both are empty."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, w) * max(0.0, h)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def envelope(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """``col0, row0, col1, row1`` (end exclusive) of the True pixels of a bool (H, W) mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def largest_component(mask: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
    """The 8-connected component of a bool (H, W) mask with the most pixels of ``weight``.

    ``weight`` (bool (H, W), default the mask itself) picks the component overlapping it most,
    e.g. the box. Returns an all-False mask when no component overlaps ``weight``.
    """
    count, labels = _label(mask)
    if count == 0:
        return np.zeros_like(mask, bool)
    counts = np.bincount(labels[weight if weight is not None else mask], minlength=count + 1)
    counts[0] = 0
    if counts.max() == 0:
        return np.zeros_like(mask, bool)
    return labels == int(counts.argmax())


def _label(mask: np.ndarray) -> tuple[int, np.ndarray]:
    """(number of components, int32 labels) of a bool mask, 8-connected (OpenCV)."""
    import cv2

    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    return count - 1, labels


def proposal_agreement(masks: Sequence[np.ndarray]) -> float:
    """Mean pairwise IoU of the proposals' bool (h, w) masks of one box; NaN with fewer than 2."""
    if len(masks) < 2:
        return math.nan
    ious = [box_iou(a, b) for i, a in enumerate(masks) for b in masks[i + 1 :]]
    return float(np.mean(ious))


def proposal_fallback(masks: Sequence[np.ndarray]) -> float:
    """Share of the proposals' bool (h, w) masks that are the whole box (they found nothing).

    NaN with no mask.
    """
    if not masks:
        return math.nan
    return float(np.mean([bool(np.asarray(m).all()) for m in masks]))


def proposal_fill(masks: Sequence[np.ndarray]) -> float:
    """Mean share of the box the proposals call object (bool (h, w) masks); NaN with none."""
    if not masks:
        return math.nan
    return float(np.mean([m.mean() if m.size else 0.0 for m in masks]))


def proposal_extent(masks: Sequence[np.ndarray]) -> float:
    """Mean IoU of the envelope of each mask's largest component with its box (the mask's frame).

    A loose box leaves margins around the object, a shifted one cuts it on two sides: both
    give envelopes smaller than the box. NaN with no mask.
    """
    if not masks:
        return math.nan
    values = []
    for m in masks:
        env = envelope(largest_component(np.asarray(m, bool)))
        values.append(0.0 if env is None else rect_iou(env, (0, 0, m.shape[1], m.shape[0])))
    return float(np.mean(values))


def model_scores(crop: np.ndarray, box: Sequence[int], class_id: int) -> ModelScores:
    """The model's opinion of one box from the predicted class map around it.

    Args:
        crop: uint8 (H, W) predicted class ids of a window holding the box (and context).
        box: int (4,) the box in the crop's pixels, ``col0, row0, col1, row1``, end exclusive.
        class_id: The box's class id (1..K).
    """
    c0, r0, c1, r1 = (int(v) for v in box)
    inside = crop[r0:r1, c0:c1]
    n = inside.size
    if n == 0:
        return ModelScores(0.0, 0, 0.0, 0.0, 0.0)
    counts = np.bincount(inside.ravel(), minlength=256).astype(np.float64)
    own = counts[class_id] / n
    others = counts.copy()
    others[[BACKGROUND, IGNORE, class_id]] = 0
    other = int(others.argmax()) if others.max() > 0 else 0
    other_share = others[other] / n if other else 0.0
    objects = (counts.sum() - counts[BACKGROUND] - counts[IGNORE]) / n
    foreground = (crop != BACKGROUND) & (crop != IGNORE)
    in_box = np.zeros_like(foreground)
    in_box[r0:r1, c0:c1] = True
    env = envelope(largest_component(foreground, foreground & in_box))
    extent = 0.0 if env is None else rect_iou(env, (c0, r0, c1, r1))
    return ModelScores(float(own), other, float(other_share), float(objects), extent)


def doubt(
    model: ModelScores | None,
    agreement: float = math.nan,
    fill: float = math.nan,
    extent: float = math.nan,
    options: AuditOptions = AuditOptions(),
    fallback: float = math.nan,
    appearance: float = math.nan,
    log_size_ratio: float = math.nan,
) -> tuple[float, str]:
    """A box's doubt in [0, 1] and its reason (see the module docstring).

    Args:
        model: The model's scores, or None (proposals only).
        agreement: :func:`proposal_agreement` (NaN: no opinion).
        fill: :func:`proposal_fill` (NaN: no opinion).
        extent: :func:`proposal_extent` (NaN: no opinion).
        options: Thresholds and weights.
        fallback: :func:`proposal_fallback` (NaN: not known); 1 (every proposal is the
            filled box) makes the proposals' parts 1.
        appearance: Share of the box's look-alikes with another class (NaN: no opinion).
        log_size_ratio: ln of the box's side over its same-class look-alikes' (NaN: none).

    Returns:
        (doubt, reason); (NaN, "") when nothing had an opinion.
    """

    def known(*values: float) -> list[float]:
        return [v for v in values if not math.isnan(v)]

    prop_extent = known(1.0 - extent, 1.0 - agreement)
    prop_part = float(np.mean(prop_extent)) if prop_extent else math.nan
    nothing = not math.isnan(fallback) and fallback >= 1.0
    if nothing:  # every proposal fell back to the filled box
        prop_part = 1.0
    parts = {}
    if not math.isnan(appearance):
        parts["class?"] = appearance
    if model is not None:
        pair = model.class_share + model.other_share
        model_class = model.other_share / pair if pair > 0.02 else 0.0
        parts["class?"] = max(known(model_class, appearance))
        parts["empty?"] = _empty(model.object_share, options.empty_share)
        model_part = 1.0 - model.extent_iou if model.object_share > 0 else 0.0
        if math.isnan(prop_part):
            parts["extent?"] = model_part
        else:
            w = options.model_weight
            parts["extent?"] = w * model_part + (1 - w) * prop_part
    else:
        if not math.isnan(fill):
            parts["empty?"] = _empty(fill, options.empty_share)
        if nothing:
            parts["empty?"] = 1.0
        if not math.isnan(prop_part):
            parts["extent?"] = prop_part
    if not math.isnan(log_size_ratio):
        size_part = min(abs(log_size_ratio) / math.log(2), 1.0)
        parts["extent?"] = max(parts.get("extent?", 0.0), size_part)
    if not parts:
        return math.nan, ""
    reason = max(REASONS, key=lambda r: (parts.get(r, -1.0), -REASONS.index(r)))
    return float(np.clip(parts[reason], 0.0, 1.0)), reason


def _empty(share: float, empty_share: float) -> float:
    return float(np.clip(1.0 - share / empty_share, 0.0, 1.0)) if empty_share > 0 else 0.0
