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


#: Card entries that ``jmlgeo info BUNDLE`` reports by name; a bundle written before a field
#: existed reports it as not recorded. ``supervision`` and ``stages`` are looked up on the card
#: and then under ``training_data``.
BUNDLE_SECTIONS = ("supervision", "stages", "training_data", "validation", "versions", "config")


def describe_bundle(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A JSON-ready summary of a bundle's model card, read without loading the weights.

    Returns:
        path, format_version, size_bytes, total_parameters; ``classes`` (id, name, colour as
        ``#rrggbb``, background first); ``bands`` (count, names); ``normalization`` (mean, std
        per band); tile_size, resolution, crs_units, architecture; then each of
        :data:`BUNDLE_SECTIONS` (None when the card lacks it, and listed in ``not_recorded``);
        ``other``: any further card entries, as stored.

    Raises:
        InputFileError: Not a bundle.
    """
    from jmlnet_geo.card import read_card

    header = read_card(path)
    card = dict(header.card)
    names = list(card.pop("classes", []) or [])
    colours = list(card.pop("colours", []) or [])
    classes = [{"id": 0, "name": "background", "colour": "#000000"}]
    for class_id, name in enumerate(names, start=1):
        rgb = colours[class_id - 1] if class_id - 1 < len(colours) else None
        colour = "#{:02x}{:02x}{:02x}".format(*rgb[:3]) if rgb else None
        classes.append({"id": class_id, "name": name, "colour": colour})
    training_data = card.get("training_data") or {}
    report: dict[str, Any] = {
        "path": header.path,
        "format_version": header.format_version,
        "size_bytes": header.size_bytes,
        "total_parameters": header.total_parameters,
        "classes": classes,
        "bands": {"count": card.pop("bands", None), "names": card.pop("band_names", None)},
        "normalization": card.pop("normalization", None),
        "tile_size": card.pop("tile_size", None),
        "resolution": card.pop("resolution", None),
        "crs_units": card.pop("crs_units", None),
        "architecture": card.pop("architecture", None),
    }
    for key in BUNDLE_SECTIONS:
        value = card.pop(key, None)
        if value in (None, {}, []) and isinstance(training_data, dict):
            value = training_data.get(key) if key in ("supervision", "stages") else value
        report[key] = value if value not in ({}, []) else None
    report["not_recorded"] = [key for key in BUNDLE_SECTIONS if report[key] is None]
    report["other"] = card
    return report
