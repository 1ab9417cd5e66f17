"""Box-consistency loss after BoxInst (Tian et al., CVPR 2021), for semantic segmentation.

It needs no proposal: the boxes alone say where each class must be. Pure torch functions on
logits or probabilities (N, C, H, W) (float, class 0 = background) and, per tile, the boxes in
tile pixels with their class ids, as :func:`jmlnet_geo.tiling.collate_tiles` batches carry them:

- :func:`box_projection_loss`: each box's class map projected on x (max over the box's rows)
  and on y (max over its columns) should match the box's extent (Dice, as BoxInst);
- :func:`box_pairwise_loss`: neighbours (3 x 3, dilation 2) of similar Lab colour
  (:func:`colour_similarity` >= 0.3) inside the boxes should share a label,
  ``-log sum_c p_i,c p_j,c``;
- :func:`box_consistency_loss`: both, plus CE against background outside every box;
- :func:`lab_colours`: CIE Lab of raw (not standardised) tiles, for the similarity.

A term without anything to average (no box, no counted pair) is 0 and still connected to the
graph.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812  (the usual torch spelling)
from torch import Tensor

from jmlnet_geo.vocabulary import BACKGROUND


def _box_pixels(box: Tensor, height: int, width: int) -> tuple[int, int, int, int]:
    """Pixel index ranges (c0, c1, r0, r1), end exclusive, whose centres are inside a box."""
    x0, y0, x1, y1 = (float(v) for v in box)
    c0, c1 = max(math.ceil(x0 - 0.5), 0), min(math.ceil(x1 - 0.5), width)
    r0, r1 = max(math.ceil(y0 - 0.5), 0), min(math.ceil(y1 - 0.5), height)
    return c0, c1, r0, r1


def _class_box_counts(
    pixels: Sequence[tuple[int, int, int, int]],
    labels: Tensor,
    shape: Sequence[int],
    device: torch.device,
) -> dict[int, Tensor]:
    """Per class id, an int32 (H, W) count of that class's boxes holding each pixel centre."""
    counts: dict[int, Tensor] = {}
    for (c0, c1, r0, r1), k in zip(pixels, labels.tolist(), strict=True):
        count = counts.setdefault(k, torch.zeros(tuple(shape), dtype=torch.int32, device=device))
        count[r0:r1, c0:c1] += 1
    return counts


def _dice(pred: Tensor, target: Tensor, eps: float = 1e-5) -> Tensor:
    """BoxInst's Dice loss ``1 - 2 sum(p t) / (sum(p^2) + sum(t^2))`` of two 1-D profiles."""
    return 1 - 2 * (pred * target).sum() / ((pred**2).sum() + (target**2).sum() + eps)


def box_projection_loss(
    probs: Tensor,
    boxes: Sequence[Tensor],
    labels: Sequence[Tensor],
    margin: float = 0.5,
    skip_neighbours: bool = False,
    scored: Tensor | None = None,
) -> Tensor:
    """Projection term: each box's class map, projected on each axis, should match the box.

    For a box of class k, the projection window is the box grown by ``margin`` times its width
    (columns) and height (rows), clipped to the tile. Along x, for every column of the window,
    the prediction is the largest ``probs[k]`` over the box's rows; the target is 1 on the
    box's columns and 0 on the others. Along y the same with rows and columns swapped. Each
    axis scores BoxInst's Dice loss; a box scores the sum of both (0 when the class fills the
    box exactly and is absent beside it, 2 when the box is empty). With ``skip_neighbours``,
    the window's pixels inside another box of the same class (and not inside this one) count
    as 0 before the projection, so parked neighbours of one class are not pushed out of each
    other's margin. Pixels outside ``scored`` count as 0 too (nodata, a dropped box: neither
    object nor background).

    Args:
        probs: (N, C, H, W) float class probabilities (softmax of the logits).
        boxes: Per tile, float (n_i, 4) boxes x_min, y_min, x_max, y_max in tile pixels; a
            pixel belongs to a box when its centre is inside.
        labels: Per tile, int64 (n_i,) class ids 1..C-1 of those boxes.
        margin: Growth of the window on each side, as a fraction of the box's side.
        skip_neighbours: Leave the pixels of other boxes of the same class out of the window.
        scored: (N, H, W) bool, False where no pixel may be scored (None: every pixel).

    Returns:
        Scalar: the mean over the boxes holding at least one pixel centre; 0 (connected to
        ``probs``) without any.
    """
    height, width = probs.shape[-2:]
    terms = []
    for n, (tile_boxes, tile_labels) in enumerate(zip(boxes, labels, strict=True)):
        pixels = [_box_pixels(box, height, width) for box in tile_boxes]
        counts = (
            _class_box_counts(pixels, tile_labels, probs.shape[-2:], probs.device)
            if skip_neighbours
            else {}
        )
        for (c0, c1, r0, r1), k in zip(pixels, tile_labels.tolist(), strict=True):
            if c1 <= c0 or r1 <= r0:
                continue
            gx, gy = math.ceil(margin * (c1 - c0)), math.ceil(margin * (r1 - r0))
            w0, w1 = max(c0 - gx, 0), min(c1 + gx, width)
            v0, v1 = max(r0 - gy, 0), min(r1 + gy, height)
            window = probs[n, k, v0:v1, w0:w1]
            if scored is not None:
                window = window * scored[n, v0:v1, w0:w1]
            if k in counts:  # zero the window's pixels that only other boxes of class k hold
                others = counts[k][v0:v1, w0:w1].clone()
                others[r0 - v0 : r1 - v0, c0 - w0 : c1 - w0] -= 1
                window = window * (others == 0)
            along_x = window[r0 - v0 : r1 - v0].amax(dim=0)  # (columns of the window,)
            along_y = window[:, c0 - w0 : c1 - w0].amax(dim=1)  # (rows of the window,)
            target_x = torch.zeros_like(along_x)
            target_x[c0 - w0 : c1 - w0] = 1
            target_y = torch.zeros_like(along_y)
            target_y[r0 - v0 : r1 - v0] = 1
            terms.append(_dice(along_x, target_x) + _dice(along_y, target_y))
    if not terms:
        return probs.sum() * 0.0
    return torch.stack(terms).mean()


