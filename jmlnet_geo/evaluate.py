"""Evaluation of a class raster against truth: confusion matrix, per-class IoU, mIoU.

A *class raster* is any uint8 raster (a prediction or a proposal GeoTIFF, or a plain image) whose
pixels are class ids: 0 background, 1..K classes, 255 ignore / nodata. Truth is either a polygon
layer with a class column (read by the rules of box layers, see :mod:`jmlnet_geo.io.vector`,
but each polygon keeps its exact shape) or a class raster on the same grid.

Truth polygons are reprojected to the class raster's CRS (or, for plain images, taken in pixel
coordinates and tied by their ``image`` column), then burnt with the pixel-centre rule, the large
polygons first so that a small polygon inside a large one stays visible. Pixels that are 255 in
either raster (or nodata) are left out of every score.

Scores follow the JMLNet paper (Eqs. 14-15): IoU = TP / (TP + FP + FN) per class and mIoU, the
mean over the classes present in the truth or in the prediction, background included. The work
runs strip by strip, so memory does not grow with the scene. Not for probabilities or
multi-band rasters: pass the class raster.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import rasterio
from rasterio.features import rasterize
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from jmlnet_geo.errors import InputFileError, JmlGeoError, OutputError, display_path
from jmlnet_geo.io.class_raster import read_class_names
from jmlnet_geo.io.raster import Scene, open_dataset, open_scene, read_window
from jmlnet_geo.io.vector import BACKGROUND, IGNORE, _frame_in_scene_space, read_boxes
from jmlnet_geo.io.write import atomic_output

#: Truth files with these extensions are polygon layers; anything else is read as a raster.
VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb")


#: Pixels read per strip (rows x width) when evaluating a scene.
STRIP_PIXELS = 1 << 24


class EvaluationError(JmlGeoError, ValueError):
    """A class raster and its truth cannot be compared (ids, grids or content)."""


class EmptyTruthWarning(UserWarning):
    """No truth polygon falls on the class raster: its truth is all background."""


@dataclass(frozen=True)
class Report:
    """The evaluation of one class raster.

    Attributes:
        prediction: The evaluated class raster.
        truth: The truth file (polygons or raster).
        class_names: Names by class id, background first: ``class_names[i]`` is id ``i``.
        confusion: int64 (C, C): rows are truth, columns prediction, C = ``len(class_names)``.
        iou: float64 (C,): IoU per class; NaN for a class absent from truth and prediction.
        miou: Mean IoU over the classes present in truth or prediction (background included).
        pixel_accuracy: Correct pixels / evaluated pixels.
        precision: float64 (C,): TP / (TP + FP); NaN where the class is never predicted.
        recall: float64 (C,): TP / (TP + FN); NaN where the class is absent from the truth.
    """

    prediction: str
    truth: str
    class_names: tuple[str, ...]
    confusion: np.ndarray
    iou: np.ndarray
    miou: float
    pixel_accuracy: float
    precision: np.ndarray
    recall: np.ndarray

    @property
    def pixels(self) -> int:
        """Evaluated pixels (neither raster 255 / nodata there)."""
        return int(self.confusion.sum())

    def as_dict(self) -> dict:
        """Plain Python values (lists, floats, None for NaN), ready for ``json.dumps``."""

        def clean(values: np.ndarray) -> list[float | None]:
            return [None if math.isnan(v) else float(v) for v in values]

        return {
            "prediction": self.prediction,
            "truth": self.truth,
            "classes": list(self.class_names),
            "pixels": self.pixels,
            "miou": None if math.isnan(self.miou) else self.miou,
            "pixel_accuracy": None if math.isnan(self.pixel_accuracy) else self.pixel_accuracy,
            "iou": clean(self.iou),
            "precision": clean(self.precision),
            "recall": clean(self.recall),
            "confusion": self.confusion.tolist(),
        }


def confusion_matrix(
    pred: np.ndarray, truth: np.ndarray, num_classes: int, ignore: int = IGNORE
) -> np.ndarray:
    """Count pixels per (truth class, predicted class).

    Args:
        pred: Integer array of any shape: predicted class ids.
        truth: Integer array of the same shape: true class ids.
        num_classes: C, the number of classes, background included (ids 0..C-1).
        ignore: Pixels where either array holds this value are not counted.

    Returns:
        int64 (C, C): ``confusion[t, p]`` pixels of true class ``t`` predicted as ``p``.

    Raises:
        EvaluationError: Shapes differ, or a counted value is outside 0..C-1.
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise EvaluationError(
            f"prediction {pred.shape} and truth {truth.shape} differ in shape; "
            "put them on one grid first"
        )
    keep = (pred != ignore) & (truth != ignore)
    p = pred[keep].astype(np.int64, copy=False)
    t = truth[keep].astype(np.int64, copy=False)
    for name, values in (("prediction", p), ("truth", t)):
        bad = values[(values < 0) | (values >= num_classes)]
        if bad.size:
            raise EvaluationError(
                f"{name} holds class id {int(bad[0])} outside 0..{num_classes - 1}; "
                f"raise num_classes or mark those pixels {ignore} (ignore)"
            )
    counts = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def scores(confusion: np.ndarray) -> dict:
    """Per-class IoU, mIoU, pixel accuracy, precision and recall of a confusion matrix.

    Args:
        confusion: int (C, C), rows truth, columns prediction (see :func:`confusion_matrix`).

    Returns:
        A dict with ``iou``, ``precision``, ``recall`` (float64 (C,), NaN where undefined),
        ``present`` (bool (C,): in truth or prediction), ``miou`` (mean IoU over present classes)
        and ``pixel_accuracy`` (floats; NaN when no pixel was counted).
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(confusion)
    in_truth = confusion.sum(axis=1)
    in_pred = confusion.sum(axis=0)
    union = in_truth + in_pred - tp
    present = union > 0
    total = confusion.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(present, tp / union, np.nan)
        precision = np.where(in_pred > 0, tp / in_pred, np.nan)
        recall = np.where(in_truth > 0, tp / in_truth, np.nan)
    return {
        "iou": iou,
        "precision": precision,
        "recall": recall,
        "present": present,
        "miou": float(iou[present].mean()) if present.any() else math.nan,
        "pixel_accuracy": float(tp.sum() / total) if total > 0 else math.nan,
    }


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
    source = _truth_source(scene, truth_path, class_field, classes)
    return source.read(Window(0, 0, scene.width, scene.height))


def evaluate(
    prediction_path: str | os.PathLike[str],
    truth_path: str | os.PathLike[str],
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
    _check_class_raster(scene)
    with open_dataset(scene) as ds:
        tagged = read_class_names(ds)
    names = _drop_background(class_names) if class_names is not None else tagged
    source = _truth_source(scene, truth_path, class_field, names)
    names = names or source.classes
    if names is None:  # rasters on both sides and no names anywhere
        names = tuple(f"class {i}" for i in range(1, _max_id(scene, source) + 1))
    all_names = ("background", *names)
    num_classes = len(all_names)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    with open_dataset(scene) as ds:
        for window in _strips(scene):
            pred = _read_classes(ds, scene, window)
            truth = source.read(window)
            _check_ids(pred, num_classes, scene.path, all_names)
            _check_ids(truth, num_classes, os.fspath(truth_path), all_names)
            confusion += confusion_matrix(pred, truth, num_classes)
    if confusion.sum() == 0:
        raise EvaluationError(
            f"{display_path(scene.path)}: no pixel to compare with {display_path(truth_path)} "
            "(every pixel is 255 / nodata in one of them); check that both cover the same area"
        )
    s = scores(confusion)
    return Report(
        prediction=os.fspath(prediction_path),
        truth=os.fspath(truth_path),
        class_names=all_names,
        confusion=confusion,
        iou=s["iou"],
        miou=s["miou"],
        pixel_accuracy=s["pixel_accuracy"],
        precision=s["precision"],
        recall=s["recall"],
    )


def report_markdown(report: Report, label: str | None = None) -> str:
    """A Markdown table of the IoU per class and the mIoU, in percent, like the paper's Table 5.

    Args:
        report: The evaluation.
        label: The row's name; default: the class raster's file name.

    Returns:
        Three lines (header, alignment, values) ending with a newline; ``n/a`` marks a class
        absent from truth and prediction.
    """
    row = label if label is not None else os.path.basename(report.prediction)
    header = ["", *report.class_names, "mIoU"]
    values = [row, *(_percent(v) for v in report.iou), _percent(report.miou)]
    lines = [
        _md_row(header),
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
        _md_row(values),
    ]
    return "\n".join(lines) + "\n"


def save_confusion_png(report: Report, path: str | os.PathLike[str]) -> None:
    """Write the row-normalised confusion matrix (each truth class sums to 100 %) as a PNG.

    Written atomically: a crash leaves no half-written file under ``path``.

    Raises:
        OutputError: ``path`` is not a .png or cannot be written.
    """
    if os.path.splitext(os.fspath(path))[1].lower() != ".png":
        raise OutputError(f"{display_path(path)}: the confusion matrix is a PNG; name it *.png")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = report.confusion.astype(np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    norm = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    n = len(report.class_names)
    size = min(4.0 + 0.5 * n, 20.0)
    fig = Figure(figsize=(size + 1.5, size), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the truth class")
    ticks = np.arange(n)
    ax.set_xticks(ticks, report.class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, report.class_names)
    ax.set_xlabel("prediction")
    ax.set_ylabel("truth")
    ax.set_title(f"{os.path.basename(report.prediction)}: mIoU {_percent(report.miou)} %")
    if n <= 20:
        for t in range(n):
            for p in range(n):
                if counts[t, p]:
                    colour = "white" if norm[t, p] > 0.5 else "black"
                    ax.text(p, t, f"{100 * norm[t, p]:.0f}", ha="center", va="center", c=colour)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


# --- truth sources ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _TruthSource:
    """Truth readable window by window on the class raster's grid."""

    read: Callable[[Window], np.ndarray]
    classes: tuple[str, ...] | None


