"""Scoring class rasters against truth: one raster (:func:`evaluate`) or many, pooled.

A *class raster* is any uint8 raster (a prediction or a proposal GeoTIFF, or a plain image) whose
pixels are class ids: 0 background, 1..K classes, 255 ignore / nodata. Truth is a polygon layer
with a class column or a class raster on the same grid (see :mod:`jmlnet_geo.evaluate.truth`).
Pixels that are 255 in either raster (or nodata) are left out of every score. :func:`evaluate`
works strip by strip, so memory does not grow with the scene; :func:`score_scenes` sums the
confusion matrices of many scenes (a validation set) and can score the object inside each box.
Not for probabilities or multi-band rasters: pass the class raster.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from jmlnet_geo.errors import display_path
from jmlnet_geo.evaluate.metrics import EvaluationError, box_ious, confusion_matrix
from jmlnet_geo.evaluate.report import Report
from jmlnet_geo.evaluate.truth import (
    STRIP_PIXELS,
    TruthSource,
    check_class_raster,
    check_truth_overlap,
    read_classes,
    strip_windows,
    truth_source,
)
from jmlnet_geo.io.class_raster import read_class_names
from jmlnet_geo.io.raster import Scene, open_dataset, open_scene
from jmlnet_geo.vocabulary import IGNORE

__all__ = ["STRIP_PIXELS", "ScenesReport", "TruthCache", "evaluate", "score_scenes"]

PathLike = str | os.PathLike[str]


def evaluate(
    prediction_path: PathLike,
    truth_path: PathLike,
    class_field: str = "class",
    class_names: Sequence[str] | None = None,
) -> Report:
    """Compare a class raster with its truth.

    Class names (ids 1..K, background not listed) are, in order of preference: ``class_names``,
    the class raster's ``class_names`` tag (comma-separated), the truth's: a polygon layer's
    sorted class values or a truth raster's tag. A polygon layer is read with those names, so
    its class ids match the class raster's.

    Args:
        prediction_path: uint8 class raster: 0 background, 1..K, 255 ignore (or nodata).
        truth_path: Polygon layer with a class column, or a class raster on the same grid.
        class_field: The polygon layer's class column.
        class_names: Class names of ids 1..K, overriding the tag.

    Returns:
        The :class:`Report`.

    Raises:
        InputFileError: A file is missing or unreadable.
        BoxLayerError: The truth layer is unusable, or has classes outside the class names.
        CRSMismatchError: Truth and class raster cannot be put in one coordinate system.
        EvaluationError: Not a class raster, grids differ, ids beyond the class names, or no
            pixel left to compare.
    """
    scene = open_scene(prediction_path)
    all_names, source = _names_and_source(scene, truth_path, class_field, class_names)
    check_truth_overlap([source], display_path(truth_path), display_path(scene.path))
    confusion = _strip_confusion(scene, source, all_names, truth_path)
    if confusion.sum() == 0:
        raise EvaluationError(
            f"{display_path(scene.path)}: no pixel to compare with {display_path(truth_path)} "
            "(every pixel is 255 / nodata in one of them); check that both cover the same area"
        )
    return Report.of(os.fspath(prediction_path), os.fspath(truth_path), all_names, confusion)


class TruthCache:
    """Truth class rasters of scenes, made once and kept zlib-compressed in memory.

    Call it with a scene: uint8 (H, W) truth on the scene's grid (see ``truth_raster``).

    Args:
        truth: The truth file of every scene, or ``truth(scene)`` -> the scene's truth file.
        class_field: The polygon layer's class column.
        classes: Class names of ids 1..K.
    """

    def __init__(
        self,
        truth: PathLike | Callable[[Scene], PathLike],
        class_field: str = "class",
        classes: Sequence[str] | None = None,
    ) -> None:
        self._truth_of = truth if callable(truth) else (lambda scene: truth)
        self.class_field = class_field
        self.classes = None if classes is None else tuple(classes)
        self._cache: dict[str, tuple[bytes, tuple[int, int]]] = {}

    def path(self, scene: Scene) -> PathLike:
        """The truth file of ``scene``."""
        return self._truth_of(scene)

    def __call__(self, scene: Scene) -> np.ndarray:
        """uint8 (H, W) truth of ``scene`` (made on the first call, then from the cache)."""
        hit = self._cache.get(scene.path)
        if hit is None:
            source = truth_source(scene, self.path(scene), self.class_field, self.classes)
            truth = source.read(Window(0, 0, scene.width, scene.height))
            hit = self._cache[scene.path] = (zlib.compress(truth.tobytes(), 1), truth.shape)
        return np.frombuffer(zlib.decompress(hit[0]), np.uint8).reshape(hit[1])


@dataclass(frozen=True)
class ScenesReport:
    """The scores of many class rasters against their truth, pooled and per scene.

    Attributes:
        pooled: The report of the summed confusion matrices.
        scenes: One report per class raster, in the order given.
        box_ious: Per scene, float64 (N_i,) IoU of each box's class inside the box (NaN where
            neither raster has the class there); empty arrays when no boxes were given.
        box_inter: Pixels of the boxes' classes in prediction and truth, summed over boxes.
        box_union: Pixels of the boxes' classes in prediction or truth, summed over boxes.
        unlabelled: Prediction pixels that are 255 (no label), over every scene.
        total_pixels: Pixels of every class raster (H x W summed).
    """

    pooled: Report
    scenes: tuple[Report, ...]
    box_ious: tuple[np.ndarray, ...]
    box_inter: int
    box_union: int
    unlabelled: int
    total_pixels: int

    @property
    def mean_box_iou(self) -> float:
        """Mean over boxes of the box IoU (NaN boxes left out)."""
        values = np.concatenate([np.empty(0), *self.box_ious])
        values = values[~np.isnan(values)]
        return float(values.mean()) if values.size else math.nan

    @property
    def pooled_box_iou(self) -> float:
        """IoU of the boxes' classes over all box pixels together."""
        return self.box_inter / self.box_union if self.box_union else math.nan