#: Offsets (dy, dx) of the 8 neighbours of BoxInst's 3 x 3 neighbourhood with dilation 2.
NEIGHBOURS = tuple((dy, dx) for dy in (-2, 0, 2) for dx in (-2, 0, 2) if (dy, dx) != (0, 0))


def colour_similarity(lab: Tensor, theta: float = 2.0) -> Tensor:
    """BoxInst's similarity ``exp(-||lab_i - lab_j|| / theta)`` with each of :data:`NEIGHBOURS`.

    Args:
        lab: (N, 3, H, W) float CIE Lab colours (:func:`lab_colours`).
        theta: Colour scale, Lab units.

    Returns:
        (N, 8, H, W) float: for pixel i and neighbour e, the similarity of i and i + e; 0 where
        the neighbour falls outside the tile.
    """
    out = lab.new_zeros((lab.shape[0], len(NEIGHBOURS), *lab.shape[2:]))
    for e, (dy, dx) in enumerate(NEIGHBOURS):
        here, there = _shifted(lab.shape[-2:], dy, dx)
        distance = (lab[(..., *here)] - lab[(..., *there)]).norm(dim=1)
        out[(slice(None), e, *here)] = torch.exp(-distance / theta)
    return out


def _shifted(shape: Sequence[int], dy: int, dx: int) -> tuple[tuple[slice, ...], ...]:
    """Slices (rows, cols) of the pixels i and of their neighbours i + (dy, dx), both in tile."""
    height, width = shape
    rows = (slice(max(-dy, 0), height - max(dy, 0)), slice(max(dy, 0), height - max(-dy, 0)))
    cols = (slice(max(-dx, 0), width - max(dx, 0)), slice(max(dx, 0), width - max(-dx, 0)))
    return (rows[0], cols[0]), (rows[1], cols[1])


def box_pairwise_loss(
    probs: Tensor, similarity: Tensor, box_mask: Tensor, threshold: float = 0.3
) -> Tensor:
    """Pairwise term: neighbours of similar colour inside the boxes should share a label.

    A pair (i, i + e) counts when both pixels are in ``box_mask`` and their similarity is at
    least ``threshold``; it scores ``-log P(same label)`` with ``P = sum_c p_i,c p_j,c``.

    Args:
        probs: (N, C, H, W) float class probabilities.
        similarity: (N, 8, H, W) float, :func:`colour_similarity`.
        box_mask: (N, H, W) bool, True inside any box and valid (not nodata).
        threshold: Smallest similarity of a counted pair (BoxInst: 0.3).

    Returns:
        Scalar: the mean over the counted pairs; 0 (connected to ``probs``) without any.
    """
    total, count = probs.sum() * 0.0, 0
    for e, (dy, dx) in enumerate(NEIGHBOURS):
        here, there = _shifted(probs.shape[-2:], dy, dx)
        counted = box_mask[(..., *here)] & box_mask[(..., *there)]
        counted &= similarity[(slice(None), e, *here)] >= threshold
        same = (probs[(..., *here)] * probs[(..., *there)]).sum(dim=1)  # (N, h, w)
        total = total - torch.log(same.clamp_min(1e-6))[counted].sum()
        count += int(counted.sum())
    return total / max(count, 1)