def _truth_source(
    scene: Scene,
    truth_path: str | os.PathLike[str],
    class_field: str,
    classes: Sequence[str] | None,
) -> _TruthSource:
    shown = display_path(truth_path)
    if not os.path.exists(truth_path):
        raise InputFileError(f"{shown}: truth file not found; check the path")
    if os.path.splitext(os.fspath(truth_path))[1].lower() in VECTOR_SUFFIXES:
        return _polygon_truth(scene, truth_path, class_field, classes)
    return _raster_truth(scene, truth_path)


def _polygon_truth(
    scene: Scene,
    truth_path: str | os.PathLike[str],
    class_field: str,
    classes: Sequence[str] | None,
) -> _TruthSource:
    layer = read_boxes(truth_path, class_field=class_field, classes=classes)
    frame = _frame_in_scene_space(layer, scene)
    frame = frame[~(frame.geometry.isna() | frame.geometry.is_empty)]
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
            "its truth is all background",
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

    return _TruthSource(read=read, classes=layer.classes.names)


def _raster_truth(scene: Scene, truth_path: str | os.PathLike[str]) -> _TruthSource:
    truth = open_scene(truth_path)
    _check_class_raster(truth)
    _check_same_grid(scene, truth)
    with open_dataset(truth) as ds:
        tagged = read_class_names(ds)

    def read(window: Window) -> np.ndarray:
        with open_dataset(truth) as ds:
            return _read_classes(ds, truth, window)

    return _TruthSource(read=read, classes=tagged)


