"""CAMCut: GrabCut seeded by DetCAM (paper section 2.3, Eqs. 11-13, Fig. 6).

GrabCut runs on the crop around a box (:func:`jmlnet_geo.proposals.crop.read_crop`) with an
initial mask instead of a rectangle:

- D_h (D > tau_h) -> sure foreground (``GC_FGD``): GrabCut never changes these pixels;
- not D_l (D <= tau_l), everything outside the box and nodata -> sure background (``GC_BGD``);
- D_l minus D_h -> probable foreground (``GC_PR_FGD``): what GrabCut decides.

With ``low="probable"`` (not the paper's), the box's pixels outside D_l are *probable*
background (``GC_PR_BGD``) instead of sure background, so GrabCut can take back what a weak
detector missed; outside the box and nodata stay sure background.

As :mod:`jmlnet_geo.proposals.grabcut`, OpenCV's random generator is reset before each box, so a
box's mask depends only on the box, its crop and its DetCAM (byte-identical outputs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from jmlnet_geo.config import CAMCUT_LOW
from jmlnet_geo.proposals.crop import BoxCrop
from jmlnet_geo.proposals.grabcut import MIN_BACKGROUND_PIXELS, grabcut_from_mask


@dataclass(frozen=True)
class CAMCutOptions:
    """Options of CAMCut.

    Attributes:
        iterations: GrabCut iterations.
        low: What the box's pixels at or below tau_low start as: ``sure`` background (the
            paper's) or ``probable`` background.
    """

    iterations: int = 5
    low: Literal["sure", "probable"] = CAMCUT_LOW[0]


def heat_at_crop_scale(heat: np.ndarray, crop: BoxCrop) -> np.ndarray:
    """A box's DetCAM at full resolution (rows, cols) -> the crop's box region (bilinear)."""
    c0, r0, c1, r1 = crop.box
    shape = (r1 - r0, c1 - c0)
    if heat.shape == shape:
        return heat
    return cv2.resize(heat.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def camcut_init(
    crop: BoxCrop, heat: np.ndarray, tau_low: float, tau_high: float, low: str = CAMCUT_LOW[0]
) -> np.ndarray:
    """GrabCut's initial mask for one box (Eqs. 11-13).

    Args:
        crop: The box and its context.
        heat: float (rows, cols) DetCAM of the box in [0, 1], at full resolution or already at
            the crop's scale.
        tau_low: D_l = D > tau_low.
        tau_high: D_h = D > tau_high.
        low: ``sure`` (``GC_BGD``) or ``probable`` (``GC_PR_BGD``) background for the box's
            pixels not in D_l.

    Returns:
        uint8 (crop rows, crop cols) of ``cv2.GC_FGD`` / ``GC_PR_FGD`` / ``GC_BGD`` (and
        ``GC_PR_BGD`` with ``low="probable"``).

    Raises:
        ValueError: ``low`` is not one of :data:`CAMCUT_LOW`.
    """
    if low not in CAMCUT_LOW:
        raise ValueError(f"camcut low {low!r}: use one of {', '.join(CAMCUT_LOW)}")
    region = heat_at_crop_scale(heat, crop)
    mask = np.full(crop.valid.shape, cv2.GC_BGD, np.uint8)
    below = cv2.GC_BGD if low == "sure" else cv2.GC_PR_BGD
    inner = np.full(region.shape, below, np.uint8)
    inner[region > tau_low] = cv2.GC_PR_FGD
    inner[region > tau_high] = cv2.GC_FGD
    c0, r0, c1, r1 = crop.box
    mask[r0:r1, c0:c1] = inner
    mask[~crop.valid] = cv2.GC_BGD
    return mask


def camcut_mask(
    crop: BoxCrop,
    heat: np.ndarray,
    tau_low: float,
    tau_high: float,
    options: CAMCutOptions = CAMCutOptions(),
) -> np.ndarray | None:
    """Foreground of one box by CAMCut.

    Args:
        crop: The box and its context (:func:`jmlnet_geo.proposals.crop.read_crop`).
        heat: float (rows, cols) DetCAM of the box in [0, 1] (full resolution or crop scale).
        tau_low: Low threshold (D_l = D > tau_low).
        tau_high: High threshold (D_h = D > tau_high).
        options: GrabCut iterations and the start of the box's pixels below tau_low.

    Returns:
        bool (box rows, box cols) at the crop's scale: True on the object, a superset of D_h
        there; None when GrabCut cannot run (no pixel above tau_low in the box, too little
        background to model, or colours k-means cannot split).
    """
    mask = camcut_init(crop, heat, tau_low, tau_high, options.low)
    foreground = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
    if not foreground.any() or (mask == cv2.GC_BGD).sum() < MIN_BACKGROUND_PIXELS:
        return None
    return grabcut_from_mask(crop, mask, options.iterations)
