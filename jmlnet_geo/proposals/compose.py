"""From boxes to proposal rasters: per-box masks in parallel, painted onto the scene's grid.

For each scene and method the result is a class raster (:mod:`jmlnet_geo.io.class_raster`) named
``<scene stem>.<method>.tif``: 0 background, the box's class id on the object, 255 where the scene
is nodata. Per-box work runs on a crop around the box (never cut by tile edges), in worker
processes; each box's mask depends only on the box and the scene, so the files are byte-identical
whatever the number of workers. Masks are painted large to small, so a small object inside a
larger box stays visible, and written strip by strip, so memory grows with the boxes, not the
scene.

A method that returns no mask, or one covering less than ``min_fraction`` of its box, falls back
to the filled box (the BOX proposal); those boxes are counted per method in the summary.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from jmlnet_geo.children import die_with_parent, tune_malloc
from jmlnet_geo.errors import CancelledError, OptionError, OutputError, display_path
from jmlnet_geo.io.class_raster import class_raster_writer, strips
from jmlnet_geo.io.raster import Scene, band_statistics, open_dataset, read_valid
from jmlnet_geo.io.vector import SceneBoxes
from jmlnet_geo.io.write import check_writable, output_folder
from jmlnet_geo.proposals.crop import Stretch, box_pixels, full_size, picture_stretch, read_crop
from jmlnet_geo.proposals.options import CLASSIC_METHODS, ProposalOptions
from jmlnet_geo.vocabulary import IGNORE, Progress, ShouldStop


@dataclass
class MethodSummary:
    """What one method did on one scene."""

    path: str
    boxes: int = 0
    fallbacks: int = 0
    seconds: float = 0.0


@dataclass
class SceneSummary:
    """The proposals of one scene: one entry per method."""

    scene: str
    boxes: int
    methods: dict[str, MethodSummary]


def check_methods(methods: Sequence[str], known: Sequence[str] = CLASSIC_METHODS) -> list[str]:
    """Methods in the order given, without repeats.

    Raises:
        OptionError: An unknown method; the message lists the valid ones.
    """
    unknown = [m for m in methods if m not in known]
    if unknown or not methods:
        raise OptionError(
            f"unknown proposal method {', '.join(repr(m) for m in unknown) or '(none given)'}; "
            f"choose from {', '.join(known)}"
        )
    return list(dict.fromkeys(methods))


def proposal_path(out_dir: str | os.PathLike[str], scene: Scene, method: str) -> Path:
    """Where the proposal raster of ``method`` for ``scene`` goes: ``<stem>.<method>.tif``."""
    return Path(out_dir) / f"{Path(scene.path).stem}.{method}.tif"


def write_proposals(
    scene_boxes: Sequence[SceneBoxes],
    class_names: Sequence[str],
    methods: Sequence[str],
    out_dir: str | os.PathLike[str],
    options: ProposalOptions = ProposalOptions(),
    workers: int = 1,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> list[SceneSummary]:
    """Compute the proposals of every box and write one class raster per scene and method.

    Args:
        scene_boxes: Each scene with its boxes (:func:`jmlnet_geo.io.vector.boxes_for_scenes`).
        class_names: Names of class ids 1..K (written into every raster).
        methods: Names from :data:`CLASSIC_METHODS`.
        out_dir: Output folder (created when missing).
        options: Per-box settings.
        workers: Processes working on boxes (1: this process).
        progress: Called with (boxes done, boxes in all) as boxes finish.
        should_stop: Polled between chunks of boxes; True stops with :class:`CancelledError`.

    Returns:
        One summary per scene.

    Raises:
        OptionError: An unknown method.
        OutputError: The folder cannot be written, or two scenes share a file stem.
        CancelledError: ``should_stop`` returned True; no raster was written.
    """
    methods = check_methods(methods)
    paths = output_paths(scene_boxes, methods, out_dir)
    jobs = [
        _SceneJob(sb.scene, scene_stretch(sb.scene, options), pixel_boxes(sb)) for sb in scene_boxes
    ]
    masks = _box_masks(jobs, methods, options, workers, progress, should_stop)
    summaries = []
    for job, sb, found in zip(jobs, scene_boxes, masks, strict=True):
        per_method = {}
        for method in methods:
            path = paths[(sb.scene.path, method)]
            per_box = [found[i][method] for i in range(len(job.boxes))]
            paint_proposal(path, sb, job.boxes, [m.mask for m in per_box], class_names, method)
            per_method[method] = MethodSummary(
                path=os.fspath(path),
                boxes=len(per_box),
                fallbacks=int(sum(m.fallback for m in per_box)),
                seconds=float(sum(m.seconds for m in per_box)),
            )
        summaries.append(SceneSummary(sb.scene.path, len(sb), per_method))
    return summaries


def paint_proposal(
    path: str | os.PathLike[str],
    scene_boxes: SceneBoxes,
    boxes: np.ndarray,
    masks: Sequence[np.ndarray],
    class_names: Sequence[str],
    method: str,
) -> None:
    """Paint box masks onto the scene's grid, large boxes first, and write the class raster.

    Args:
        path: Output GeoTIFF.
        scene_boxes: The scene and the class id of each box.
        boxes: int64 (N, 4): (col0, row0, col1, row1) of each box in scene pixels, end exclusive.
        masks: N bool arrays, each (row1 - row0, col1 - col0): the object inside its box.
        class_names: Names of class ids 1..K.
        method: Written to the raster's metadata.
    """
    scene = scene_boxes.scene
    order = paint_order(boxes)
    with (
        open_dataset(scene) as src,
        class_raster_writer(path, scene, class_names, {"proposal_method": method}) as dst,
    ):
        for window in strips(scene):
            top, bottom = window.row_off, window.row_off + window.height
            canvas = np.zeros((window.height, window.width), np.uint8)
            for i, rows, box_rows in strip_parts(boxes, order, top, bottom):
                col0, col1 = boxes[i, 0], boxes[i, 2]
                canvas[rows, col0:col1][masks[i][box_rows]] = scene_boxes.class_ids[i]
            canvas[~read_valid(src, scene, window)] = IGNORE
            dst.write(canvas, 1, window=window)


def paint_order(boxes: np.ndarray) -> np.ndarray:
    """Indices of int64 (N, 4) pixel boxes, large to small, ties by box order.

    Painted in this order, a small box stays visible over a large one.
    """
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return np.lexsort((np.arange(len(boxes)), -areas))


def strip_parts(
    boxes: np.ndarray, order: np.ndarray, top: int, bottom: int
) -> Iterator[tuple[int, slice, slice]]:
    """The boxes of ``order`` that cross scene rows [top, bottom), in that order.

    Args:
        boxes: int64 (N, 4): (col0, row0, col1, row1) in scene pixels, end exclusive.
        order: Indices into ``boxes`` (:func:`paint_order`).
        top: The strip's first scene row.
        bottom: The row after the strip's last.

    Yields:
        (i, rows, box_rows): box i, its rows in the strip (slice of the strip's rows) and the
        same rows in the box's own frame (slice of its mask's rows).
    """
    for i in order[(boxes[order, 1] < bottom) & (boxes[order, 3] > top)]:
        row0, row1 = int(boxes[i, 1]), int(boxes[i, 3])
        r0, r1 = max(row0, top), min(row1, bottom)
        yield int(i), slice(r0 - top, r1 - top), slice(r0 - row0, r1 - row0)


@dataclass
class _SceneJob:
    scene: Scene
    stretch: Stretch
    boxes: np.ndarray  # int64 (N, 4) pixel bounds, end exclusive


@dataclass
class _BoxResult:
    mask: np.ndarray  # bool (rows, cols) at full box size
    fallback: bool
    seconds: float


def scene_stretch(scene: Scene, options: ProposalOptions) -> Stretch:
    """How the scene's bands become the RGB picture the methods see (band statistics if needed)."""
    stats = [] if scene.dtype == "uint8" else band_statistics(scene)
    return picture_stretch(scene, stats, options.picture_bands)