def score_scenes(
    predictions: Sequence[PathLike],
    truth: PathLike | Sequence[PathLike] | TruthCache,
    class_names: Sequence[str] | None = None,
    class_field: str = "class",
    scenes: Sequence[Scene] | None = None,
    boxes: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
) -> ScenesReport:
    """Score many class rasters and pool their confusion matrices (a validation set).

    Class names are resolved as by :func:`evaluate`, from the first class raster. Without boxes
    and a cache each scene is read strip by strip, exactly as :func:`evaluate` reads it; with
    boxes or a :class:`TruthCache` each scene is read whole.

    Args:
        predictions: uint8 class rasters (0 background, 1..K, 255 ignore).
        truth: One truth file for all (a polygon layer), one per class raster, or a cache.
        class_names: Class names of ids 1..K, overriding the tags.
        class_field: The polygon layer's class column.
        scenes: The grids the truth is made on, one per class raster (default: the class
            rasters themselves; e.g. pass the source images of predictions of plain images,
            whose file names the truth layer's ``image`` column holds).
        boxes: Per class raster, ``(int (N, 4) pixel boxes col0, row0, col1, row1, int (N,)
            class ids)``: the IoU of each box's class inside it is reported too.

    Returns:
        The :class:`ScenesReport`.

    Raises:
        As :func:`evaluate`; EvaluationError also when the lists differ in length or nothing is
        given.
    """
    if not predictions:
        raise EvaluationError("no class raster to score; pass one or more")
    rasters = [open_scene(p) for p in predictions]
    grids = list(scenes) if scenes is not None else rasters
    cache = truth if isinstance(truth, TruthCache) else None
    if cache is None and isinstance(truth, str | os.PathLike):
        truths = [truth] * len(rasters)
    elif cache is None:
        truths = list(truth)
    else:
        truths = [cache.path(g) for g in grids]
    for name, items in (("truth files", truths), ("scenes", grids), ("box lists", boxes)):
        if items is not None and len(items) != len(rasters):
            raise EvaluationError(f"{len(rasters)} class rasters but {len(items)} {name}")
    if cache is not None and class_names is None and cache.classes is not None:
        class_names = cache.classes
    per_scene, ious, inter, union, unlabelled, total = [], [], 0, 0, 0, 0
    all_names: tuple[str, ...] | None = None
    sources = []
    for k, (raster, grid, truth_path) in enumerate(zip(rasters, grids, truths, strict=True)):
        check_class_raster(raster)
        if all_names is None:
            named = _names_and_source(raster, truth_path, class_field, class_names, grid)
            all_names, source = named
            class_names = all_names[1:]
        elif cache is None:
            source = truth_source(grid, truth_path, class_field, class_names)
        if cache is None:
            sources.append(source)
        if boxes is None and cache is None:
            confusion = _strip_confusion(raster, source, all_names, truth_path, grid)
            unlabelled += _count_unlabelled(raster)
            ious.append(np.empty(0))
        else:
            with open_dataset(raster) as ds:
                pred = read_classes(ds, raster, Window(0, 0, raster.width, raster.height))
            whole = Window(0, 0, grid.width, grid.height)
            labels = cache(grid) if cache is not None else source.read(whole)
            for values, path in ((pred, raster.path), (labels, os.fspath(truth_path))):
                _check_ids(values, len(all_names), path, all_names)
            confusion = confusion_matrix(pred, labels, len(all_names))
            unlabelled += int((pred == IGNORE).sum())
            if boxes is not None:
                xyxy, class_ids = boxes[k]
                iou, i, u = box_ious(pred, labels, xyxy, class_ids)
                ious.append(iou)
                inter, union = inter + int(i.sum()), union + int(u.sum())
            else:
                ious.append(np.empty(0))
        total += raster.width * raster.height
        per_scene.append(Report.of(raster.path, os.fspath(truth_path), all_names, confusion))
    if len(set(map(str, truths))) == 1:  # one layer for all: it must fall on one of them
        shown = (
            f"{len(rasters)} class rasters" if len(rasters) > 1 else display_path(rasters[0].path)
        )
        check_truth_overlap(sources, display_path(truths[0]), shown)
    else:  # a truth file per raster: each must fall on its raster
        for source, raster, truth_path in zip(sources, rasters, truths, strict=False):
            check_truth_overlap([source], display_path(truth_path), display_path(raster.path))
    pooled = sum(r.confusion for r in per_scene)
    if pooled.sum() == 0:
        raise EvaluationError(
            f"no pixel to compare in {len(rasters)} class rasters (every pixel is 255 / nodata "
            "in them or their truth); check that both cover the same area"
        )
    shown = per_scene[0].prediction if len(per_scene) == 1 else f"{len(per_scene)} class rasters"
    truth_text = per_scene[0].truth if len(set(map(str, truths))) == 1 else "several truth files"
    return ScenesReport(
        pooled=Report.of(shown, truth_text, all_names, pooled),
        scenes=tuple(per_scene),
        box_ious=tuple(ious),
        box_inter=inter,
        box_union=union,
        unlabelled=unlabelled,
        total_pixels=total,
    )


