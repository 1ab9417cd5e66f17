"""Agreement of proposals: which method's per-box masks agree best with the others (no truth).

For every pair of methods, the box-wise IoU of their masks of the same box, averaged over the
boxes; a method's agreement is the mean of its pair averages with each other method. The
method that agrees best is a truth-free guess of the most reliable stage-1 label.

Masks are per box: bool (box rows, box cols) arrays, the same boxes in the same order for every
method. :func:`box_masks_from_raster` cuts them out of a proposal raster (a class raster on the
scene's grid, as ``jmlgeo proposals`` writes).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from jmlnet_geo.io.vector import SceneBoxes


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two bool masks of one box; 1.0 when both are empty (they agree on nothing).

    Raises:
        ValueError: The masks differ in shape.
    """
    if a.shape != b.shape:
        raise ValueError(f"masks of one box differ in shape: {a.shape} and {b.shape}")
    union = np.logical_or(a, b).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(a, b).sum() / union)


@dataclass(frozen=True)
class Agreement:
    """One method's row of the agreement table.

    Attributes:
        method: The method.
        mean_iou: Mean over the other methods of ``pairs`` (NaN with no other method).
        pairs: Other method -> mean box-wise IoU with it over the boxes.
        boxes: Boxes compared.
    """

    method: str
    mean_iou: float
    pairs: dict[str, float] = field(default_factory=dict)
    boxes: int = 0


def proposal_agreement(masks_by_method: Mapping[str, Sequence[np.ndarray]]) -> list[Agreement]:
    """The agreement table of some methods' per-box masks, best agreeing first.

    Args:
        masks_by_method: Method -> per box, bool (rows, cols) mask of the object in the box
            (box pixels); every method has the same boxes in the same order.

    Returns:
        One :class:`Agreement` per method, sorted by ``mean_iou`` (highest first; ties keep the
        order of ``masks_by_method``).

    Raises:
        ValueError: Methods with different numbers of boxes, or masks of a box differing in
            shape.
    """
    methods = list(masks_by_method)
    counts = {m: len(masks_by_method[m]) for m in methods}
    if len(set(counts.values())) > 1:
        raise ValueError(f"methods have different numbers of boxes: {counts}")
    boxes = next(iter(counts.values()), 0)
    pair: dict[tuple[str, str], float] = {}
    for i, a in enumerate(methods):
        for b in methods[i + 1 :]:
            ious = [
                box_iou(np.asarray(x, bool), np.asarray(y, bool))
                for x, y in zip(masks_by_method[a], masks_by_method[b], strict=True)
            ]
            pair[a, b] = pair[b, a] = float(np.mean(ious)) if ious else float("nan")
    rows = []
    for m in methods:
        pairs = {o: pair[m, o] for o in methods if o != m}
        mean = float(np.mean(list(pairs.values()))) if pairs else float("nan")
        rows.append(Agreement(m, mean, pairs, boxes))
    return sorted(rows, key=lambda r: -r.mean_iou if not np.isnan(r.mean_iou) else np.inf)


def box_masks_from_raster(
    path: str | os.PathLike[str], boxes: np.ndarray, class_ids: np.ndarray
) -> list[np.ndarray]:
    """Each box's mask in a proposal raster: its box window equal to the box's class.

    Args:
        path: Single-band class raster on the scene's grid (0 background, 1..K classes,
            255 ignore).
        boxes: int (N, 4) col0, row0, col1, row1 in scene pixels, end exclusive
            (:func:`jmlnet_geo.proposals.compose.pixel_boxes`).
        class_ids: int (N,) class ids 1..K of the boxes.

    Returns:
        Per box, bool (row1 - row0, col1 - col0).
    """
    import rasterio
    from rasterio.windows import Window

    out = []
    with rasterio.open(path) as ds:
        for (c0, r0, c1, r1), k in zip(np.asarray(boxes, np.int64), class_ids, strict=True):
            window = Window(int(c0), int(r0), int(c1 - c0), int(r1 - r0))
            out.append(ds.read(1, window=window) == int(k))
    return out


def agreement_lines(table: Sequence[Agreement]) -> list[str]:
    """The table as text lines for a run log: method, mean IoU and each pair."""
    lines = []
    for row in table:
        pairs = ", ".join(f"{o} {100 * v:.1f}" for o, v in row.pairs.items())
        lines.append(f"{row.method}: {100 * row.mean_iou:.1f} mean box IoU ({pairs})")
    return lines


def raster_agreement(
    scene_boxes: Sequence[SceneBoxes],
    out_dir: str | os.PathLike[str],
    methods: Sequence[str],
) -> list[Agreement]:
    """The agreement table of proposal rasters already written for many scenes.

    Args:
        scene_boxes: The scenes and their boxes (boxes in scene pixels via ``pixel_boxes``).
        out_dir: Folder of the rasters, ``<stem>.<method>.tif`` (``proposal_path``).
        methods: The methods compared (two or more for a meaningful table).

    Returns:
        As :func:`proposal_agreement`, pooled over every box of every scene.
    """
    from jmlnet_geo.proposals.compose import pixel_boxes, proposal_path

    masks: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    for sb in scene_boxes:
        if not len(sb.class_ids):
            continue
        boxes = pixel_boxes(sb)
        for m in methods:
            masks[m].extend(box_masks_from_raster(proposal_path(out_dir, sb.scene, m), boxes,
                                                  sb.class_ids))  # fmt: skip
    return proposal_agreement(masks)