def pixel_boxes(scene_boxes: SceneBoxes) -> np.ndarray:
    """int64 (N, 4) integer pixel bounds (col0, row0, col1, row1), end exclusive, of the boxes."""
    return np.array([box_pixels(b) for b in scene_boxes.xyxy], np.int64).reshape(-1, 4)


def output_paths(
    scene_boxes: Sequence[SceneBoxes], methods: Sequence[str], out_dir: str | os.PathLike[str]
) -> dict[tuple[str, str], Path]:
    """The raster of each (scene path, method), in ``out_dir`` (created), checked writable.

    Raises:
        OutputError: The folder or a raster cannot be written, or two scenes share a file stem.
    """
    out = Path(output_folder(out_dir, "the proposals"))
    stems: dict[str, str] = {}
    paths = {}
    for sb in scene_boxes:
        stem = Path(sb.scene.path).stem
        if stems.setdefault(stem, sb.scene.path) != sb.scene.path:
            raise OutputError(
                f"{display_path(sb.scene.path)}: has the same file name as "
                f"{display_path(stems[stem])}; their proposals would collide in "
                f"{display_path(out)}; rename one or run them separately"
            )
        for method in methods:
            paths[(sb.scene.path, method)] = proposal_path(out, sb.scene, method)
            check_writable(paths[(sb.scene.path, method)])
    return paths


