"""Pure numpy metrics: pixel confusion matrices and their scores, box IoU, VOC mAP.

Segmentation scores follow the JMLNet paper (Eqs. 14-15): IoU = TP / (TP + FP + FN) per class
and mIoU, the mean over the classes present in the truth or in the prediction, background
included. Detection scores are PASCAL VOC's: all-point interpolated average precision per class
and their mean (mAP) at an IoU threshold. Nothing here reads files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from jmlnet_geo.errors import JmlGeoError
from jmlnet_geo.vocabulary import IGNORE

__all__ = [
    "EvaluationError",
    "average_precision",
    "box_iou",
    "box_ious",
    "confusion_matrix",
    "mean_average_precision",
    "roc_auc",
    "scores",
]


class EvaluationError(JmlGeoError, ValueError):
    """A class raster and its truth cannot be compared (ids, grids or content)."""


def confusion_matrix(
    pred: np.ndarray, truth: np.ndarray, num_classes: int, ignore: int = IGNORE
) -> np.ndarray:
    """Count pixels per (truth class, predicted class).

    Args:
        pred: Integer array of any shape: predicted class ids.
        truth: Integer array of the same shape: true class ids.
        num_classes: C, the number of classes, background included (ids 0..C-1).
        ignore: Pixels where either array holds this value are not counted.

    Returns:
        int64 (C, C): ``confusion[t, p]`` pixels of true class ``t`` predicted as ``p``.

    Raises:
        EvaluationError: Shapes differ, or a counted value is outside 0..C-1.
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise EvaluationError(
            f"prediction {pred.shape} and truth {truth.shape} differ in shape; "
            "put them on one grid first"
        )
    keep = (pred != ignore) & (truth != ignore)
    p = pred[keep].astype(np.int64, copy=False)
    t = truth[keep].astype(np.int64, copy=False)
    for name, values in (("prediction", p), ("truth", t)):
        bad = values[(values < 0) | (values >= num_classes)]
        if bad.size:
            raise EvaluationError(
                f"{name} holds class id {int(bad[0])} outside 0..{num_classes - 1}; "
                f"raise num_classes or mark those pixels {ignore} (ignore)"
            )
    counts = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def scores(confusion: np.ndarray) -> dict:
    """Per-class IoU, mIoU, pixel accuracy, precision and recall of a confusion matrix.

    Args:
        confusion: int (C, C), rows truth, columns prediction (see :func:`confusion_matrix`).

    Returns:
        A dict with ``iou``, ``precision``, ``recall`` (float64 (C,), NaN where undefined),
        ``present`` (bool (C,): in truth or prediction), ``miou`` (mean IoU over present classes)
        and ``pixel_accuracy`` (floats; NaN when no pixel was counted).
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(confusion)
    in_truth = confusion.sum(axis=1)
    in_pred = confusion.sum(axis=0)
    union = in_truth + in_pred - tp
    present = union > 0
    total = confusion.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(present, tp / union, np.nan)
        precision = np.where(in_pred > 0, tp / in_pred, np.nan)
        recall = np.where(in_truth > 0, tp / in_truth, np.nan)
    return {
        "iou": iou,
        "precision": precision,
        "recall": recall,
        "present": present,
        "miou": float(iou[present].mean()) if present.any() else math.nan,
        "pixel_accuracy": float(tp.sum() / total) if total > 0 else math.nan,
    }


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC: the chance that a positive item scores above a negative one (ties count half).

    Computed from ranks (Mann-Whitney U), O(n log n). 0.5 is chance, 1.0 a perfect ranking.

    Args:
        scores: float (N,) scores, any shape (flattened).
        positive: bool (N,), same shape: which items are positive.

    Returns:
        The AUC, NaN unless there are both positive and negative items.
    """
    values = np.asarray(scores, np.float64).ravel()
    positive = np.asarray(positive, bool).ravel()
    n_pos = int(positive.sum())
    n_neg = len(values) - n_pos
    if not n_pos or not n_neg:
        return math.nan
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    ranks = (np.bincount(inverse, weights=ranks) / counts)[inverse]  # ties: their mean rank
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def box_ious(
    pred: np.ndarray,
    truth: np.ndarray,
    boxes: np.ndarray,
    class_ids: np.ndarray,
    ignore: int = IGNORE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU of each box's class inside the box, between a class raster and its truth.

    Pixels where either raster is ``ignore`` are left out.

    Args:
        pred: uint8 (H, W) predicted class ids.
        truth: uint8 (H, W) true class ids on the same grid.
        boxes: int (N, 4) pixel boxes ``(col0, row0, col1, row1)``, end exclusive, inside the grid.
        class_ids: int (N,) the class of each box (1..K).
        ignore: The ignore / nodata value.

    Returns:
        ``(iou, intersection, union)``: float64 (N,) (NaN where the union is empty) and int64
        (N,) pixel counts of the class in prediction and truth, both and either.
    """
    valid = (pred != ignore) & (truth != ignore)
    n = len(class_ids)
    inter, union = np.zeros(n, np.int64), np.zeros(n, np.int64)
    for k, ((c0, r0, c1, r1), class_id) in enumerate(zip(boxes, class_ids, strict=True)):
        inside = valid[r0:r1, c0:c1]
        p = (pred[r0:r1, c0:c1] == class_id) & inside
        t = (truth[r0:r1, c0:c1] == class_id) & inside
        inter[k], union[k] = int((p & t).sum()), int((p | t).sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    return iou, inter, union


# --- detection ----------------------------------------------------------------------------------


class _Detections(Protocol):
    """What :func:`mean_average_precision` reads of a detector's output for one image."""

    xyxy: np.ndarray  # float (N, 4) pixel boxes
    scores: np.ndarray  # float (N,)
    labels: np.ndarray  # int (N,) class ids 1..K


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of two sets of ``(x0, y0, x1, y1)`` boxes, float64 (N, M).

    The same arithmetic as ``torchvision.ops.box_iou`` (NaN where the union is empty). Each set
    keeps its dtype for its areas (float32 boxes give float32 areas), then float64 mixes in.
    """
    a, b = np.asarray(a), np.asarray(b)  # each keeps its dtype, as torchvision's would
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / union


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision-recall curve, PASCAL VOC all-point interpolation.

    Args:
        recall: float (N,), non-decreasing: recall after each detection, by falling score.
        precision: float (N,): precision after each detection.

    Returns:
        AP in 0..1 (0 when there is no detection).
    """
    mrec = np.concatenate([[0.0], np.asarray(recall, np.float64), [1.0]])
    mpre = np.concatenate([[0.0], np.asarray(precision, np.float64), [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision envelope
    steps = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def mean_average_precision(
    detections: Sequence[_Detections],
    truths: Sequence[tuple[np.ndarray, np.ndarray]],
    num_classes: int,
    iou_threshold: float = 0.5,
) -> dict[str, Any]:
    """Mean average precision (mAP) at an IoU threshold, VOC style, over several images.

    Per class, detections of all images are ranked by score; each is a true positive when its
    IoU with a not yet matched truth box of its class and image is >= ``iou_threshold``.

    Args:
        detections: Per image, its detections (``xyxy`` float (N, 4) pixel boxes, ``scores``
            (N,), ``labels`` int (N,) class ids), e.g. ``train.detector.Detections``.
        truths: Per image, ``(xyxy float (M, 4), class ids int (M,))`` in the same pixels.
        num_classes: K (class ids 1..K).
        iou_threshold: 0.5 for mAP@0.5.

    Returns:
        ``{"ap": {class id: AP or NaN}, "truths": {class id: count}, "map": mean AP over the
        classes that have truth boxes (NaN when none has)}``.
    """
    ap: dict[int, float] = {}
    counts: dict[int, int] = {}
    for cls in range(1, num_classes + 1):
        gts = [np.asarray(b, np.float64)[np.asarray(c) == cls] for b, c in truths]
        counts[cls] = int(sum(len(g) for g in gts))
        rows = []
        for i, det in enumerate(detections):
            pick = det.labels == cls
            scored = zip(det.scores[pick], det.xyxy[pick], strict=True)
            rows += [(float(s), i, b) for s, b in scored]
        if counts[cls] == 0:
            ap[cls] = math.nan
            continue
        rows.sort(key=lambda r: -r[0])
        matched = [np.zeros(len(g), bool) for g in gts]
        tp = np.zeros(len(rows))
        for k, (_, i, box) in enumerate(rows):
            if len(gts[i]) == 0:
                continue
            ious = box_iou(box[None], gts[i])[0]
            best = int(np.argmax(ious))
            if ious[best] >= iou_threshold and not matched[i][best]:
                matched[i][best] = True
                tp[k] = 1
        hits = np.cumsum(tp)
        recall = hits / counts[cls]
        precision = hits / np.arange(1, len(rows) + 1)
        ap[cls] = average_precision(recall, precision) if rows else 0.0
    values = [v for v in ap.values() if not math.isnan(v)]
    return {"ap": ap, "truths": counts, "map": float(np.mean(values)) if values else math.nan}
