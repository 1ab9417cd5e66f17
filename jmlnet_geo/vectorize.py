"""Class rasters to polygons: one polygon per connected region of a class, in the scene's CRS.

The raster is read in strips of rows, so memory follows the strip, not the scene. Regions cut by
a strip border are merged afterwards (per class, only the polygons touching a border), so the
result equals vectorising the whole raster at once. Background (0) and nodata (255) are not
vectorised. Optional: drop regions below ``min_area`` (map units², pixels² for plain images) and
simplify outlines with a tolerance in map units (topology kept per polygon).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from rasterio.errors import NotGeoreferencedWarning
from rasterio.features import shapes
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from jmlnet_geo.errors import InputFileError, display_path
from jmlnet_geo.io.class_raster import read_class_names
from jmlnet_geo.io.write import write_vector
from jmlnet_geo.vocabulary import BACKGROUND, IGNORE

#: Rows vectorised at once.
STRIP_ROWS = 2048


def vectorize(
    class_raster: str | os.PathLike[str],
    class_names: Sequence[str] | None = None,
    min_area: float = 0.0,
    simplify: float = 0.0,
    strip_rows: int = STRIP_ROWS,
) -> gpd.GeoDataFrame:
    """Polygons of a class raster with ``class_id``, ``class_name`` and ``area`` columns.

    Args:
        class_raster: uint8 class raster (0 background, 1..K, 255 nodata).
        class_names: Names of ids 1..K; default: the raster's ``class_names`` tag.
        min_area: Drop polygons smaller than this (map units²).
        simplify: Douglas-Peucker tolerance in map units (0: exact pixel outlines).
        strip_rows: Rows per strip.

    Raises:
        InputFileError: The file is missing or not a one-band class raster.
    """
    shown = display_path(class_raster)
    if not os.path.exists(class_raster):
        raise InputFileError(f"{shown}: class raster not found; check the path")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        ds = rasterio.open(class_raster)
    with ds:
        if ds.count != 1 or ds.dtypes[0] != "uint8":
            raise InputFileError(f"{shown}: not a one-band uint8 class raster")
        names = tuple(class_names) if class_names else (read_class_names(ds) or ())
        finished, open_parts = [], []
        for row in range(0, ds.height, strip_rows):
            window = Window(0, row, ds.width, min(strip_rows, ds.height - row))
            values = ds.read(1, window=window)
            mask = (values != BACKGROUND) & (values != IGNORE)
            transform = window_transform(window, ds.transform)
            top, bottom = row, row + window.height
            for geometry, value in shapes(values, mask=mask, transform=transform):
                polygon = shapely.geometry.shape(geometry)
                rows = _pixel_rows(polygon, ds.transform)
                touches = (rows[0] <= top and top > 0) or (rows[1] >= bottom and bottom < ds.height)
                (open_parts if touches else finished).append((int(value), polygon))
        crs = ds.crs
    for value in sorted({v for v, _ in open_parts}):
        merged = shapely.union_all([p for v, p in open_parts if v == value])
        finished.extend((value, part) for part in getattr(merged, "geoms", [merged]))
    frame = gpd.GeoDataFrame(
        {
            "class_id": np.array([v for v, _ in finished], np.int32),
            "class_name": [_name(names, v) for v, _ in finished],
        },
        geometry=[p for _, p in finished],
        crs=crs,
    )
    if simplify > 0:
        frame["geometry"] = frame.geometry.simplify(simplify, preserve_topology=True)
    frame["area"] = frame.geometry.area
    if min_area > 0:
        frame = frame[frame["area"] >= min_area]
    return frame.sort_values(["class_id", "area"], ascending=[True, False]).reset_index(drop=True)


def write_polygons(
    class_raster: str | os.PathLike[str],
    out: str | os.PathLike[str],
    class_names: Sequence[str] | None = None,
    min_area: float = 0.0,
    simplify: float = 0.0,
) -> gpd.GeoDataFrame:
    """Vectorise a class raster and write the polygons (layer ``polygons``) atomically."""
    frame = vectorize(class_raster, class_names, min_area, simplify)
    write_vector(frame, out, layer="polygons")
    return frame


def _pixel_rows(polygon, transform) -> tuple[float, float]:
    """Top and bottom rows (scene pixels) of a polygon's envelope."""
    minx, miny, maxx, maxy = polygon.bounds
    inverse = ~transform
    rows = [(inverse @ (x, y))[1] for x in (minx, maxx) for y in (miny, maxy)]
    return round(min(rows)), round(max(rows))


def _name(names: Sequence[str], value: int) -> str:
    return names[value - 1] if 0 < value <= len(names) else f"class {value}"
