"""What ``jmlgeo info`` reports: scene headers, band statistics, and boxes per class per scene."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

from jmlnet_geo.io.raster import band_statistics, open_scenes
from jmlnet_geo.io.vector import BoxesDroppedWarning, boxes_for_scenes, read_boxes


def describe(
    scene_paths: Sequence[str | os.PathLike[str]],
    boxes_path: str | os.PathLike[str] | None = None,
    class_field: str = "class",
    min_box_size: float = 2.0,
) -> dict[str, Any]:
    """A JSON-ready report of scenes and, when given, their boxes.

    Returns:
        ``{"scenes": [...], "boxes": {...} | None}``. Each scene has path, crs, width, height,
        resolution, bounds, bands, dtype, nodata, georeferenced and per-band statistics. Boxes
        have the layer path, CRS, class names by id, features read, boxes kept, and per scene:
        boxes per class, boxes clipped at the edge.

    Raises:
        JmlGeoError: Any bad input, as the readers raise it.
    """
    scenes = open_scenes(scene_paths)
    report: dict[str, Any] = {"scenes": [], "boxes": None}
    for scene in scenes:
        report["scenes"].append(
            {
                "path": scene.path,
                "crs": scene.crs_name,
                "georeferenced": scene.georeferenced,
                "width": scene.width,
                "height": scene.height,
                "resolution": list(scene.res),
                "bounds": list(scene.bounds),
                "bands": scene.count,
                "dtype": scene.dtype,
                "nodata": scene.nodata,
                "statistics": [vars(s) for s in band_statistics(scene)],
            }
        )
    if boxes_path is None:
        return report
    layer = read_boxes(boxes_path, class_field=class_field)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", BoxesDroppedWarning)
        per_scene = boxes_for_scenes(layer, scenes, min_size=min_box_size)
    kept = {int(f) for sb in per_scene for f in sb.features}
    report["boxes"] = {
        "path": layer.path,
        "crs": None if layer.crs is None else layer.crs.to_string(),
        "classes": list(layer.classes.names),
        "features": len(layer.frame) + layer.empty,
        "kept": len(kept),
        "dropped_empty": layer.empty,
        "dropped_outside_or_small": len(layer.frame) - len(kept),
        "per_scene": [
            {
                "scene": sb.scene.path,
                "boxes": len(sb),
                "clipped": sb.clipped,
                "per_class": {name: sb.class_counts.get(name, 0) for name in layer.classes.names},
            }
            for sb in per_scene
        ],
    }
    for warning in caught:  # re-emit so that the caller's filters decide
        warnings.warn(warning.message, warning.category, stacklevel=2)
    return report
