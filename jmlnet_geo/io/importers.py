"""Importers for the common box data sets: COCO instances JSON and DOTA labelTxt.

Both write box layers for plain images: polygons in pixel coordinates (x = column, y = row, the
top-left corner of the image at (0, 0)) with no CRS, a ``class`` column and an ``image`` column
naming each box's image file, which is how :mod:`jmlnet_geo.io.vector` ties boxes to plain scenes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, box

from jmlnet_geo.errors import InputFileError, display_path
from jmlnet_geo.io.vector import IMAGE_SUFFIXES
from jmlnet_geo.io.write import check_vector_output, write_vector, write_vectors


@dataclass(frozen=True)
class ImportSummary:
    """What an import wrote: box (and truth) counts per class, images, and what it skipped."""

    boxes: int
    images: int
    per_class: dict[str, int]
    truth: int = 0
    skipped: int = 0


def import_coco(
    instances: str | os.PathLike[str],
    images: str | os.PathLike[str],
    out: str | os.PathLike[str],
    truth: str | os.PathLike[str] | None = None,
) -> ImportSummary:
    """Convert a COCO instances file to a box layer (and a truth layer from its segmentations).

    Args:
        instances: COCO ``instances*.json``.
        images: Folder holding the images named by ``file_name``.
        out: Box layer to write (.gpkg, .geojson, .fgb): one box per annotation ``bbox``.
        truth: Optional truth layer: one (multi)polygon per annotation ``segmentation``
            (polygons or RLE).

    Raises:
        InputFileError: The JSON is missing or not COCO instances, or images are missing.
        OutputError: An output cannot be written.
    """
    data = _read_coco(instances)
    shown = display_path(instances)
    for path in (out, truth):
        if path is not None:
            check_vector_output(path)
    try:
        image_by_id = {img["id"]: img for img in data["images"]}
        files = [str(img["file_name"]) for img in data["images"]]
        names = {cat["id"]: str(cat["name"]) for cat in data["categories"]}
    except (KeyError, TypeError) as err:
        raise InputFileError(
            f"{shown}: an image or category lacks {err} or is not an object; re-export the file"
        ) from None
    _check_images_exist(files, images, f"{shown} names")
    try:
        rows, truth_rows = _coco_rows(data, image_by_id, names, shown, truth is not None)
    except (KeyError, TypeError, ValueError, IndexError) as err:
        if isinstance(err, InputFileError):
            raise
        raise InputFileError(
            f"{shown}: an annotation is malformed ({type(err).__name__}: {err}); re-export the file"
        ) from None
    if not rows:
        raise InputFileError(f"{shown}: has no annotations; nothing to import")
    frame = gpd.GeoDataFrame(rows, geometry="geometry", crs=None)
    outputs = [(frame, out, "boxes")]
    if truth is not None:
        truth_frame = gpd.GeoDataFrame(truth_rows, geometry="geometry", crs=None)
        outputs.append((truth_frame, truth, "truth"))
    write_vectors(outputs)  # all or none
    return ImportSummary(
        boxes=len(frame),
        images=len(data["images"]),
        per_class=frame["class"].value_counts().to_dict(),
        truth=len(truth_rows),
    )


#: Largest RLE mask decoded (pixels): a 100 000² declaration is refused, not allocated.
MAX_RLE_PIXELS = 20_000 * 20_000


def _coco_rows(data: dict, image_by_id: dict, names: dict, shown: str, truth: bool):
    """Box rows and truth rows of a COCO file's annotations (checked; see import_coco)."""
    rows, truth_rows = [], []
    for ann in data["annotations"]:
        img = image_by_id.get(ann["image_id"])
        if img is None or ann["category_id"] not in names:
            raise InputFileError(
                f"{shown}: annotation {ann.get('id')} refers to an unknown image or category; "
                "the file is inconsistent, re-export it"
            )
        bbox = ann["bbox"]
        ok = isinstance(bbox, list) and len(bbox) == 4
        ok = ok and all(isinstance(v, int | float) and not isinstance(v, bool) for v in bbox)
        ok = ok and all(np.isfinite(bbox)) and bbox[2] >= 0 and bbox[3] >= 0
        if not ok:
            raise InputFileError(
                f"{shown}: annotation {ann.get('id')} has bbox {str(bbox)[:80]}; COCO wants "
                "[x, y, width, height], four finite numbers, width and height >= 0"
            )
        x, y, w, h = (float(v) for v in bbox)
        record = {
            "class": names[ann["category_id"]],
            "category_id": int(ann["category_id"]),
            "image": os.path.basename(img["file_name"]),
            "annotation_id": int(ann["id"]),
            "iscrowd": int(ann.get("iscrowd", 0)),
        }
        rows.append({**record, "geometry": box(x, y, x + w, y + h)})
        if truth and ann.get("segmentation"):
            try:
                shape = _segmentation_to_shape(ann["segmentation"], img["height"], img["width"])
            except ValueError as err:
                raise InputFileError(
                    f"{shown}: annotation {ann.get('id')} has a bad segmentation ({err}); "
                    "re-export the file or import without --truth"
                ) from None
            if not shape.is_empty:
                truth_rows.append({**record, "geometry": shape})
    return rows, truth_rows


