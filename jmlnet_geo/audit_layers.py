"""The audit's two layers: the box layer with its scores, and the ``missing`` candidates.

:func:`audit_frame` and :func:`missing_frame` turn per-scene scores (pixel space, see
:mod:`jmlnet_geo.audit_run`) into GeoDataFrames in the box layer's CRS; :func:`write_audit`
writes both into one GeoPackage atomically.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import geopandas as gpd
import numpy as np
import shapely

from jmlnet_geo.errors import display_path
from jmlnet_geo.io.vector import SceneBoxes

if TYPE_CHECKING:
    from jmlnet_geo.audit_run import SceneAudit

#: Columns the audit adds to the box layer.
COLUMNS = ("feature", "scene", "agreement", "fill", "proposal_extent", "fallback", "appearance",
           "appearance_class", "size_ratio", "class_share", "other_class", "other_share",
           "extent_iou", "doubt", "reason")  # fmt: skip
#: Columns holding a class id (written as the class's name, "" for 0).
CLASS_COLUMNS = ("other_class", "appearance_class")
BOXES_LAYER, MISSING_LAYER = "boxes", "missing"


def audit_frame(
    original: gpd.GeoDataFrame,
    scene_boxes: Sequence[SceneBoxes],
    audits: Sequence[SceneAudit],
    class_names: Sequence[str],
) -> gpd.GeoDataFrame:
    """The input layer with the audit's columns, most doubtful first (NaN doubts last).

    A feature on several scenes keeps the scores of the scene where its box is largest.
    """
    n = len(original)
    columns: dict[str, list] = {c: [math.nan] * n for c in COLUMNS}
    columns["feature"] = list(range(n))
    columns["scene"] = [""] * n
    columns["reason"] = [""] * n
    for key in CLASS_COLUMNS:
        columns[key] = [""] * n
    best = np.full(n, -1.0)
    for sb, audit in zip(scene_boxes, audits, strict=True):
        areas = (sb.xyxy[:, 2] - sb.xyxy[:, 0]) * (sb.xyxy[:, 3] - sb.xyxy[:, 1])
        for feature, area, row in zip(sb.features, areas, audit.rows, strict=True):
            if area <= best[feature]:
                continue
            best[feature] = area
            columns["scene"][feature] = sb.scene.name
            for key, value in row.items():
                if key in CLASS_COLUMNS:
                    value = class_names[value - 1] if value else ""
                columns[key][feature] = value
    frame = original.drop(columns=[c for c in COLUMNS if c in original.columns])
    for key in COLUMNS:
        frame[key] = columns[key]
    order = np.lexsort((frame["feature"].to_numpy(), -frame["doubt"].fillna(-1.0).to_numpy()))
    return frame.iloc[order].reset_index(drop=True)


def missing_frame(
    scene_boxes: Sequence[SceneBoxes],
    audits: Sequence[SceneAudit],
    class_names: Sequence[str],
    crs,
) -> gpd.GeoDataFrame:
    """The ``missing`` layer: one envelope per component, best score first, in ``crs``."""
    rows, geoms, scene_crs = [], [], None
    for sb, audit in zip(scene_boxes, audits, strict=True):
        t = sb.scene.transform
        for comp in audit.missing:
            c0, r0, c1, r1 = comp.box
            x0, y0 = t @ (c0, r0)
            x1, y1 = t @ (c1, r1)
            geom = shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
            if sb.scene.georeferenced and crs is not None and sb.scene.crs != crs:
                geom = gpd.GeoSeries([geom], crs=sb.scene.crs).to_crs(crs).iloc[0]
            scene_crs = scene_crs or (sb.scene.crs if sb.scene.georeferenced else None)
            geoms.append(geom)
            rows.append({
                "class": class_names[comp.class_id - 1],
                "score": comp.score,
                "pixels": comp.pixels,
                "looks_like": comp.looks_like,
                "scene": sb.scene.name,
                "image": sb.scene.name,
            })  # fmt: skip
    columns = ["class", "score", "pixels", "looks_like", "scene", "image"]
    frame = gpd.GeoDataFrame(rows, columns=columns, geometry=geoms, crs=crs or scene_crs)
    if any(sb.scene.georeferenced for sb in scene_boxes):
        frame = frame.drop(columns="image")
    return frame.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)


def write_audit(
    boxes: gpd.GeoDataFrame, missing: gpd.GeoDataFrame | None, out: str | os.PathLike[str]
) -> None:
    """Write layers ``boxes`` and (when given) ``missing`` into one GeoPackage, atomically.

    Raises:
        OutputError: ``out`` is not a .gpkg or cannot be written.
    """
    from jmlnet_geo.errors import OutputError
    from jmlnet_geo.io.write import atomic_output

    if Path(out).suffix.lower() != ".gpkg":
        raise OutputError(f"{display_path(out)}: the audit is a GeoPackage; name it *.gpkg")
    with atomic_output(out) as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*'crs' was not provided.*")
        boxes.to_file(tmp, driver="GPKG", layer=BOXES_LAYER)
        if missing is not None:
            missing.to_file(tmp, driver="GPKG", layer=MISSING_LAYER, mode="a")
