"""Quick-look PNGs: a proposal raster over its scene with the boxes drawn, to look, not read."""

from __future__ import annotations

import os
import warnings

import cv2
import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from jmlnet_geo.io.class_raster import class_colours
from jmlnet_geo.io.raster import Scene, open_dataset
from jmlnet_geo.io.write import atomic_output
from jmlnet_geo.proposals.crop import Stretch
from jmlnet_geo.vocabulary import IGNORE


def save_preview(
    path: str | os.PathLike[str],
    scene: Scene,
    stretch: Stretch,
    proposal_path: str | os.PathLike[str],
    boxes: np.ndarray,
    class_ids: np.ndarray,
    num_classes: int,
    max_side: int = 1024,
    opacity: float = 0.5,
) -> None:
    """Write a PNG of the scene (shrunk to ``max_side``) with the proposal blended in.

    Args:
        path: The PNG to write.
        scene: The scene.
        stretch: How its bands become RGB.
        proposal_path: Its proposal class raster.
        boxes: int64 (N, 4) box pixel bounds in the scene (col0, row0, col1, row1).
        class_ids: int64 (N,) class id of each box.
        num_classes: K, for the colours.
        max_side: Longest side of the PNG in pixels.
        opacity: Weight of the class colours over the picture.
    """
    scale = min(1.0, max_side / max(scene.width, scene.height))
    shape = (max(1, round(scene.height * scale)), max(1, round(scene.width * scale)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with open_dataset(scene) as ds:
            image = ds.read(scene.bands, out_shape=(scene.count, *shape))
        with rasterio.open(proposal_path) as ds:
            classes = ds.read(1, out_shape=shape)
    picture = stretch.apply(image).astype(np.float32)
    lut = np.zeros((256, 3), np.float32)
    lut[1 : num_classes + 1] = class_colours(num_classes)
    painted = (classes > 0) & (classes != IGNORE)
    picture[painted] = (1 - opacity) * picture[painted] + opacity * lut[classes[painted]]
    picture[classes == IGNORE] *= 0.3
    out = np.ascontiguousarray(picture.astype(np.uint8)[..., ::-1])  # OpenCV writes BGR
    for (c0, r0, c1, r1), class_id in zip(boxes * scale, class_ids, strict=True):
        colour = tuple(int(v) for v in lut[class_id][::-1])
        cv2.rectangle(out, (round(c0), round(r0)), (round(c1) - 1, round(r1) - 1), colour, 1)
    with atomic_output(path) as tmp:
        if not cv2.imwrite(tmp, out):
            raise OSError(f"cannot write {tmp}")