# --- helpers ----------------------------------------------------------------------------------


def _check_class_raster(scene: Scene) -> None:
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


def _read_classes(ds: rasterio.DatasetReader, scene: Scene, window: Window) -> np.ndarray:
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


def _check_ids(values: np.ndarray, num_classes: int, path: str, names: Sequence[str]) -> None:
    counted = values[values != IGNORE]
    if counted.size and int(counted.max()) >= num_classes:
        raise EvaluationError(
            f"{display_path(path)}: holds class id {int(counted.max())} but only ids "
            f"0..{num_classes - 1} are named ({', '.join(names)}); pass the class names "
            "the raster was made with"
        )


def _max_id(scene: Scene, source: _TruthSource) -> int:
    """Largest class id (not 255) in the class raster and a raster truth."""
    top = 0
    with open_dataset(scene) as ds:
        for window in _strips(scene):
            for values in (_read_classes(ds, scene, window), source.read(window)):
                counted = values[values != IGNORE]
                if counted.size:
                    top = max(top, int(counted.max()))
    return top


def _strips(scene: Scene) -> list[Window]:
    """Full-width windows of about ``STRIP_PIXELS`` pixels covering the scene top to bottom."""
    rows = max(1, STRIP_PIXELS // max(scene.width, 1))
    return [
        Window(0, row, scene.width, min(rows, scene.height - row))
        for row in range(0, scene.height, rows)
    ]


def _drop_background(names: Sequence[str]) -> tuple[str, ...]:
    """Class names of ids 1..K; a leading "background" (id 0) is tolerated and dropped."""
    names = tuple(str(n) for n in names)
    if names and names[0].lower() == "background":
        names = names[1:]
    return names


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.1f}"


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


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
    from jmlnet_geo.io.class_raster import class_raster_writer

    source = _truth_source(scene, truth_path, class_field, classes)
    names = classes if classes is not None else (source.classes or ())
    with class_raster_writer(path, scene, names, {"source": os.path.basename(truth_path)}) as ds:
        for window in _strips(scene):
            ds.write(source.read(window), 1, window=window)
