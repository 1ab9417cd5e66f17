"""Detection over whole scenes with a trained detector, in overlapping windows.

Boxes come out in scene pixels (col_min, row_min, col_max, row_max), float64; ``jmlgeo detect``
turns them into the scene CRS. The detector comes from
:func:`jmlnet_geo.detector_file.load_detector`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from jmlnet_geo.config import DETECT_WINDOW
from jmlnet_geo.detector_file import DetectorCard
from jmlnet_geo.io.raster import Scene, open_dataset, read_window


@dataclass
class Detections:
    """Detected boxes of one scene.

    Attributes:
        xyxy: float64 (N, 4): col_min, row_min, col_max, row_max in scene pixels.
        labels: int64 (N,): class ids 1..K of the detector's card.
        scores: float32 (N,): confidence in 0..1.
    """

    xyxy: np.ndarray
    labels: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def detect_scene(
    model: nn.Module,
    card: DetectorCard,
    scene: Scene,
    window: int = DETECT_WINDOW,
    overlap: int = 128,
    nms_iou: float = 0.5,
) -> Detections:
    """Detect objects over a whole scene with overlapping windows.

    Each detection is kept by the window whose centre is nearest to the detection's centre
    (so objects cut by one window's edge come from a window that sees them whole, as long as
    they are smaller than ``overlap``), then class-wise NMS removes the remaining duplicates.

    Args:
        model: A detector in eval mode (:func:`jmlnet_geo.detector_file.load_detector`); its
            device is used.
        card: Its card (normalisation).
        scene: The scene (same bands as the detector).
        window: Window side, pixels (scenes smaller than that are one window).
        overlap: Overlap of neighbouring windows, pixels.
        nms_iou: IoU above which a lower-scored detection of the same class is dropped.

    Returns:
        Every detection the model returns (its ``box_score_thresh``, 0.05 by default).
    """
    from rasterio.windows import Window
    from torchvision.ops import batched_nms

    device = next(model.parameters()).device
    normalization = card.band_normalization()
    cols = window_starts(scene.width, window, overlap)
    rows = window_starts(scene.height, window, overlap)
    width, height = min(window, scene.width), min(window, scene.height)
    centres = np.array([(c + width / 2, r + height / 2) for r in rows for c in cols])
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    with open_dataset(scene) as ds, torch.no_grad():
        k = 0
        for r in rows:
            for c in cols:
                image, valid = read_window(ds, scene, Window(c, r, width, height))
                tensor = torch.from_numpy(image.astype(np.float32))[None].to(device)
                mask = torch.from_numpy(valid)[None].to(device)
                (out,) = model(list(normalization.apply(tensor, mask)))
                boxes = out["boxes"].double().cpu().numpy() + [c, r, c, r]
                mid = (boxes[:, :2] + boxes[:, 2:]) / 2
                nearest = np.argmin(((mid[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
                keep = nearest == k if len(centres) > 1 else np.ones(len(boxes), bool)
                labels, scores = out["labels"].cpu().numpy(), out["scores"].cpu().numpy()
                found.append((boxes[keep], labels[keep], scores[keep]))
                k += 1
    xyxy = np.concatenate([f[0] for f in found]).reshape(-1, 4)
    labels = np.concatenate([f[1] for f in found]).astype(np.int64)
    scores = np.concatenate([f[2] for f in found]).astype(np.float32)
    if len(labels):
        keep = batched_nms(
            torch.from_numpy(xyxy),
            torch.from_numpy(scores).double(),
            torch.from_numpy(labels),
            nms_iou,
        ).numpy()
        xyxy, labels, scores = xyxy[keep], labels[keep], scores[keep]
    return Detections(xyxy, labels, scores)


def window_starts(extent: int, window: int, overlap: int) -> list[int]:
    """Window offsets along one axis: every ``window - overlap``, the last snapped inside."""
    if extent <= window:
        return [0]
    stride = max(1, window - overlap)
    starts = list(range(0, extent - window, stride))
    return [*starts, extent - window]