def _read_coco(path: str | os.PathLike[str]) -> dict:
    shown = display_path(path)
    if not os.path.isfile(path):
        raise InputFileError(f"{shown}: COCO file not found; check the path")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputFileError(
            f"{shown}: not valid JSON ({err}); pass a COCO instances file"
        ) from None
    keys = ("images", "annotations", "categories")
    missing = [k for k in keys if not isinstance(data, dict) or not isinstance(data.get(k), list)]
    if missing:
        raise InputFileError(
            f"{shown}: not a COCO instances file (missing {', '.join(missing) or 'keys'}); "
            "pass the instances_*.json of the data set"
        )
    return data


def _check_images_exist(names: Iterable[str], folder: str | os.PathLike[str], what: str) -> None:
    """Raise when the images folder is missing or lacks any of ``names``."""
    if not os.path.isdir(folder):
        raise InputFileError(f"{display_path(folder)}: images folder not found; check --images")
    names = list(names)
    absent = [n for n in names if not os.path.isfile(os.path.join(folder, n))]
    if absent:
        raise InputFileError(
            f"{what} {len(absent)} of {len(names)} images that are not in {display_path(folder)} "
            f"(e.g. {absent[0]}); pass --images with the folder that holds them"
        )


def _segmentation_to_shape(segmentation, height: int, width: int) -> MultiPolygon:
    """A COCO segmentation (polygon list or RLE) as a valid MultiPolygon in pixel coordinates."""
    if isinstance(segmentation, list):
        rings = [np.asarray(ring, dtype=np.float64) for ring in segmentation]
        if any(r.ndim != 1 or r.size % 2 or not np.isfinite(r).all() for r in rings):
            raise ValueError("polygons must be flat lists of finite x, y pairs")
        parts = [Polygon(r.reshape(-1, 2)) for r in rings if len(r) >= 6]
        shape = shapely.make_valid(shapely.union_all(parts)) if parts else MultiPolygon()
    else:
        shape = _mask_to_shape(_rle_to_mask(segmentation, height, width))
    polygons = [
        g for g in getattr(shape, "geoms", [shape]) if isinstance(g, Polygon | MultiPolygon)
    ]
    return MultiPolygon([p for g in polygons for p in getattr(g, "geoms", [g]) if not p.is_empty])


def _rle_to_mask(rle: dict, height: int, width: int) -> np.ndarray:
    """Decode COCO RLE (counts as a list or as COCO's compressed string) to a (H, W) bool mask."""
    counts = rle["counts"]
    if isinstance(counts, str):
        counts = _decode_rle_string(counts)
    h, w = (int(v) for v in rle.get("size", (height, width)))
    if h < 0 or w < 0 or h * w > MAX_RLE_PIXELS:
        raise ValueError(f"RLE size {h}x{w} is outside 0..{MAX_RLE_PIXELS} pixels")
    if any(not isinstance(r, int) or r < 0 for r in counts) or sum(counts) > h * w:
        raise ValueError(f"RLE counts overrun its size {h}x{w} or are not counts")
    flat = np.zeros(h * w, dtype=bool)
    pos, value = 0, False
    for run in counts:
        flat[pos : pos + run] = value
        pos += run
        value = not value
    return flat.reshape((w, h)).T  # COCO RLE runs down the columns


