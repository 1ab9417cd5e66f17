"""Truth on a class raster's grid: polygons or a class raster -> uint8 class ids, window by window.

Truth is either a polygon layer with a class column (read by the rules of box layers, see
:mod:`jmlnet_geo.io.vector`, but each polygon keeps its exact shape) or a class raster on the
same grid. Polygons are reprojected to the grid's CRS (or, for plain images, taken in pixel
coordinates and tied by their ``image`` column), then burnt with the pixel-centre rule, the large
polygons first so that a small polygon inside a large one stays visible. Output pixels: 0
background, 1..K class ids, 255 ignore (a truth raster's nodata).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import rasterio
import shapely.geometry
from rasterio.features import rasterize
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from jmlnet_geo.errors import InputFileError, NoOverlapError, display_path
from jmlnet_geo.evaluate.metrics import EvaluationError
from jmlnet_geo.io.class_raster import class_raster_writer, read_class_names, strips
from jmlnet_geo.io.raster import Scene, open_dataset, open_scene, read_window
from jmlnet_geo.io.vector import frame_in_scene_space, read_boxes
from jmlnet_geo.vocabulary import BACKGROUND, IGNORE

__all__ = [
    "STRIP_PIXELS",
    "VECTOR_SUFFIXES",
    "EmptyTruthWarning",
    "TruthSource",
    "check_class_raster",
    "read_classes",
    "strip_windows",
    "truth_raster",
    "truth_source",
    "check_truth_overlap",
    "write_truth_raster",
]

#: Truth files with these extensions are polygon layers; anything else is read as a raster.
VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb")

#: Pixels read per strip (rows x width) when evaluating a scene.
STRIP_PIXELS = 1 << 24


class EmptyTruthWarning(UserWarning):
    """No truth polygon falls on the class raster: its truth is all background."""


@dataclass(frozen=True)
class TruthSource:
    """Truth readable window by window on a class raster's grid.

    Attributes:
        read: ``read(window)`` -> uint8 (h, w) class ids of that window of the grid.
        classes: Class names of ids 1..K the truth carries (a layer's, or a raster's tag), or
            None when a truth raster has no tag.
    """

    read: Callable[[Window], np.ndarray]
    classes: tuple[str, ...] | None
    polygons: int | None = None
    outside: int = 0
    extents: str = ""


def check_truth_overlap(sources: Sequence[TruthSource], truth: str, rasters: str) -> None:
    """Refuse to score when the truth layer has polygons but none on any of the rasters.

    Such a truth (another CRS, another area) would give every raster an all-background truth
    and a plausible-looking mIoU.

    Raises:
        NoOverlapError: Names the truth file, the rasters and both extents.
    """
    if sources and all(s.polygons == 0 for s in sources) and any(s.outside for s in sources):
        raise NoOverlapError(
            f"{truth}: none of its truth polygons overlaps {rasters} ({sources[0].extents}); "
            "is the layer in another CRS or of another area? nothing was scored"
        )


def strip_windows(scene: Scene, pixels: int = STRIP_PIXELS) -> list[Window]:
    """Full-width windows of about ``pixels`` pixels covering the scene top to bottom."""
    return list(strips(scene, max(1, pixels // max(scene.width, 1))))


def truth_source(
    scene: Scene,
    truth_path: str | os.PathLike[str],
    class_field: str = "class",
    classes: Sequence[str] | None = None,
) -> TruthSource:
    """The truth of ``scene``'s grid, to read window by window (nothing is rasterised yet).

    Arguments and errors as :func:`truth_raster`, but ``scene`` is a header.
    """
    shown = display_path(truth_path)
    if not os.path.exists(truth_path):
        raise InputFileError(f"{shown}: truth file not found; check the path")
    if os.path.splitext(os.fspath(truth_path))[1].lower() in VECTOR_SUFFIXES:
        return _polygon_truth(scene, truth_path, class_field, classes)
    return _raster_truth(scene, truth_path)


def truth_raster(
    scene: Scene | str | os.PathLike[str],
    truth_path: str | os.PathLike[str],
    class_field: str = "class",
    classes: Sequence[str] | None = None,
) -> np.ndarray:
    """The truth of a class raster on its grid.

    Args:
        scene: The class raster (its header, or its path) whose grid the truth takes.
        truth_path: A polygon layer (GPKG, GeoJSON, Shapefile, FlatGeobuf) with a class column,
            or a class raster on the same grid.
        class_field: The polygon layer's class column (strings or integers).
        classes: Class names of ids 1..K; default: the layer's sorted class values.

    Returns:
        uint8 (H, W): 0 background, 1..K class ids, 255 ignore (a truth raster's nodata).

    Raises:
        InputFileError: A file is missing or unreadable.
        BoxLayerError: The layer has no usable polygons or class column (see ``read_boxes``).
        CRSMismatchError: The layer and the scene cannot be put in one coordinate system.
        EvaluationError: A truth raster on another grid, or not holding class ids.
    """
    if not isinstance(scene, Scene):
        scene = open_scene(scene)
    source = truth_source(scene, truth_path, class_field, classes)
    return source.read(Window(0, 0, scene.width, scene.height))


def write_truth_raster(
    path: str | os.PathLike[str],
    scene: Scene,
    truth_path: str | os.PathLike[str],
    class_field: str = "class",
    classes: Sequence[str] | None = None,
) -> None:
    """Rasterise truth onto ``scene``'s grid as a class raster, strip by strip (for training).

    Args:
        path: Output GeoTIFF.
        scene: The scene whose grid the truth takes.
        truth_path: Polygon layer or class raster (see :func:`truth_raster`).
        class_field: The polygon layer's class column.
        classes: Class names of ids 1..K (e.g. the box layer's), so ids agree.
    """
    source = truth_source(scene, truth_path, class_field, classes)
    names = classes if classes is not None else (source.classes or ())
    with class_raster_writer(path, scene, names, {"source": os.path.basename(truth_path)}) as ds:
        for window in strip_windows(scene):
            ds.write(source.read(window), 1, window=window)


def check_class_raster(scene: Scene) -> None:
    """Raise :class:`EvaluationError` unless ``scene`` is one band of integers (class ids)."""
    shown = display_path(scene.path)
    if scene.count != 1:
        raise EvaluationError(
            f"{shown}: has {scene.count} bands; pass a one-band class raster "
            "(0 background, 1..K classes, 255 ignore), not an image or probabilities"
        )
    if not np.issubdtype(np.dtype(scene.dtype), np.integer):
        raise EvaluationError(
            f"{shown}: holds {scene.dtype} values; pass a uint8 class raster "
            "(0 background, 1..K classes, 255 ignore), not probabilities"
        )


def read_classes(ds: rasterio.DatasetReader, scene: Scene, window: Window) -> np.ndarray:
    """uint8 (h, w) class ids of a window, 255 where the raster is nodata or absent."""
    data, valid = read_window(ds, scene, window)
    band = data[0]
    out = np.full(band.shape, IGNORE, dtype=np.uint8)
    values = band[valid]
    if values.size and (values.min() < 0 or values.max() > IGNORE):
        raise EvaluationError(
            f"{display_path(scene.path)}: holds values outside 0..255; pass a uint8 class raster"
        )
    out[valid] = values
    return out


# --- sources ----------------------------------------------------------------------------------


def _polygon_truth(
    scene: Scene,
    truth_path: str | os.PathLike[str],
    class_field: str,
    classes: Sequence[str] | None,
) -> TruthSource:
    layer = read_boxes(truth_path, class_field=class_field, classes=classes)
    frame = frame_in_scene_space(layer, scene)
    frame = frame[~(frame.geometry.isna() | frame.geometry.is_empty)]
    left, bottom, right, top = scene.bounds
    on = frame.geometry.intersects(
        shapely.geometry.box(min(left, right), min(bottom, top), max(left, right), max(bottom, top))
    ).to_numpy()
    outside = len(layer.frame) - int(on.sum())
    extents = ""
    if len(frame):
        bounds = ", ".join(f"{v:.10g}" for v in frame.total_bounds)
        raster = ", ".join(f"{v:.10g}" for v in (left, bottom, right, top))
        extents = f"truth extent {bounds}, raster extent {raster} in {scene.crs_name}"
    frame = frame[on]
    # Large first, small last: later shapes overwrite earlier ones, so small ones stay visible.
    with warnings.catch_warnings():  # areas in degrees still order polygons by size
        warnings.simplefilter("ignore", UserWarning)
        areas = frame.geometry.area.to_numpy()
    order = np.argsort(-areas, kind="stable")
    shapes = list(
        zip(
            frame.geometry.to_numpy()[order],
            frame["class_id"].to_numpy(dtype=np.int64)[order].tolist(),
            strict=True,
        )
    )
    if not shapes:
        warnings.warn(
            f"{display_path(truth_path)}: no truth polygon for {scene.name}; "
            f"its truth is all background{f' ({extents})' if outside and extents else ''}",
            EmptyTruthWarning,
            stacklevel=3,
        )

    def read(window: Window) -> np.ndarray:
        height, width = int(window.height), int(window.width)
        if not shapes:
            return np.full((height, width), BACKGROUND, dtype=np.uint8)
        return rasterize(
            shapes,
            out_shape=(height, width),
            transform=window_transform(window, scene.transform),
            fill=BACKGROUND,
            all_touched=False,
            dtype=np.uint8,
        )

    return TruthSource(read, layer.classes.names, len(shapes), outside, extents)


def _raster_truth(scene: Scene, truth_path: str | os.PathLike[str]) -> TruthSource:
    truth = open_scene(truth_path)
    check_class_raster(truth)
    _check_same_grid(scene, truth)
    with open_dataset(truth) as ds:
        tagged = read_class_names(ds)

    def read(window: Window) -> np.ndarray:
        with open_dataset(truth) as ds:
            return read_classes(ds, truth, window)

    return TruthSource(read=read, classes=tagged)


def _check_same_grid(scene: Scene, truth: Scene) -> None:
    same = (scene.width, scene.height) == (truth.width, truth.height)
    same = same and scene.transform.almost_equals(truth.transform, precision=1e-6 * scene.res[0])
    if same and scene.crs is not None and truth.crs is not None:
        same = scene.crs == truth.crs
    if same:
        return
    left, bottom, right, top = scene.bounds
    raise EvaluationError(
        f"{display_path(truth.path)}: grid {truth.width}x{truth.height} in {truth.crs_name} "
        f"differs from {display_path(scene.path)} ({scene.width}x{scene.height} in "
        f"{scene.crs_name}); warp it onto that grid (gdalwarp -r near -t_srs {scene.crs_name} "
        f"-te {left:.10g} {bottom:.10g} {right:.10g} {top:.10g} -ts {scene.width} "
        f"{scene.height} truth.tif aligned.tif) or pass truth polygons"
    )
