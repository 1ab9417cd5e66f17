"""The ``model`` proposal (self-training, the BoxSup idea): a trained model's map inside the boxes.

After stage 1, the stage-1 segmenter's prediction of a scene (a class raster on the scene's grid,
as :meth:`jmlnet_geo.predict.Predictor.predict` writes it) becomes one more proposal: inside each
box, the pixels predicted as the box's class; outside every box, background; 255 where the scene
is nodata. A box where the model finds less than ``min_fraction`` of it falls back to the filled
box, as the other methods do. The raster is painted like every proposal
(:func:`jmlnet_geo.proposals.compose.paint_proposal`: large boxes first, ``<stem>.model.tif``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from jmlnet_geo.errors import InputFileError, display_path
from jmlnet_geo.io.vector import SceneBoxes
from jmlnet_geo.proposals.agreement import box_masks_from_raster
from jmlnet_geo.proposals.compose import MethodSummary, paint_proposal, pixel_boxes

#: The method name of the model proposal (file ``<stem>.model.tif``).
MODEL_METHOD = "model"


def model_box_masks(
    predicted: str | os.PathLike[str],
    boxes: np.ndarray,
    class_ids: np.ndarray,
    min_fraction: float = 0.01,
) -> tuple[list[np.ndarray], list[bool]]:
    """Per box, the pixels a model predicted as the box's class.

    Args:
        predicted: Single-band uint8 class raster on the scene's grid (0 background, 1..K).
        boxes: int64 (N, 4) col0, row0, col1, row1 in scene pixels, end exclusive.
        class_ids: int64 (N,) class ids 1..K of the boxes.
        min_fraction: A mask covering less of its box than this falls back to the filled box.

    Returns:
        ``(masks, fallbacks)``: per box, bool (row1 - row0, col1 - col0), and whether it fell
        back.
    """
    masks, fallbacks = [], []
    for mask in box_masks_from_raster(predicted, boxes, class_ids):
        fallback = mask.size == 0 or mask.mean() < min_fraction
        masks.append(np.ones(mask.shape, bool) if fallback else mask)
        fallbacks.append(bool(fallback))
    return masks, fallbacks


def write_model_proposal(
    path: str | os.PathLike[str],
    scene_boxes: SceneBoxes,
    predicted: str | os.PathLike[str],
    class_names: Sequence[str],
    min_fraction: float = 0.01,
) -> MethodSummary:
    """Write the ``model`` proposal raster of one scene from a model's class raster of it.

    Args:
        path: Output GeoTIFF (``proposal_path(out_dir, scene, MODEL_METHOD)``).
        scene_boxes: The scene and its boxes.
        predicted: The model's class raster of the scene, on its exact grid.
        class_names: Names of class ids 1..K.
        min_fraction: See :func:`model_box_masks`.

    Returns:
        What was written: the path, the boxes and how many fell back to the filled box.

    Raises:
        InputFileError: ``predicted`` is missing or not on the scene's grid.
    """
    import rasterio

    scene = scene_boxes.scene
    if not os.path.exists(predicted):
        raise InputFileError(f"{display_path(predicted)}: predicted class raster not found")
    with rasterio.open(predicted) as ds:
        if (ds.width, ds.height) != (scene.width, scene.height) or not (
            ds.transform.almost_equals(scene.transform)
        ):
            raise InputFileError(
                f"{display_path(predicted)}: not on the grid of {display_path(scene.path)}; "
                "predict the scene itself"
            )
    boxes = pixel_boxes(scene_boxes)
    masks, fallbacks = model_box_masks(predicted, boxes, scene_boxes.class_ids, min_fraction)
    paint_proposal(path, scene_boxes, boxes, masks, class_names, MODEL_METHOD)
    return MethodSummary(path=os.fspath(path), boxes=len(masks), fallbacks=int(sum(fallbacks)))
