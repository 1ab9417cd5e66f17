"""GrabCut proposals: OpenCV GrabCut initialised with the box on a crop around it.

Inside the box is *probably foreground*, the context margin and nodata are *sure background*.
GrabCut's colour models are seeded by k-means with OpenCV's global random generator; it is reset
before every box, so a box's mask never depends on which boxes the same process handled before
(outputs are byte-identical whatever the worker count).
"""

from __future__ import annotations

import cv2
import numpy as np

from jmlnet_geo.proposals.crop import BoxCrop
from jmlnet_geo.proposals.options import GrabCutOptions

#: Seed of OpenCV's random generator before each box.
SEED = 0

#: GrabCut needs some background samples to model; fewer context pixels and the box is kept.
MIN_BACKGROUND_PIXELS = 16


def grabcut_mask(crop: BoxCrop, options: GrabCutOptions = GrabCutOptions()) -> np.ndarray | None:
    """Foreground of one box by GrabCut.

    Args:
        crop: The box and its context (:func:`jmlnet_geo.proposals.crop.read_crop`).
        options: GrabCut options.

    Returns:
        bool (box rows, box cols) at the crop's scale: True on the object; None when GrabCut
        cannot run (no context to learn the background from, or no valid pixel in the box).
    """
    mask = np.full(crop.valid.shape, cv2.GC_BGD, np.uint8)
    c0, r0, c1, r1 = crop.box
    mask[r0:r1, c0:c1] = cv2.GC_PR_FGD
    mask[~crop.valid] = cv2.GC_BGD
    if (mask == cv2.GC_BGD).sum() < MIN_BACKGROUND_PIXELS or not (mask == cv2.GC_PR_FGD).any():
        return None
    return grabcut_from_mask(crop, mask, options.iterations)


def grabcut_from_mask(crop: BoxCrop, mask: np.ndarray, iterations: int) -> np.ndarray | None:
    """Run OpenCV GrabCut from an initial mask and return the object inside the box.

    Args:
        crop: The crop (its ``picture`` is what GrabCut segments).
        mask: uint8 (crop rows, crop cols) of ``cv2.GC_*`` values; updated in place.
        iterations: GrabCut iterations.

    Returns:
        bool (box rows, box cols) at the crop's scale, True where GrabCut ends on (probable)
        foreground; None when GrabCut fails (e.g. a flat box whose colours k-means cannot split).
    """
    cv2.setRNGSeed(SEED)  # the same result for a box whatever ran before it
    bgd = np.zeros((1, 65), np.float64)
    fgd = np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(crop.picture, mask, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        return None
    return crop.box_region((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD))
