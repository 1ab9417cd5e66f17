"""Box layers: reading, class ids, and boxes in each scene's pixel space.

A box layer is any vector file GDAL reads (GPKG, GeoJSON, Shapefile, FlatGeobuf) whose features
are polygons; each feature's envelope is a box and a class column names its class. Class values
(strings or integers) map to stable class ids 1..K in sorted order (0 is background, 255 ignore),
unless the caller fixes the order (a model card does).

Boxes are reprojected to each scene's CRS (edges densified first, so a lon/lat rectangle
becomes the right envelope in UTM), converted to pixel coordinates, clipped to the scene, and
dropped when they end up outside every scene or smaller than ``min_size`` pixels on a side.
Plain images (no georeferencing) take the boxes in pixel coordinates whose image column names them.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from jmlnet_geo.errors import (
    BoxLayerError,
    CRSMismatchError,
    InputFileError,
    NoOverlapError,
    display_path,
)
from jmlnet_geo.io.raster import Scene
from jmlnet_geo.vocabulary import BACKGROUND, IGNORE, MAX_CLASSES  # noqa: F401  (jmlnet_geo.io exports them)

#: Image-file extensions tried when an image column holds a name without one (DOTA style).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


class BoxesDroppedWarning(UserWarning):
    """Some boxes were dropped (empty, outside every scene, or too small)."""


@dataclass(frozen=True)
class ClassMap:
    """Class names in class-id order: ``names[i]`` has class id ``i + 1``."""

    names: tuple[str, ...]

    def id_of(self, name: str) -> int:
        """Class id (1..K) of a class name."""
        return self.names.index(name) + 1

    def __len__(self) -> int:
        return len(self.names)


@dataclass(frozen=True)
class BoxLayer:
    """A box layer read from disk.

    Attributes:
        path: The file.
        frame: One row per usable feature: ``geometry`` (polygon, layer CRS), ``class_name``
            (str), ``class_id`` (int, 1..K), ``feature`` (int, 0-based row in the file) and,
            when the layer has one, ``image`` (str, the plain image the box belongs to).
        classes: Class names by class id.
        empty: Features dropped at reading because their geometry is empty or missing.
    """

    path: str
    frame: gpd.GeoDataFrame
    classes: ClassMap
    empty: int = 0

    @property
    def crs(self):
        """The layer's CRS (pyproj), or None."""
        return self.frame.crs


@dataclass
class SceneBoxes:
    """The boxes of one scene, in its pixel space.

    Attributes:
        scene: The scene.
        xyxy: float64 (N, 4): col_min, row_min, col_max, row_max, clipped to the scene.
        class_ids: int64 (N,): class ids 1..K.
        features: int64 (N,): row of each box in the box layer file.
        clipped: How many kept boxes reached past the scene edge.
    """

    scene: Scene
    xyxy: np.ndarray
    class_ids: np.ndarray
    features: np.ndarray
    clipped: int = 0
    class_counts: Counter = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.class_ids)

    def select(self, keep: Sequence[int] | np.ndarray) -> SceneBoxes:
        """The boxes at positions ``keep`` (int indices), in the same scene.

        ``clipped`` and ``class_counts`` (counts of the layer's reading) are not carried over.
        """
        keep = np.asarray(keep, np.int64)
        return SceneBoxes(self.scene, self.xyxy[keep], self.class_ids[keep], self.features[keep])


