"""The crop around one box that per-box proposal methods work on.

Every method sees the same thing: an 8-bit, 3-channel picture of the box plus a context margin,
read straight from the scene (so it is never cut by tile edges), its validity mask, and where the
box lies in it. Crops larger than ``max_side`` are shrunk first (very large boxes are processed
at a capped resolution) and the method's mask is brought back to the box's full size afterwards.

Coordinates: a box in scene pixels is ``(col0, row0, col1, row1)`` with integer bounds, end
exclusive; pixel ``(r, c)`` belongs to a box of float bounds ``x0..x1`` when its centre
``c + 0.5`` lies inside (the rasterisation rule of GDAL and ``jmlgeo evaluate``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import rasterio
from rasterio.windows import Window

from jmlnet_geo.io.raster import BandStats, Scene, read_window


@dataclass(frozen=True)
class Stretch:
    """How scene bands become the 8-bit RGB picture that GrabCut and the CRF work on.

    Attributes:
        bands: Three 0-based indexes into the scene's image bands (repeated for 1-2 band scenes).
        low: float64 (3,): value mapped to 0, per picture channel.
        high: float64 (3,): value mapped to 255, per picture channel.
    """

    bands: tuple[int, int, int]
    low: tuple[float, float, float]
    high: tuple[float, float, float]

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Scene pixels (bands, h, w), any dtype -> uint8 (h, w, 3) picture."""
        picked = image[list(self.bands)].astype(np.float32)
        low = np.asarray(self.low, np.float32)[:, None, None]
        span = np.maximum(np.asarray(self.high, np.float32)[:, None, None] - low, 1e-6)
        scaled = np.clip((picked - low) * (255.0 / span), 0, 255)
        return np.ascontiguousarray(np.rint(scaled).astype(np.uint8).transpose(1, 2, 0))


def picture_stretch(
    scene: Scene, stats: Sequence[BandStats], bands: Sequence[int] | None = None
) -> Stretch:
    """The stretch for a scene: uint8 scenes as they are, others mean +- 2.5 std per band.

    Args:
        scene: The scene.
        stats: Its band statistics (:func:`jmlnet_geo.io.raster.band_statistics`).
        bands: 0-based image bands to show as R, G, B; default the first three (or the first
            band repeated for one- and two-band scenes).
    """
    if bands is None:
        bands = (0, 1, 2) if scene.count >= 3 else (0, 0, 0)
    bands = tuple(int(b) for b in bands)
    if len(bands) != 3 or not all(0 <= b < scene.count for b in bands):
        raise ValueError(f"picture bands {bands} must be three indexes below {scene.count}")
    if scene.dtype == "uint8":
        return Stretch(bands, (0.0,) * 3, (255.0,) * 3)  # type: ignore[arg-type]
    low, high = [], []
    for b in bands:
        s = stats[b]
        if math.isnan(s.mean):
            lo, hi = 0.0, 1.0
        else:
            lo = max(s.minimum, s.mean - 2.5 * s.std)
            hi = min(s.maximum, s.mean + 2.5 * s.std)
            if hi <= lo:
                lo, hi = s.minimum, s.minimum + 1.0
        low.append(float(lo))
        high.append(float(hi))
    return Stretch(bands, tuple(low), tuple(high))  # type: ignore[arg-type]


def box_pixels(xyxy: Sequence[float]) -> tuple[int, int, int, int]:
    """Integer pixel bounds (col0, row0, col1, row1), end exclusive, of a float box.

    A pixel belongs to the box when its centre lies inside; at least one pixel per side.
    """
    col0, row0 = math.floor(xyxy[0] + 0.5), math.floor(xyxy[1] + 0.5)
    col1 = max(math.floor(xyxy[2] + 0.5), col0 + 1)
    row1 = max(math.floor(xyxy[3] + 0.5), row0 + 1)
    return col0, row0, col1, row1