def _box_masks(
    jobs: Sequence[_SceneJob],
    methods: Sequence[str],
    options: ProposalOptions,
    workers: int,
    progress: Progress | None,
    should_stop: ShouldStop | None,
) -> list[dict[int, dict[str, _BoxResult]]]:
    """Masks of every box of every scene: ``result[scene][box][method]``."""
    total = sum(len(job.boxes) for job in jobs)
    chunk = max(1, min(32, math.ceil(total / (8 * max(1, workers)))))
    tasks = [
        (s, list(range(start, min(start + chunk, len(job.boxes)))))
        for s, job in enumerate(jobs)
        for start in range(0, len(job.boxes), chunk)
    ]
    results: list[dict[int, dict[str, _BoxResult]]] = [{} for _ in jobs]
    done = 0
    if progress:
        progress(0, total)

    def collect(s: int, found: dict[int, dict[str, _BoxResult]]) -> None:
        nonlocal done
        results[s].update(found)
        done += len(found)
        if progress:
            progress(done, total)

    if workers <= 1 or len(tasks) <= 1:
        with single_threaded_cv2():
            for s, indexes in tasks:
                if should_stop and should_stop():
                    raise CancelledError("stopped on request; no proposal was written")
                collect(s, _masks_of(jobs[s], indexes, methods, options))
        return results
    context = multiprocessing.get_context("spawn")  # no fork: the caller may run threads
    pool = ProcessPoolExecutor(workers, context, initializer=_init_worker, initargs=(os.getpid(),))
    with pool:
        pending: dict[Future, int] = {
            pool.submit(_masks_of, jobs[s], indexes, methods, options): s for s, indexes in tasks
        }
        try:
            while pending:
                finished, _ = wait(pending, timeout=0.5, return_when="FIRST_COMPLETED")
                for future in finished:
                    collect(pending.pop(future), future.result())
                if should_stop and should_stop():
                    raise CancelledError("stopped on request; no proposal was written")
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return results


class single_threaded_cv2:  # noqa: N801 - a context manager used like a function
    """OpenCV on one thread for the block (as in the workers), restored afterwards."""

    def __enter__(self) -> None:
        import cv2

        self._threads = cv2.getNumThreads()
        cv2.setNumThreads(1)

    def __exit__(self, *exc: object) -> None:
        import cv2

        cv2.setNumThreads(self._threads)


def _init_worker(parent: int) -> None:
    """A worker dies with its parent (``kill -9`` of ``jmlgeo`` included), OpenCV on one thread."""
    import cv2

    die_with_parent(parent)
    tune_malloc()
    cv2.setNumThreads(1)


def _masks_of(
    job: _SceneJob, indexes: Sequence[int], methods: Sequence[str], options: ProposalOptions
) -> dict[int, dict[str, _BoxResult]]:
    """Run the methods on some boxes of one scene (in a worker or in this process)."""
    from jmlnet_geo.proposals.box import box_mask
    from jmlnet_geo.proposals.crf import crf_mask
    from jmlnet_geo.proposals.grabcut import grabcut_mask

    run = {
        "box": lambda crop: box_mask(crop),
        "grabcut": lambda crop: grabcut_mask(crop, options.grabcut),
        "crf": lambda crop: crf_mask(crop, options.crf),
    }
    with open_dataset(job.scene) as ds:  # one open per chunk: no handle outlives the call
        return _masks_in(ds, job, indexes, methods, options, run)


def _masks_in(ds, job, indexes, methods, options, run) -> dict[int, dict[str, _BoxResult]]:
    found = {}
    for i in indexes:
        box = tuple(int(v) for v in job.boxes[i])
        crop = read_crop(
            ds, job.scene, box, job.stretch, options.margin, options.min_margin, options.max_side
        )
        found[i] = {}
        for method in methods:
            start = time.perf_counter()
            mask = run[method](crop)
            fallback = mask is None or mask.mean() < options.min_fraction
            if fallback:
                mask = np.ones(crop.box_shape, bool)
            found[i][method] = _BoxResult(
                full_size(mask, crop),
                bool(fallback and method != "box"),
                time.perf_counter() - start,
            )
    return found


def summary_dict(summaries: Sequence[SceneSummary], options: ProposalOptions) -> dict:
    """A JSON-ready record of a proposals run (``proposals.json``)."""
    return {"options": asdict(options), "scenes": [asdict(s) for s in summaries]}