def read_boxes(
    path: str | os.PathLike[str],
    class_field: str = "class",
    classes: Sequence[str] | None = None,
    image_field: str = "image",
) -> BoxLayer:
    """Read a box layer and give each feature its class id.

    Args:
        path: Vector file.
        class_field: Column holding each box's class (strings or integers).
        classes: Fixed class order (e.g. from a model card). Default: sorted class values.
        image_field: Column naming the plain image of each box, used when present.

    Raises:
        InputFileError: The file is missing or not a vector layer.
        BoxLayerError: No features, a missing class column or values, non-polygon geometries,
            classes outside ``classes``, or more than 254 classes.
    """
    shown = display_path(path)
    if not os.path.exists(path):
        raise InputFileError(f"{shown}: box file not found; check the path")
    try:
        frame = gpd.read_file(path)
    except Exception as err:  # pyogrio raises DataSourceError and friends
        reason = str(err).splitlines()[0]
        raise InputFileError(
            f"{shown}: cannot be read as a vector layer ({reason}); "
            "pass a GeoPackage, GeoJSON, Shapefile or FlatGeobuf"
        ) from None
    if len(frame) == 0:
        raise BoxLayerError(f"{shown}: the layer has no features; draw or import boxes first")
    if class_field not in frame.columns:
        present = ", ".join(c for c in frame.columns if c != "geometry") or "none"
        raise BoxLayerError(
            f"{shown}: no class field '{class_field}' (columns: {present}); "
            "pass --class-field with one of them"
        )
    frame = frame.assign(feature=np.arange(len(frame)))
    missing = frame.geometry.isna() | frame.geometry.is_empty
    kept = frame[~missing]
    if len(kept) == 0:
        raise BoxLayerError(f"{shown}: every feature has an empty geometry; draw boxes first")
    kinds = kept.geometry.geom_type
    bad = kinds[~kinds.isin(["Polygon", "MultiPolygon"])]
    if len(bad):
        counts = ", ".join(f"{n} {kind}" for kind, n in bad.value_counts().items())
        raise BoxLayerError(
            f"{shown}: box layers need polygons, found {counts}; "
            "draw rectangles, or buffer points/lines first"
        )
    values = kept[class_field]
    if values.isna().any():
        raise BoxLayerError(
            f"{shown}: {int(values.isna().sum())} feature(s) have no value in '{class_field}'; "
            "fill or delete them"
        )
    names = _class_names(values)
    if classes is None:
        class_map = ClassMap(_sorted_classes(values))
    else:
        class_map = ClassMap(tuple(classes))
        unknown = sorted(set(names) - set(class_map.names))
        if unknown:
            raise BoxLayerError(
                f"{shown}: classes {', '.join(unknown)} are not among the expected "
                f"({', '.join(class_map.names)}); fix '{class_field}' or the class list"
            )
    if len(class_map) > MAX_CLASSES:
        raise BoxLayerError(
            f"{shown}: {len(class_map)} classes in '{class_field}', at most {MAX_CLASSES} "
            "are supported; is this the right column?"
        )
    ids = {name: i + 1 for i, name in enumerate(class_map.names)}
    out = gpd.GeoDataFrame(
        {
            "class_name": names.to_numpy(),
            "class_id": names.map(ids).to_numpy(dtype=np.int64),
            "feature": kept["feature"].to_numpy(),
        },
        geometry=kept.geometry.to_numpy(),
        crs=frame.crs,
    )
    if image_field in kept.columns:
        out["image"] = kept[image_field].astype(str).to_numpy()
    return BoxLayer(path=os.fspath(path), frame=out, classes=class_map, empty=int(missing.sum()))


def _class_names(values: pd.Series) -> pd.Series:
    """Class values as strings; integral floats (Shapefile integers) lose their '.0'."""
    if pd.api.types.is_float_dtype(values) and (values == values.round()).all():
        values = values.astype(np.int64)
    return values.astype(str)


def _sorted_classes(values: pd.Series) -> tuple[str, ...]:
    """Unique class values as strings, sorted numerically for numbers, else alphabetically."""
    names = _class_names(values)
    if pd.api.types.is_numeric_dtype(values):
        return tuple(sorted(set(names), key=float))
    return tuple(sorted(set(names)))


def boxes_for_scene(layer: BoxLayer, scene: Scene, min_size: float = 2.0) -> SceneBoxes:
    """The boxes of ``layer`` that fall on ``scene``, in its pixel space.

    Args:
        layer: The box layer.
        scene: The scene.
        min_size: Boxes smaller than this many pixels on a side after clipping are dropped.

    Raises:
        CRSMismatchError: The layer and the scene cannot be put in one coordinate system.
    """
    frame = frame_in_scene_space(layer, scene)
    bounds = frame.geometry.bounds.to_numpy(dtype=np.float64).reshape(-1, 4)
    # Envelope corners -> pixels. The transform is north-up or identity (see raster.py).
    inv = ~scene.transform
    c0, r0 = inv @ (bounds[:, 0], bounds[:, 1])
    c1, r1 = inv @ (bounds[:, 2], bounds[:, 3])
    raw = np.stack(
        [np.minimum(c0, c1), np.minimum(r0, r1), np.maximum(c0, c1), np.maximum(r0, r1)], axis=1
    )
    xyxy = raw.copy()
    xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, scene.width)
    xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, scene.height)
    keep = ((xyxy[:, 2] - xyxy[:, 0]) >= min_size) & ((xyxy[:, 3] - xyxy[:, 1]) >= min_size)
    clipped = (np.abs(raw - xyxy).max(axis=1) > 0) & keep
    class_ids = frame["class_id"].to_numpy(dtype=np.int64)[keep]
    return SceneBoxes(
        scene=scene,
        xyxy=xyxy[keep],
        class_ids=class_ids,
        features=frame["feature"].to_numpy(dtype=np.int64)[keep],
        clipped=int(clipped.sum()),
        class_counts=Counter(layer.classes.names[i - 1] for i in class_ids),
    )