def lab_colours(image: Tensor, valid: Tensor | None = None) -> Tensor:
    """CIE Lab (D65) colours of raw tiles, for :func:`colour_similarity`.

    The first three bands are read as sRGB, one band as grey (L only, a = b = 0). Values are
    scaled to 0..1 by 255 when the tile's valid values are all within 0..255, else by the tile's
    largest valid value (uint16 and float scenes).

    Args:
        image: (N, B, H, W) float raw band values (not standardised).
        valid: (N, H, W) bool, False at nodata (left out of the scale).

    Returns:
        (N, 3, H, W) float: L in 0..100, a and b about -100..100.
    """
    bands = image[:, :3].detach().float()
    mask = torch.ones_like(bands[:, 0], dtype=torch.bool) if valid is None else valid
    values = torch.where(mask[:, None], bands, 0.0)
    top = values.flatten(1).amax(dim=1)  # (N,)
    scale = torch.where(top <= 255, torch.full_like(top, 255.0), top.clamp_min(1e-6))
    rgb = (values / scale[:, None, None, None]).clamp(0, 1)
    if rgb.shape[1] < 3:
        rgb = rgb[:, :1].expand(-1, 3, -1, -1)
    linear = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    matrix = rgb.new_tensor(
        [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169],
         [0.019334, 0.119193, 0.950227]]
    ) / rgb.new_tensor([0.950456, 1.0, 1.088754])[:, None]  # fmt: skip
    xyz = torch.einsum("ij,njhw->nihw", matrix, linear)
    f = torch.where(xyz > 0.008856, xyz.clamp_min(1e-12) ** (1 / 3), 7.787 * xyz + 16 / 116)
    lightness = torch.where(xyz[:, 1] > 0.008856, 116 * f[:, 1] - 16, 903.3 * xyz[:, 1])
    return torch.stack([lightness, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], dim=1)


def box_consistency_loss(
    logits: Tensor,
    boxes: Sequence[Tensor],
    labels: Sequence[Tensor],
    box_mask: Tensor,
    similarity: Tensor | None,
    valid: Tensor,
    pairwise_weight: float = 1.0,
    margin: float = 0.5,
    skip_neighbours: bool = False,
    outside_weight: float = 1.0,
    outside_hard: bool = False,
) -> Tensor:
    """BoxInst's box-consistency loss for semantic maps, needing no proposal.

    The sum of :func:`box_projection_loss`, ``pairwise_weight`` times :func:`box_pairwise_loss`
    (inside the boxes) and ``outside_weight`` times the CE against background of the valid
    pixels outside every box (as BMM's L-). With ``outside_hard`` that term sums only over the
    outside pixels whose arg-max class is not background (hard negatives, chosen without
    gradient), still divided by the count of all outside pixels: the default's term less the
    share of the pixels already called background.

    Args:
        logits: (N, C, H, W) float.
        boxes: Per tile, float (n_i, 4) boxes in tile pixels.
        labels: Per tile, int64 (n_i,) class ids 1..C-1.
        box_mask: (N, H, W) bool, True inside any box (``jmlnet_geo.train.data.box_masks``).
        similarity: (N, 8, H, W) float, :func:`colour_similarity` of the tiles; unused (may
            be None) when ``pairwise_weight`` is 0.
        valid: (N, H, W) bool, False where no term scores: nodata, and (as the segmenter
            passes it, :func:`jmlnet_geo.losses.labelled_pixels`) every pixel no
            proposal labels, such as a box ``--drop-doubtful`` dropped (ignore, not background).
        pairwise_weight: Weight of the pairwise term (BoxInst: 1; 0: projection and outside
            terms only, the pairwise term is not computed).
        margin: The projection term's ``margin`` (:func:`box_projection_loss`).
        skip_neighbours: Its ``skip_neighbours``: other boxes of a box's class are left out of
            its window.
        outside_weight: Weight of the outside term (0: not computed).
        outside_hard: Score only the hard negatives in the outside term.

    Returns:
        Scalar.
    """
    if box_mask.shape != (logits.shape[0], *logits.shape[2:]) or valid.shape != box_mask.shape:
        raise ValueError(
            f"box_mask {tuple(box_mask.shape)} and valid {tuple(valid.shape)} do not match "
            f"logits {tuple(logits.shape)}"
        )
    log_probs = F.log_softmax(logits, dim=1)
    probs = log_probs.exp()
    box_mask, valid = box_mask.bool(), valid.bool()
    projection = box_projection_loss(probs, boxes, labels, margin, skip_neighbours, valid)
    pairwise = 0.0
    if pairwise_weight:
        pairwise = pairwise_weight * box_pairwise_loss(probs, similarity, box_mask & valid)
    outside = 0.0
    if outside_weight:
        outside_mask = ~box_mask & valid
        count = outside_mask.sum().clamp_min(1)
        if outside_hard:
            outside_mask = outside_mask & (logits.detach().argmax(dim=1) != BACKGROUND)
        outside = (-log_probs[:, BACKGROUND])[outside_mask].sum() / count
        outside = outside_weight * outside
    return projection + pairwise + outside
