"""Importer for iSAID: instance and semantic PNG masks -> boxes and truth for plain images.

iSAID (the JMLNet paper's data set) labels DOTA images with two RGB PNGs beside each image
``NAME.png``: ``NAME_instance_id_RGB.png`` (instance id = R + 256 G + 65536 B, 0 none) and
``NAME_instance_color_RGB.png`` (the class by colour, :data:`ISAID_CLASSES`). Like the COCO and
DOTA importers (:mod:`jmlnet_geo.io.importers`) it writes a box layer for plain images: pixel
coordinates (x = column, y = row, top-left corner at (0, 0)), no CRS, ``class`` and ``image``
columns. One box per instance: the tight box of its pixels.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
from shapely.geometry import box, shape

from jmlnet_geo.errors import InputFileError, display_path
from jmlnet_geo.io.class_raster import class_raster_writer
from jmlnet_geo.io.importers import ImportSummary
from jmlnet_geo.io.raster import PlainImageWarning, open_scenes
from jmlnet_geo.io.write import check_vector_output, write_vector

__all__ = ["ISAID_CLASSES", "import_isaid", "isaid_images"]

#: iSAID semantic colours (RGB, as the PNG stores them) -> class name.
ISAID_CLASSES = {
    (0, 0, 63): "ship",
    (0, 63, 63): "storage_tank",
    (0, 63, 0): "baseball_diamond",
    (0, 63, 127): "tennis_court",
    (0, 63, 191): "basketball_court",
    (0, 63, 255): "ground_track_field",
    (0, 127, 63): "bridge",
    (0, 127, 127): "large_vehicle",
    (0, 0, 127): "small_vehicle",
    (0, 0, 191): "helicopter",
    (0, 0, 255): "swimming_pool",
    (0, 191, 127): "roundabout",
    (0, 127, 191): "soccer_ball_field",
    (0, 127, 255): "plane",
    (0, 100, 155): "harbor",
}

_ID_SUFFIX, _COLOUR_SUFFIX = "_instance_id_RGB.png", "_instance_color_RGB.png"


def isaid_images(folder: str | os.PathLike[str]) -> list[Path]:
    """The images under ``folder`` (any depth) that have iSAID masks, sorted by file name."""
    root = Path(folder)
    if not root.is_dir():
        raise InputFileError(f"{display_path(folder)}: iSAID folder not found; check the path")
    found = [
        p
        for p in root.rglob("*.png")
        if "_instance_" not in p.name and p.with_name(f"{p.stem}{_ID_SUFFIX}").is_file()
    ]
    if not found:
        raise InputFileError(
            f"{display_path(folder)}: no image with an iSAID mask beside it (NAME.png and "
            f"NAME{_ID_SUFFIX}, NAME{_COLOUR_SUFFIX})"
        )
    return sorted(found, key=lambda p: p.name)


def import_isaid(
    folder: str | os.PathLike[str],
    out: str | os.PathLike[str],
    truth: str | os.PathLike[str] | None = None,
    truth_rasters: str | os.PathLike[str] | None = None,
) -> ImportSummary:
    """Convert iSAID masks to a box layer (and truth polygons or class rasters).

    Args:
        folder: Searched at any depth for ``NAME.png`` with its two mask PNGs beside it.
        out: Box layer to write (.gpkg, .geojson, .fgb): the tight box of each instance,
            images by file name, instances by increasing id.
        truth: Optional truth layer: the semantic map's regions of each class as polygons
            (``class``, ``image``), pixel edges as coordinates.
        truth_rasters: Optional folder for one class raster per image, ``NAME.tif`` (uint8, ids
            1..K of the boxes' sorted class names, 0 background).

    Raises:
        InputFileError: No image with masks, an unreadable mask, or an instance whose colour is
            not an iSAID class.
        OutputError: An output cannot be written.
    """
    for path in (out, truth):
        if path is not None:
            check_vector_output(path)
    images = isaid_images(folder)
    rows, semantic = [], {}
    for image in images:
        colour = _read_rgb(image.with_name(f"{image.stem}{_COLOUR_SUFFIX}"))
        packed = _read_rgb(image.with_name(f"{image.stem}{_ID_SUFFIX}")).astype(np.int64)
        ids = packed[..., 0] + 256 * packed[..., 1] + 65536 * packed[..., 2]
        names = np.full(ids.shape, "", object)
        for rgb, name in ISAID_CLASSES.items():
            names[(colour == rgb).all(axis=-1)] = name
        semantic[image.name] = names
        for instance in np.unique(ids[ids > 0]):
            rr, cc = np.nonzero(ids == instance)
            name = names[rr[0], cc[0]]
            if not name:
                raise InputFileError(
                    f"{display_path(image)}: instance {instance} has a colour outside the iSAID "
                    "palette; check the _instance_color_RGB.png mask"
                )
            geometry = box(cc.min(), rr.min(), cc.max() + 1, rr.max() + 1)
            rows.append({"class": name, "image": image.name, "geometry": geometry})
    if not rows:
        raise InputFileError(f"{display_path(folder)}: the masks hold no instance")
    frame = gpd.GeoDataFrame(rows, geometry="geometry", crs=None)
    write_vector(frame, out, layer="boxes")
    classes = tuple(sorted(set(frame["class"])))
    truth_rows = []
    if truth is not None or truth_rasters is not None:
        with warnings.catch_warnings():  # iSAID images are plain: the layers are in pixels
            warnings.simplefilter("ignore", PlainImageWarning)
            scenes = open_scenes(images)
        for scene in scenes:
            class_ids = np.zeros(semantic[scene.name].shape, np.uint8)
            for class_id, name in enumerate(classes, start=1):
                class_ids[semantic[scene.name] == name] = class_id
            if truth_rasters is not None:
                Path(truth_rasters).mkdir(parents=True, exist_ok=True)
                target = Path(truth_rasters) / f"{Path(scene.path).stem}.tif"
                with class_raster_writer(target, scene, classes) as dst:
                    dst.write(class_ids, 1)
            if truth is not None:
                truth_rows += _class_polygons(class_ids, classes, scene.name)
    if truth is not None:
        layer = gpd.GeoDataFrame(truth_rows, geometry="geometry", crs=None)
        write_vector(layer, truth, "truth")
    return ImportSummary(
        boxes=len(frame),
        images=len(images),
        per_class=frame["class"].value_counts().to_dict(),
        truth=len(truth_rows),
    )


def _class_polygons(class_ids: np.ndarray, classes: tuple[str, ...], image: str) -> list[dict]:
    """The regions of each class id (> 0) of a uint8 (H, W) map as polygon records."""
    from rasterio import features

    found = features.shapes(class_ids, mask=(class_ids > 0) & (class_ids < 255))
    return [
        {"class": classes[int(value) - 1], "image": image, "geometry": shape(geometry)}
        for geometry, value in found
    ]


def _read_rgb(path: Path) -> np.ndarray:
    """uint8 (H, W, 3) RGB of a PNG (decoded by OpenCV, as the iSAID devkit does)."""
    import cv2

    image = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InputFileError(f"{display_path(path)}: cannot be read as an image")
    return image[:, :, ::-1]