@dataclass
class BoxCrop:
    """A box and its context, ready for a proposal method.

    Attributes:
        picture: uint8 (h, w, 3): the crop as an 8-bit picture (possibly shrunk).
        valid: bool (h, w): False where the scene is nodata.
        box: (col0, row0, col1, row1) of the box in ``picture`` pixels, end exclusive.
        box_shape: (rows, cols) of the box at the scene's full resolution.
        scale: ``picture`` pixels per scene pixel (1.0 unless the crop was shrunk).
    """

    picture: np.ndarray
    valid: np.ndarray
    box: tuple[int, int, int, int]
    box_shape: tuple[int, int]
    scale: float

    def box_region(self, mask: np.ndarray) -> np.ndarray:
        """The part of a (h, w) crop-sized array that lies in the box."""
        c0, r0, c1, r1 = self.box
        return mask[r0:r1, c0:c1]


def crop_window(
    scene: Scene, box: tuple[int, int, int, int], margin: float = 0.5, min_margin: int = 16
) -> tuple[int, int, int, int]:
    """The crop :func:`read_crop` reads around a box, before any shrinking.

    Args:
        scene: The scene (its pixel size clips the crop).
        box: Integer pixel bounds (col0, row0, col1, row1) from :func:`box_pixels`.
        margin: Context on each side, as a fraction of the box's larger side.
        min_margin: Context of at least this many pixels on each side.

    Returns:
        (col0, row0, col1, row1) of the crop in scene pixels, end-exclusive.
    """
    col0, row0, col1, row1 = box
    pad = max(min_margin, math.ceil(margin * max(col1 - col0, row1 - row0)))
    c0, r0 = max(0, col0 - pad), max(0, row0 - pad)
    return c0, r0, min(scene.width, col1 + pad), min(scene.height, row1 + pad)


def read_crop(
    ds: rasterio.DatasetReader,
    scene: Scene,
    box: tuple[int, int, int, int],
    stretch: Stretch,
    margin: float = 0.5,
    min_margin: int = 16,
    max_side: int = 512,
) -> BoxCrop:
    """Read the crop of a box: the box plus a margin on each side, clipped to the scene.

    Args:
        ds: The scene's open dataset.
        scene: The scene.
        box: Integer pixel bounds from :func:`box_pixels`.
        stretch: From :func:`picture_stretch`.
        margin: Context on each side, as a fraction of the box's larger side.
        min_margin: Context of at least this many pixels on each side.
        max_side: Crops with a longer side are shrunk to this many pixels.
    """
    col0, row0, col1, row1 = box
    c0, r0, c1, r1 = crop_window(scene, box, margin, min_margin)
    image, valid = read_window(ds, scene, Window(c0, r0, c1 - c0, r1 - r0))
    picture = stretch.apply(image)
    inner = (col0 - c0, row0 - r0, col1 - c0, row1 - r0)
    scale = min(1.0, max_side / max(c1 - c0, r1 - r0))
    if scale < 1.0:
        size = (max(1, round((c1 - c0) * scale)), max(1, round((r1 - r0) * scale)))
        picture = cv2.resize(picture, size, interpolation=cv2.INTER_AREA)
        valid = cv2.resize(valid.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
        inner = _scaled_box(inner, scale, size)
    return BoxCrop(picture, valid, inner, (row1 - row0, col1 - col0), scale)


def _scaled_box(
    box: tuple[int, int, int, int], scale: float, size: tuple[int, int]
) -> tuple[int, int, int, int]:
    c0 = min(size[0] - 1, math.floor(box[0] * scale))
    r0 = min(size[1] - 1, math.floor(box[1] * scale))
    c1 = max(c0 + 1, min(size[0], math.ceil(box[2] * scale)))
    r1 = max(r0 + 1, min(size[1], math.ceil(box[3] * scale)))
    return c0, r0, c1, r1


def full_size(mask: np.ndarray, crop: BoxCrop) -> np.ndarray:
    """A method's box-region mask (bool, crop scale) at the box's full size: bool (rows, cols)."""
    rows, cols = crop.box_shape
    if mask.shape == (rows, cols):
        return mask
    soft = cv2.resize(mask.astype(np.float32), (cols, rows), interpolation=cv2.INTER_LINEAR)
    return soft >= 0.5