# --- helpers ----------------------------------------------------------------------------------


def _names_and_source(
    scene: Scene,
    truth_path: PathLike,
    class_field: str,
    class_names: Sequence[str] | None,
    grid: Scene | None = None,
) -> tuple[tuple[str, ...], TruthSource]:
    """All class names (background first) and the truth on ``grid`` (default: the raster's)."""
    check_class_raster(scene)
    with open_dataset(scene) as ds:
        tagged = read_class_names(ds)
    names = _drop_background(class_names) if class_names is not None else tagged
    source = truth_source(grid or scene, truth_path, class_field, names)
    names = names or source.classes
    if names is None:  # rasters on both sides and no names anywhere
        names = tuple(f"class {i}" for i in range(1, _max_id(scene, source) + 1))
    return ("background", *names), source


def _strip_confusion(
    scene: Scene,
    source: TruthSource,
    all_names: Sequence[str],
    truth_path: PathLike,
    grid: Scene | None = None,
) -> np.ndarray:
    """int64 (C, C) confusion of a class raster and its truth, strip by strip."""
    num_classes = len(all_names)
    if grid is not None and (grid.width, grid.height) != (scene.width, scene.height):
        raise EvaluationError(
            f"{display_path(scene.path)}: {scene.width}x{scene.height} pixels but its scene "
            f"{display_path(grid.path)} has {grid.width}x{grid.height}; pass the scene it was "
            "made from"
        )
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    with open_dataset(scene) as ds:
        for window in _strips(scene):
            pred = read_classes(ds, scene, window)
            truth = source.read(window)
            _check_ids(pred, num_classes, scene.path, all_names)
            _check_ids(truth, num_classes, os.fspath(truth_path), all_names)
            confusion += confusion_matrix(pred, truth, num_classes)
    return confusion


def _count_unlabelled(scene: Scene) -> int:
    with open_dataset(scene) as ds:
        return sum(int((read_classes(ds, scene, w) == IGNORE).sum()) for w in _strips(scene))


def _check_ids(values: np.ndarray, num_classes: int, path: str, names: Sequence[str]) -> None:
    counted = values[values != IGNORE]
    if counted.size and int(counted.max()) >= num_classes:
        raise EvaluationError(
            f"{display_path(path)}: holds class id {int(counted.max())} but only ids "
            f"0..{num_classes - 1} are named ({', '.join(names)}); pass the class names "
            "the raster was made with"
        )


def _max_id(scene: Scene, source: TruthSource) -> int:
    """Largest class id (not 255) in the class raster and a raster truth."""
    top = 0
    with open_dataset(scene) as ds:
        for window in _strips(scene):
            for values in (read_classes(ds, scene, window), source.read(window)):
                counted = values[values != IGNORE]
                if counted.size:
                    top = max(top, int(counted.max()))
    return top


def _strips(scene: Scene) -> list[Window]:
    """Full-width windows of about ``STRIP_PIXELS`` pixels covering the scene top to bottom."""
    return strip_windows(scene, STRIP_PIXELS)


def _drop_background(names: Sequence[str]) -> tuple[str, ...]:
    """Class names of ids 1..K; a leading "background" (id 0) is tolerated and dropped."""
    names = tuple(str(n) for n in names)
    if names and names[0].lower() == "background":
        names = names[1:]
    return names