def _decode_rle_string(text: str) -> list[int]:
    """COCO's compressed RLE: 5-bit groups with a continuation bit, deltas after the 2nd run."""
    counts: list[int] = []
    pos = 0
    while pos < len(text):
        value, shift, more = 0, 0, True
        while more:
            chunk = ord(text[pos]) - 48
            value |= (chunk & 0x1F) << (5 * shift)
            more = bool(chunk & 0x20)
            pos += 1
            shift += 1
            if not more and chunk & 0x10:
                value |= -1 << (5 * shift)
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def _mask_to_shape(mask: np.ndarray) -> MultiPolygon:
    """Polygons of the True pixels of a mask, pixel edges as coordinates."""
    from rasterio import features

    shapes = features.shapes(mask.astype(np.uint8), mask=mask)
    return MultiPolygon([shapely.geometry.shape(geom) for geom, _ in shapes])


def import_dota(
    labels: str | os.PathLike[str],
    images: str | os.PathLike[str],
    out: str | os.PathLike[str],
) -> ImportSummary:
    """Convert DOTA labelTxt files to a box layer of the quadrilaterals' envelopes.

    Each line ``x1 y1 x2 y2 x3 y3 x4 y4 class [difficult]`` becomes one box (the quadrilateral's
    envelope) with columns ``class``, ``difficult`` (0/1), ``image``, ``gsd`` (metres, when the
    file states it) and ``quad`` (the oriented quadrilateral as WKT, kept for later use).

    Args:
        labels: A labelTxt folder (every ``*.txt`` in it) or a single ``.txt`` file.
        images: Folder holding the images, named like the label files.
        out: Box layer to write (.gpkg, .geojson, .fgb).

    Raises:
        InputFileError: No label files, malformed lines, or missing images.
        OutputError: The output cannot be written.
    """
    label_path = Path(labels)
    if not label_path.exists():
        raise InputFileError(f"{display_path(labels)}: DOTA labelTxt folder not found")
    files = sorted(label_path.glob("*.txt")) if label_path.is_dir() else [label_path]
    if not files:
        raise InputFileError(f"{display_path(labels)}: no .txt label files in this folder")
    check_vector_output(out)
    if not os.path.isdir(images):
        raise InputFileError(f"{display_path(images)}: images folder not found; check --images")
    rows, missing = [], []
    for txt in files:
        image = _find_image(Path(images), txt.stem)
        if image is None:
            missing.append(txt.stem)
            continue
        rows.extend(_read_dota_file(txt, image))
    if missing:
        raise InputFileError(
            f"{display_path(labels)}: {len(missing)} of {len(files)} label files have no image "
            f"in {display_path(images)} (e.g. {missing[0]}.png); pass --images with that folder"
        )
    if not rows:
        raise InputFileError(f"{display_path(labels)}: the label files hold no objects")
    frame = gpd.GeoDataFrame(rows, geometry="geometry", crs=None)
    write_vector(frame, out, layer="boxes")
    return ImportSummary(
        boxes=len(frame), images=len(files), per_class=frame["class"].value_counts().to_dict()
    )


def _find_image(folder: Path, stem: str) -> str | None:
    for suffix in IMAGE_SUFFIXES:
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate.name
    return None


def _read_dota_file(txt: Path, image: str) -> list[dict]:
    rows, gsd = [], None
    try:
        text = txt.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise InputFileError(
            f"{display_path(txt)}: not UTF-8 text (byte {err.start}); save it as UTF-8"
        ) from None
    for number, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if ":" in parts[0] and len(parts) == 1:  # header: imagesource:..., gsd:...
            key, _, value = parts[0].partition(":")
            if key == "gsd":
                try:
                    gsd = float(value)
                except ValueError:
                    gsd = None
            continue
        try:
            coords = np.array([float(v) for v in parts[:8]]).reshape(4, 2)
            name = parts[8]
            difficult = int(parts[9]) if len(parts) > 9 else 0
            if not np.isfinite(coords).all():
                raise ValueError("not finite")
        except (ValueError, IndexError):
            raise InputFileError(
                f"{display_path(txt)}:{number}: expected 'x1 y1 ... x4 y4 class [difficult]', "
                f"got '{line.strip()}'; fix or remove the line"
            ) from None
        quad = Polygon(coords)
        rows.append(
            {
                "class": name,
                "difficult": difficult,
                "image": image,
                "gsd": gsd,
                "quad": quad.wkt,
                "geometry": box(*quad.bounds),
            }
        )
    return rows
