"""The multi-label losses of JMLNet (paper section 2.2, Eqs. 1-8) as pure torch functions.

Every function takes raw ``logits`` of shape (N, C, H, W) (float) and class-id labels with
0 = background, 1..C-1 = classes and :data:`IGNORE` (255) = no label (nodata, outside a
proposal). The multi-label losses take a *stack* of Z proposals, shape (N, Z, H, W), one layer
per proposal method.

- :func:`ce` (Eq. 1): pixel-wise cross entropy against one label map, the mean over the
  non-ignored pixels of the batch.
- :func:`ma` (Eq. 2, MA-Loss): the average over proposals of each proposal's CE.
- :func:`mm` (Eq. 3, MM-Loss): per image, the smallest of the proposals' CEs; then the mean
  over the images of the batch.
- :func:`bmm` (Eqs. 4-8, BMM-Loss): inside the boxes (P+), per pixel, the smallest CE over the
  proposals (L+); outside the boxes (P-), CE against background whatever the proposals say
  (L-); L+ + L-.

A term with no pixel to average over (an all-ignore tile, a tile without boxes) is 0 and still
carries a ``grad_fn`` connected to ``logits``: backward works and never produces NaN.
:data:`LOSSES` and :func:`multi_label_loss` pick a loss by name. Not for soft labels or class
weights.

The box-consistency loss (after BoxInst), which needs no proposal, is in
:mod:`jmlnet_geo.box_losses`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F  # noqa: N812  (the usual torch spelling)
from torch import Tensor

from jmlnet_geo.errors import JmlGeoError
from jmlnet_geo.vocabulary import BACKGROUND, IGNORE


def _check_stack(logits: Tensor, labels: Tensor) -> None:
    """Raise ValueError unless logits are (N, C, H, W) and labels (N, Z, H, W) on the same grid."""
    if logits.ndim != 4 or labels.ndim != 4:
        raise ValueError(
            f"expected logits (N, C, H, W) and labels (N, Z, H, W), "
            f"got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    if labels.shape[0] != logits.shape[0] or labels.shape[2:] != logits.shape[2:]:
        raise ValueError(
            f"labels {tuple(labels.shape)} do not match logits {tuple(logits.shape)} "
            "in batch size or height and width"
        )


def _proposal_nll(
    logits: Tensor, labels: Tensor, log_probs: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Pixel CE of every proposal: one log-softmax, one gather.

    Args:
        logits: (N, C, H, W) float.
        labels: (N, Z, H, W) integer class ids, :data:`IGNORE` where unlabelled.
        log_probs: ``log_softmax(logits, dim=1)`` when the caller has it already.

    Returns:
        ``(nll, valid)``, both (N, Z, H, W): the float pixel CE ``-log p[label]`` (0 where
        ignored) and the bool mask of labelled pixels.
    """
    _check_stack(logits, labels)
    valid = labels != IGNORE
    index = torch.where(valid, labels, 0).long()
    if log_probs is None:
        log_probs = F.log_softmax(logits, dim=1)
    nll = -log_probs.gather(1, index)
    return torch.where(valid, nll, 0.0), valid