def frame_in_scene_space(layer: BoxLayer, scene: Scene) -> gpd.GeoDataFrame:
    """The layer's features that may fall on ``scene``, in the scene's map coordinates."""
    frame, shown = layer.frame, display_path(layer.path)
    if not scene.georeferenced:
        if frame.crs is not None:
            raise CRSMismatchError(
                f"{display_path(scene.path)}: has no georeferencing but {shown} is in "
                f"{_crs_name(frame.crs)}; boxes for plain images must be in pixel coordinates "
                "without a CRS (jmlgeo import coco/dota writes such layers)"
            )
        if "image" not in frame.columns:
            return frame
        return frame[_matches_image(frame["image"], scene.name)]
    if scene.crs is None or frame.crs is None:
        if scene.crs is None and frame.crs is None:
            return frame
        if frame.crs is None:
            raise CRSMismatchError(
                f"{shown}: the box layer has no CRS while {display_path(scene.path)} is in "
                f"{scene.crs_name}; assign it (ogr2ogr -a_srs EPSG:XXXX fixed.gpkg {shown})"
            )
        raise CRSMismatchError(
            f"{display_path(scene.path)}: the scene has a geotransform but no CRS while {shown} "
            f"is in {_crs_name(frame.crs)}; assign one (gdal_edit.py -a_srs EPSG:XXXX)"
        )
    if frame.crs == scene.crs:
        return frame
    # Densify so that straight edges in the layer's CRS bend as they should in the scene's.
    sizes = frame.geometry.bounds
    step = np.maximum(sizes.maxx - sizes.minx, sizes.maxy - sizes.miny).to_numpy() / 16
    step = np.where(step > 0, step, 1.0)
    dense = frame.set_geometry(shapely.segmentize(frame.geometry.to_numpy(), step))
    return dense.to_crs(scene.crs)


def _matches_image(images: pd.Series, scene_name: str) -> pd.Series:
    """Rows whose image name is the scene's file name (with or without its extension)."""
    names = images.map(os.path.basename)
    stem = os.path.splitext(scene_name)[0]
    return (names == scene_name) | (names == stem)


def _crs_name(crs) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.name


def boxes_for_scenes(
    layer: BoxLayer, scenes: Sequence[Scene], min_size: float = 2.0
) -> list[SceneBoxes]:
    """The boxes of every scene, warning once about the boxes that were dropped.

    A feature is dropped when its geometry is empty, when it falls on no scene, or when it is
    smaller than ``min_size`` pixels on a side in every scene it falls on.

    Raises:
        NoOverlapError: No box falls on any scene; the message gives both extents.
        CRSMismatchError: As :func:`boxes_for_scene`.
        BoxLayerError: Several plain images but no image column to tell their boxes apart.
    """
    plain = [s for s in scenes if not s.georeferenced]
    if len(plain) > 1 and "image" not in layer.frame.columns and layer.crs is None:
        raise BoxLayerError(
            f"{display_path(layer.path)}: {len(plain)} plain images but no 'image' column to "
            "tie boxes to them; add one with each box's image file name"
        )
    per_scene = [boxes_for_scene(layer, s, min_size) for s in scenes]
    used = np.unique(np.concatenate([sb.features for sb in per_scene] + [np.array([], int)]))
    if used.size == 0:
        raise NoOverlapError(_no_overlap_message(layer, scenes))
    dropped = len(layer.frame) - used.size
    if dropped or layer.empty:
        parts = []
        if layer.empty:
            parts.append(f"{layer.empty} with empty geometry")
        if dropped:
            parts.append(f"{dropped} outside every given scene or under {min_size:g} px on a side")
        warnings.warn(
            f"{display_path(layer.path)}: dropped {dropped + layer.empty} box(es) "
            f"({'; '.join(parts)}); kept {used.size}",
            BoxesDroppedWarning,
            stacklevel=2,
        )
    return per_scene


def _no_overlap_message(layer: BoxLayer, scenes: Sequence[Scene]) -> str:
    parts = []
    for scene in scenes[:3]:
        try:
            frame = frame_in_scene_space(layer, scene)
        except CRSMismatchError:
            frame = layer.frame
        extent = _fmt_bounds(frame.total_bounds) if len(frame) else "none for this image"
        parts.append(
            f"boxes {extent} vs {scene.name} {_fmt_bounds(_ordered(scene.bounds))} "
            f"({scene.crs_name})"
        )
    more = f" and {len(scenes) - 3} more scenes" if len(scenes) > 3 else ""
    return (
        f"{display_path(layer.path)}: no box falls on any scene: {'; '.join(parts)}{more}; "
        "check that boxes and scenes cover the same place and that their CRS is right"
    )


def _ordered(bounds: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    left, bottom, right, top = bounds
    return (min(left, right), min(bottom, top), max(left, right), max(bottom, top))


def _fmt_bounds(bounds: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in bounds) + ")"
