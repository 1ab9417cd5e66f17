"""The audit's ``missing`` layer: predicted objects that no box accounts for.

A candidate is a connected component of the predicted class map *of one class* (a plane
predicted partly as a storage tank is two components, so the plane's part is not lost in a
mixed blob) that

- is not the component of any box: for every box, the component with the most pixels inside
  it is that box's object, wherever its pixels spill;
- lies mostly outside every box (at most ``max_boxed_share`` of its pixels inside boxes: an
  unboxed object overlapping a neighbour's loose axis-aligned box still counts);
- has at least the class's ``min_pixels`` (:func:`default_min_pixels`: a quarter of the 5th
  percentile of the box areas *of that class*, so a fragment of a plane is not taken for an
  object the size of a car) and a mean class probability of at least ``min_score``.

Candidates whose envelopes mostly cover each other (intersection over the smaller envelope
>= :data:`DUPLICATE`) are one object: the better scored is kept. Over the whole layer,
:mod:`jmlnet_geo.audit_run` then drops pieces (:func:`drop_fragments`: smaller than a quarter
of the median object the model predicts in the boxes of the class), candidates shaped like no
box of their class (:func:`drop_misshapen`) and, with the appearance opinion, candidates that
look like too few boxes of their class
(:func:`jmlnet_geo.audit_appearance.candidate_look_alikes`).

Measured with ``bench/audit.py`` (models trained on the corrupted layers, 5 % of the boxes
deleted; recall of the deleted boxes at the candidates' precision): before (any component
touching a box left out, one size floor for all classes, components mixing classes) 57.9 % at
57.9 % (NWPU, 40 images) and 57.1 % at 100 % (iSAID P0005), corruption seed 0; with these rules
63.2 % at 66.7 % and 71.4 % at 83.3 % (seed 0), 63.2 % at 48.0 % and 85.7 % at 75.0 % (seed 1);
with the shape rule too, NWPU 63.2 % at 70.6 % (seed 0) and 54.5 % (seed 1), iSAID unchanged.
The rules were chosen on these layers; on seed 2, looked at only after them, NWPU 89.5 % at
68.0 % and iSAID 85.7 % at 100 % (BENCHMARKS.md, "Audit of a corrupted box layer").

Coordinate space: one scene's pixels; boxes are int (N, 4) ``col0, row0, col1, row1``, end
exclusive (:func:`jmlnet_geo.proposals.compose.pixel_boxes`); class maps are uint8 class ids
(0 background, 1..K classes, 255 ignore / nodata).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from jmlnet_geo.io.vector import SceneBoxes
from jmlnet_geo.vocabulary import BACKGROUND, IGNORE

#: Two candidates whose envelopes overlap by this share of the smaller one are one object.
DUPLICATE = 0.5


@dataclass(frozen=True)
class Component:
    """A predicted object no box accounts for (a ``missing`` candidate), in scene pixels.

    Attributes:
        box: int (4,) envelope ``col0, row0, col1, row1``, end exclusive.
        class_id: Its class id (1..K).
        score: Mean predicted probability of that class over its pixels (0-1).
        pixels: Its size in pixels.
        looks_like: Share of its look-alikes among the boxes labelled with its class (0-1;
            NaN: not asked).
    """

    box: tuple[int, int, int, int]
    class_id: int
    score: float
    pixels: int
    looks_like: float = float("nan")


@dataclass(frozen=True)
class SceneObjects:
    """What the predicted class map of one scene says about its boxes' objects.

    Attributes:
        missing: The candidates (:func:`scan_objects`), best score first.
        own_pixels: int64 (N,) the pixels of each box's predicted object (the component of its
            class with most pixels in the box, counted whole wherever it spills); 0 when none.
    """

    missing: list[Component]
    own_pixels: np.ndarray


def scan_objects(
    classes: np.ndarray,
    probabilities: np.ndarray | None,
    boxes: np.ndarray,
    class_ids: np.ndarray,
    min_pixels: int | Sequence[int] | np.ndarray,
    min_score: float,
    max_boxed_share: float = 0.5,
) -> SceneObjects:
    """Predicted objects that no box accounts for, and the size of each box's own object.

    Each predicted class is labelled once (8-connected components) for both.

    Args:
        classes: uint8 (H, W) predicted class ids of a scene (0 background, 255 nodata).
        probabilities: uint8 (K+1, H, W) class probabilities x 255 (background first), or None
            (each component's score is then 1); anything indexable by class id giving (H, W).
        boxes: int (N, 4) the scene's boxes, ``col0, row0, col1, row1``, end exclusive.
        class_ids: int (N,) their class ids 1..K.
        min_pixels: Components with fewer pixels are left out: one number for every class, or
            int (K+1,) one per class id (:func:`default_min_pixels`).
        min_score: Components whose mean class probability is lower are left out.
        max_boxed_share: Components with a larger share of their pixels inside boxes are left
            out.
    """
    import cv2

    boxes = np.asarray(boxes, np.int64).reshape(-1, 4)
    ids = np.asarray(class_ids, np.int64).reshape(-1)
    boxed = np.zeros(classes.shape, bool)
    for c0, r0, c1, r1 in boxes:
        boxed[max(r0, 0) : r1, max(c0, 0) : c1] = True
    own_pixels = np.zeros(len(boxes), np.int64)
    found = []
    for class_id in np.unique(classes):
        if class_id in (BACKGROUND, IGNORE):
            continue
        count, labels, stats, _ = cv2.connectedComponentsWithStats(
            (classes == class_id).astype(np.uint8), connectivity=8, ltype=cv2.CV_32S
        )
        areas = stats[:, cv2.CC_STAT_AREA]
        owner = _own_labels(labels, boxes)  # each box's own object of this class
        mine = ids == class_id
        own_pixels[mine] = np.where(owner[mine] > 0, areas[owner[mine]], 0)
        keep = np.bincount(labels[boxed], minlength=count) <= max_boxed_share * areas
        keep &= areas >= _floor(min_pixels, int(class_id))
        keep[owner] = False  # a box's own object, wherever it spills
        keep[0] = False  # label 0: not this class
        for index in np.flatnonzero(keep):
            left, top, width, height, pixels = (int(v) for v in stats[index])
            where = (slice(top, top + height), slice(left, left + width))
            score = 1.0
            if probabilities is not None:
                own = labels[where] == index
                score = float(probabilities[int(class_id)][where][own].mean() / 255.0)
            if score >= min_score:
                box = (left, top, left + width, top + height)
                found.append(Component(box, int(class_id), score, pixels))
    ranked = sorted(found, key=lambda c: (-c.score, -c.pixels))
    return SceneObjects(_one_per_object(ranked), own_pixels)


def _own_labels(labels: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """int64 (N,): per box, the label (> 0) with most pixels inside it; 0 when none."""
    out = np.zeros(len(boxes), np.int64)
    for i, (c0, r0, c1, r1) in enumerate(boxes):
        region = labels[max(r0, 0) : r1, max(c0, 0) : c1]
        region = region[region > 0]
        if region.size:  # counted over the box only, not over every label of the scene
            values, counts = np.unique(region, return_counts=True)
            out[i] = values[counts.argmax()]
    return out


def _floor(min_pixels: int | Sequence[int] | np.ndarray, class_id: int) -> int:
    if np.ndim(min_pixels) == 0:
        return int(min_pixels)
    floors = np.asarray(min_pixels)
    return int(floors[class_id]) if class_id < len(floors) else int(floors.max())


def _one_per_object(ranked: list[Component]) -> list[Component]:
    """Drop a candidate whose envelope mostly covers (or is covered by) a better one's."""
    kept: list[Component] = []
    for comp in ranked:
        if not any(_cover(comp.box, other.box) >= DUPLICATE for other in kept):
            kept.append(comp)
    return kept


def _cover(a: Sequence[int], b: Sequence[int]) -> float:
    """Intersection of two envelopes over the smaller one's area."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return max(0, w) * max(0, h) / smaller if smaller > 0 else 0.0


def default_min_pixels(boxes: np.ndarray, class_ids: np.ndarray | None = None) -> np.ndarray:
    """Per class id: a quarter of the 5th percentile of that class's box areas, >= 4 pixels.

    Args:
        boxes: int (N, 4) boxes (every scene's, in its pixels).
        class_ids: int (N,) their class ids 1..K (None: one class).

    Returns:
        int64 (K+1,) indexed by class id; a class without boxes (and index 0) gets the floor of
        all boxes together.
    """
    boxes = np.asarray(boxes, np.int64).reshape(-1, 4)
    ids = np.ones(len(boxes), np.int64) if class_ids is None else np.asarray(class_ids, np.int64)
    areas = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)

    def floor(a: np.ndarray) -> int:
        return max(4, int(0.25 * np.percentile(a, 5))) if a.size else 4

    floors = np.full(int(ids.max(initial=0)) + 1, floor(areas), np.int64)
    for class_id in np.unique(ids):
        floors[class_id] = floor(areas[ids == class_id])
    return floors


def layer_min_pixels(scene_boxes: Sequence[SceneBoxes]) -> np.ndarray:
    """:func:`default_min_pixels` over the boxes of every scene (a class may be rare in one)."""
    from jmlnet_geo.proposals.compose import pixel_boxes

    if not scene_boxes:
        return default_min_pixels(np.zeros((0, 4)))
    boxes = np.concatenate([pixel_boxes(sb).reshape(-1, 4) for sb in scene_boxes])
    return default_min_pixels(boxes, np.concatenate([sb.class_ids for sb in scene_boxes]))


def drop_fragments(
    missing: Sequence[list[Component]],
    class_ids: Sequence[np.ndarray],
    own_pixels: Sequence[np.ndarray],
    share: float,
) -> list[list[Component]]:
    """Per scene, the candidates of at least ``share`` x the median object of their class.

    The median is over every scene's boxes of the class whose predicted object was found
    (:attr:`SceneObjects.own_pixels`); a class with none keeps its candidates. A weak model predicts
    pieces of objects beside the boxed ones; a piece is much smaller than the model's whole
    objects of that class.
    """
    ids, own = _joined(class_ids), _joined(own_pixels)
    typical = {int(c): float(np.median(own[(ids == c) & (own > 0)]))
               for c in np.unique(ids[own > 0])}  # fmt: skip
    return [[c for c in scene if c.pixels >= share * typical.get(c.class_id, 0.0)]
            for scene in missing]  # fmt: skip


#: A class with fewer boxes than this keeps every candidate in :func:`drop_misshapen` (the
#: shapes its boxes span are too few to say what it never looks like).
SHAPE_MIN_BOXES = 10


def drop_misshapen(
    missing: Sequence[list[Component]],
    boxes: Sequence[np.ndarray],
    class_ids: Sequence[np.ndarray],
    slack: float,
) -> list[list[Component]]:
    """Per scene, the candidates whose envelope is shaped like the boxes of their class.

    A candidate whose width / height lies outside the range spanned by every scene's boxes of
    its class, widened by ``slack`` at both ends (``slack`` 1.1: up to 10 % more elongated than
    the most elongated box), is dropped: a strip of "airplane" along an apron edge is shaped
    like no airplane anyone boxed. Classes with fewer than :data:`SHAPE_MIN_BOXES` boxes keep
    their candidates.

    Args:
        missing: Per scene, its candidates (boxes in that scene's pixels).
        boxes: Per scene, int (N, 4) its boxes ``col0, row0, col1, row1`` (pixels).
        class_ids: Per scene, int (N,) their class ids 1..K.
        slack: Widening of the range, as a factor (>= 1).
    """
    boxes_all = np.concatenate([np.asarray(b, np.float64).reshape(-1, 4) for b in boxes]
                               or [np.zeros((0, 4))])  # fmt: skip
    ids = _joined(class_ids)
    aspect = _log_aspect(boxes_all)
    ranges = {}
    for c in np.unique(ids):
        mine = aspect[(ids == c) & np.isfinite(aspect)]
        if mine.size >= SHAPE_MIN_BOXES:
            ranges[int(c)] = (mine.min() - np.log(slack), mine.max() + np.log(slack))

    def shaped(comp: Component) -> bool:
        low, high = ranges.get(comp.class_id, (-np.inf, np.inf))
        return bool(low <= _log_aspect(np.asarray([comp.box], np.float64))[0] <= high)

    return [[c for c in scene if shaped(c)] for scene in missing]


def _joined(per_scene: Sequence[np.ndarray]) -> np.ndarray:
    """int64 (sum of n_i,): per-scene int arrays end to end (empty without scenes)."""
    return np.concatenate([np.asarray(a, np.int64).reshape(-1) for a in per_scene]
                          or [np.zeros(0, np.int64)])  # fmt: skip


def _log_aspect(boxes: np.ndarray) -> np.ndarray:
    """float64 (N,) log(width / height) of boxes (N, 4); NaN for an empty box."""
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log(width / height)
    return np.where((width > 0) & (height > 0), out, np.nan)


def plausible(
    missing: Sequence[list[Component]],
    scene_boxes: Sequence[SceneBoxes],
    own_pixels: Sequence[np.ndarray],
    min_object_share: float,
    aspect_slack: float,
) -> list[list[Component]]:
    """Per scene, the candidates left by :func:`drop_fragments` then :func:`drop_misshapen`.

    Args:
        missing: Per scene, its candidates (:attr:`SceneObjects.missing`).
        scene_boxes: The scenes' boxes, in the same order.
        own_pixels: Per scene, :attr:`SceneObjects.own_pixels`.
        min_object_share: ``share`` of :func:`drop_fragments`.
        aspect_slack: ``slack`` of :func:`drop_misshapen`.
    """
    from jmlnet_geo.proposals.compose import pixel_boxes

    ids = [sb.class_ids for sb in scene_boxes]
    kept = drop_fragments(missing, ids, own_pixels, min_object_share)
    return drop_misshapen(kept, [pixel_boxes(sb) for sb in scene_boxes], ids, aspect_slack)