def labelled_pixels(labels: Tensor) -> Tensor:
    """The pixels some proposal labels: bool (N, H, W) of a (N, Z, H, W) stack.

    A pixel that is :data:`IGNORE` in every layer (nodata, a box ``--drop-doubtful`` dropped) is
    False: no loss may score it (BMM's L- leaves such pixels out the same way).
    """
    return (labels != IGNORE).any(dim=1)


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` where ``mask`` is set; 0 (connected to the graph) when nothing is set."""
    total = torch.where(mask, values, 0.0).sum()
    return total / mask.sum().clamp_min(1)


def ce(logits: Tensor, labels: Tensor) -> Tensor:
    """Pixel-wise cross entropy, Eq. 1.

    Args:
        logits: (N, C, H, W) float.
        labels: (N, H, W) int64 or uint8 class ids, :data:`IGNORE` where unlabelled.

    Returns:
        Scalar: the mean CE over the non-ignored pixels of the whole batch; 0 when every pixel
        is ignored.
    """
    if logits.ndim != 4 or labels.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"expected logits (N, C, H, W) and labels (N, H, W), "
            f"got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    labels = labels.long()
    nll = F.cross_entropy(logits, labels, reduction="none", ignore_index=IGNORE)
    return _masked_mean(nll, labels != IGNORE)


def ma(logits: Tensor, labels: Tensor) -> Tensor:
    """Multi-label average loss (MA-Loss), Eq. 2: the mean over proposals of their CE.

    Each proposal's CE is the mean over its own non-ignored pixels of the batch. A proposal with
    no labelled pixel in the batch has no CE and is left out of the average (so 1/Z counts only
    proposals that say something); with every proposal labelled this is exactly Eq. 2.

    Args:
        logits: (N, C, H, W) float.
        labels: (N, Z, H, W) int64 or uint8 proposal stack, :data:`IGNORE` where unlabelled.

    Returns:
        Scalar; 0 when every pixel of every proposal is ignored.
    """
    nll, valid = _proposal_nll(logits, labels)
    count = valid.sum(dim=(0, 2, 3))  # (Z,)
    per_proposal = nll.sum(dim=(0, 2, 3)) / count.clamp_min(1)
    return _masked_mean(per_proposal, count > 0)


def mm(logits: Tensor, labels: Tensor) -> Tensor:
    """Multi-label minimum loss (MM-Loss), Eq. 3: per image, the smallest proposal CE.

    Eq. 3 is written for one image p, so the minimum is taken **per sample**: for each image n
    and proposal z, the CE is the mean over that image's non-ignored pixels of z; the minimum
    over z picks, image by image, the proposal the network agrees with most. The result is the
    mean of these minima over the images of the batch (not a pixel-pooled mean, so with one
    proposal it equals :func:`ce` only when the images have equally many labelled pixels).
    A proposal with no labelled pixel in an image is left out of that image's minimum (it is not
    a CE of 0); an image where every proposal is ignored is left out of the batch mean.

    Args:
        logits: (N, C, H, W) float.
        labels: (N, Z, H, W) int64 or uint8 proposal stack, :data:`IGNORE` where unlabelled.

    Returns:
        Scalar; 0 when no image has a labelled pixel.
    """
    nll, valid = _proposal_nll(logits, labels)
    count = valid.sum(dim=(2, 3))  # (N, Z)
    has = count > 0
    per_image = nll.sum(dim=(2, 3)) / count.clamp_min(1)
    best = torch.where(has, per_image, torch.inf).amin(dim=1)  # (N,)
    return _masked_mean(best, has.any(dim=1))


def bmm(logits: Tensor, labels: Tensor, box_mask: Tensor) -> Tensor:
    """Box-wise multi-label minimum loss (BMM-Loss), Eqs. 4-8: ``L+ + L-``.

    L+ (Eq. 6) covers P+, the pixels inside any box (Eq. 4): per pixel, the smallest CE over the
    proposals (the sum over c in Eq. 6 is the pixel CE; its upper bound "Z" is read as C).
    Proposals that are :data:`IGNORE` at a pixel take no part in its minimum; a box pixel where
    all of them are ignored is not counted. L+ is the mean over the n+ counted box pixels.

    L- (Eq. 7) covers P-, the pixels outside every box (Eq. 5). The paper sets ``y_ij = 0``
    there: the label is background, whatever the proposals say, and the loss is
    ``-log p_background``. Only pixels ignored by *every* proposal (nodata) are left out. L- is
    the mean over the n- counted outside pixels.

    Both means pool the pixels of the whole batch, like :func:`ce`. A term without pixels
    (no box on the tile, or all of it ignored) is 0.

    Args:
        logits: (N, C, H, W) float.
        labels: (N, Z, H, W) int64 or uint8 proposal stack, :data:`IGNORE` where unlabelled.
        box_mask: (N, H, W) bool, True inside any box (P+).

    Returns:
        Scalar ``L+ + L-``.
    """
    if box_mask.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"box_mask {tuple(box_mask.shape)} does not match logits {tuple(logits.shape)}"
        )
    box_mask = box_mask.bool()
    log_probs = F.log_softmax(logits, dim=1)
    nll, valid = _proposal_nll(logits, labels, log_probs)
    labelled = valid.any(dim=1)  # (N, H, W): not nodata in every proposal
    pixel_min = torch.where(valid, nll, torch.inf).amin(dim=1)  # (N, H, W)
    plus = _masked_mean(pixel_min, box_mask & labelled)
    background = -log_probs[:, BACKGROUND]
    minus = _masked_mean(background, ~box_mask & labelled)
    return plus + minus


def _ce_first(logits: Tensor, labels: Tensor, box_mask: Tensor | None = None) -> Tensor:
    """:func:`ce` on the first proposal of a (N, Z, H, W) stack."""
    _check_stack(logits, labels)
    return ce(logits, labels[:, 0])


def _ma(logits: Tensor, labels: Tensor, box_mask: Tensor | None = None) -> Tensor:
    """:func:`ma` with the common signature (``box_mask`` unused)."""
    return ma(logits, labels)


def _mm(logits: Tensor, labels: Tensor, box_mask: Tensor | None = None) -> Tensor:
    """:func:`mm` with the common signature (``box_mask`` unused)."""
    return mm(logits, labels)


def _bmm(logits: Tensor, labels: Tensor, box_mask: Tensor | None = None) -> Tensor:
    """:func:`bmm` with the common signature (``box_mask`` required)."""
    if box_mask is None:
        raise ValueError("the bmm loss needs box_mask (N, H, W), True inside the boxes")
    return bmm(logits, labels, box_mask)


#: Loss name -> ``f(logits, labels, box_mask)`` with labels a (N, Z, H, W) stack.
LOSSES: dict[str, Callable[[Tensor, Tensor, Tensor | None], Tensor]] = {
    "ce": _ce_first,
    "ma": _ma,
    "mm": _mm,
    "bmm": _bmm,
}


def multi_label_loss(
    name: str, logits: Tensor, labels: Tensor, box_mask: Tensor | None = None
) -> Tensor:
    """Compute the loss called ``name`` on a proposal stack.

    Args:
        name: One of :data:`LOSSES`: ``ce`` (Eq. 1 on the first proposal), ``ma`` (Eq. 2),
            ``mm`` (Eq. 3) or ``bmm`` (Eqs. 4-8).
        logits: (N, C, H, W) float.
        labels: (N, Z, H, W) int64 or uint8 proposal stack, :data:`IGNORE` where unlabelled.
        box_mask: (N, H, W) bool, True inside any box; needed by ``bmm`` only.

    Returns:
        Scalar loss.

    Raises:
        JmlGeoError: ``name`` is not a known loss.
    """
    try:
        loss = LOSSES[name]
    except KeyError:
        raise JmlGeoError(f"unknown loss {name!r}: use one of {', '.join(LOSSES)}") from None
    return loss(logits, labels, box_mask)
