"""``jmlgeo predict --cluster``: one Dask task per scene, or per row block of a huge scene.

A scene of at most ``split_pixels`` pixels is one task: :meth:`jmlnet_geo.predict.Predictor.
predict` on a worker (the bundle loaded once per worker, :func:`jmlnet_geo.cluster.
cached_predictor`), writing its COG there; the files are those of a local run.

A larger scene is cut into row blocks of whole window rows of the local run's window grid (same
window, overlap and batch size: the plan is made once, on a worker). A block owns the output rows
from its first window row to the next block's; its task runs every batch of the local run that holds
a window reaching those rows (the halo: the window row above, one overlap deep), with the local
run's batches unchanged, blends those windows in the local order (one
:class:`jmlnet_geo.blending.Blender` per panel of the plan, each started at the block's first window
row) and returns the class ids (and probabilities) of the rows it owns. Every owned pixel therefore
gets the same logits summed in the same order as in the local run. The client writes the blocks in
order through the local run's strip writer (:func:`jmlnet_geo.blending.strip_writers`) into a
temporary GeoTIFF and copies it to the COG, as the local run does, so the COG is the local run's,
byte for byte (the tests compare both the arrays and the bytes).
"""

from __future__ import annotations

import functools
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jmlnet_geo.cluster import Task, cached_predictor, kill_hook, run_tasks
from jmlnet_geo.io.raster import open_scene
from jmlnet_geo.predict import Prediction, PredictOptions
from jmlnet_geo.vocabulary import Progress

#: Scenes with more pixels than this are split into row blocks (about this many pixels each).
SPLIT_PIXELS = 256 * 2**20


def predict_scenes(
    client: Any,
    bundle: str | os.PathLike[str],
    scenes: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    options: PredictOptions | None = None,
    amp: str = "auto",
    split_pixels: int = SPLIT_PIXELS,
    progress: Progress | None = None,
) -> list[Prediction]:
    """Predict scenes on a cluster; the files are those :meth:`Predictor.predict` writes.

    Args:
        client: A ``distributed.Client`` (:func:`jmlnet_geo.cluster.cluster_client`).
        bundle: The bundle (read by the workers under its absolute path).
        scenes: Scene files (absolute paths are sent to the workers).
        out_dir: Output folder (the workers write there: shared, or one machine).
        options: As for a local run (``device`` is the workers'; default ``PredictOptions()``).
        amp: Autocast mode (see :class:`jmlnet_geo.predict.Predictor`).
        split_pixels: Scenes larger than this (pixels) are predicted in row blocks.
        progress: ``progress(tasks done, tasks)``.

    Returns:
        One :class:`Prediction` per scene, in order (``windows`` and ``phases`` of the worker;
        for a split scene, ``seconds`` is the wall time of the whole run).

    Raises:
        ClusterError: Scenes failed (each named; the others are written).
    """
    start = time.perf_counter()
    options = options or PredictOptions()
    bundle = os.path.abspath(bundle)
    out = os.path.abspath(out_dir)
    paths = [os.path.abspath(s) for s in scenes]
    opened = [open_scene(p) for p in paths]
    tasks: list[Task] = []
    owners: list[tuple[int, int]] = []  # per task: (scene index, block index or -1)
    blocks: dict[int, list[tuple[int, int]]] = {}
    plans: dict[int, Any] = {}
    for i, scene in enumerate(opened):
        name = Path(scene.path).name
        if scene.width * scene.height <= split_pixels:
            args = (bundle, scene.path, out, options, amp)
            tasks.append(Task(name, predict_scene, args, cost=scene.width * scene.height))
            owners.append((i, -1))
            continue
        plan_task = Task(f"{name} (window plan)", scene_plan, (bundle, scene.path, options, amp))
        plans[i] = run_tasks(client, [plan_task])[0]
        blocks[i] = row_blocks(scene, plans[i], split_pixels)
        for b, (top, bottom) in enumerate(blocks[i]):
            args = (bundle, scene.path, plans[i], options, amp, top, bottom)
            cost = (bottom - top) * scene.width
            tasks.append(Task(f"{name} rows {top}-{bottom}", predict_block, args, cost=cost))
            owners.append((i, b))
    writers = {i: _BlockWriter(bundle, opened[i], out, plans[i], options) for i in blocks}

    def on_result(t: int, result: Any) -> None:
        scene, block = owners[t]
        if block >= 0:
            writers[scene].add(block, result)

    predictions: list[Prediction | None] = [None] * len(opened)
    try:
        results = run_tasks(client, tasks, progress, on_result)
        for (i, b), result in zip(owners, results, strict=True):
            if b < 0:
                predictions[i] = result
        for i, writer in writers.items():
            predictions[i] = writer.finish(time.perf_counter() - start)
    finally:
        for writer in writers.values():
            writer.close()  # a failed block: the temporary rasters go, no final file appears
    return [p for p in predictions if p is not None]


def predict_scene(bundle: str, scene: str, out: str, options: PredictOptions, amp: str):
    """On a worker: :meth:`Predictor.predict` of one whole scene.

    Its warnings (a resolution far from the bundle's, a rounded window) reach the client through
    :func:`jmlnet_geo.cluster.run_on_worker`.
    """
    stem = Path(scene).stem
    kill_hook(stem, out, Path(out) / f"{stem}.classes.tif")
    predictor = cached_predictor(bundle, options.device, amp)
    return predictor.predict(scene, out, options)


def scene_plan(bundle: str, scene: str, options: PredictOptions, amp: str):
    """On a worker: the :class:`WindowPlan` the local run would use for ``scene``."""
    return cached_predictor(bundle, options.device, amp).plan(open_scene(scene), options)


def row_blocks(scene: Any, plan: Any, split_pixels: int) -> list[tuple[int, int]]:
    """Owned output rows ``(top, bottom)`` of each block: whole window rows of the grid."""
    from jmlnet_geo.blending import window_order

    rows = sorted({int(w.row_off) for w in window_order(scene, plan).windows})
    count = min(len(rows), max(1, -(-scene.width * scene.height // split_pixels)))
    firsts = [rows[len(rows) * b // count] for b in range(count)]
    firsts[0] = 0
    return list(zip(firsts, [*firsts[1:], scene.height], strict=True))


def predict_block(
    bundle: str,
    scene_path: str,
    plan: Any,
    options: PredictOptions,
    amp: str,
    top: int,
    bottom: int,
) -> tuple[np.ndarray, np.ndarray | None]:
    """On a worker: the outputs of scene rows ``top:bottom`` as the local run computes them.

    Returns:
        Class ids uint8 (rows, width) and probabilities uint8 (K+1, rows, width) or None
        (see the module docstring).
    """
    from jmlnet_geo.blending import Blender, strip_outputs, window_order
    from jmlnet_geo.predict_windows import reflect_outside
    from jmlnet_geo.tiling import collate_tiles

    predictor = cached_predictor(bundle, options.device, amp)
    scene = open_scene(scene_path)
    grid = window_order(scene, plan)
    data, items, windows, panels, order = (
        grid.data, grid.grid, grid.windows, grid.panels, grid.order
    )  # fmt: skip
    needed = {
        i
        for i, (_, k) in enumerate(order)
        if windows[k].row_off < bottom and windows[k].row_off + plan.window > top
    }
    outputs = functools.partial(strip_outputs, probabilities=options.probabilities)
    blenders, strips = [], [[] for _ in panels]
    for p, columns in enumerate(panels):
        blender = Blender(scene, predictor.card.num_classes, plan.window, plan.overlap, outputs,
                          options.weights, columns)  # fmt: skip
        blender.top = min(int(windows[order[i][1]].row_off) for i in needed if order[i][0] == p)
        blenders.append(blender)
    size = plan.batch_size  # the local run's batches: consecutive runs of its forwarding order
    for first in sorted({i // size * size for i in needed}):
        chunk = order[first : first + size]
        batch = collate_tiles([data[items[k]] for _, k in chunk])
        boxes = batch["window"].tolist()
        reflect_outside(batch["image"], batch["valid"], boxes, (scene.height, scene.width))
        logits = predictor.logits(batch["image"], batch["valid"], options.tta).cpu().numpy()
        for i, (box, window_logits) in enumerate(zip(boxes, logits, strict=True)):
            if first + i in needed:
                p = chunk[i][0]
                strips[p].extend(blenders[p].add(box, window_logits))
    ids = np.empty((bottom - top, scene.width), np.uint8)
    probs = None
    if options.probabilities:
        probs = np.empty((predictor.card.num_classes, bottom - top, scene.width), np.uint8)
    for (c0, c1), blender, panel_strips in zip(panels, blenders, strips, strict=True):
        panel_strips.extend(blender.finish())
        first_row = panel_strips[0][0]
        rows = slice(top - first_row, bottom - first_row)
        ids[:, c0:c1] = np.concatenate([s[1][0] for s in panel_strips])[rows]
        if probs is not None:
            probs[:, :, c0:c1] = np.concatenate([s[1][1] for s in panel_strips], axis=1)[:, rows]
    return ids, probs


class _BlockWriter:
    """On the client: a split scene's blocks written in order, then copied to the COG."""

    def __init__(self, bundle: str, scene: Any, out: str, plan: Any, options: PredictOptions):
        import contextlib

        import rasterio

        from jmlnet_geo.blending import strip_writers
        from jmlnet_geo.bundle import load_bundle
        from jmlnet_geo.io.write import (
            check_writable,
            output_folder,
            partial_prefix,
            remove_stale_partials,
        )
        from jmlnet_geo.predict_windows import gdal_cache_bytes

        self.scene, self.plan, self.start = scene, plan, time.perf_counter()
        self.card = load_bundle(bundle)[1]
        folder = Path(output_folder(out, "the predictions"))
        stem = Path(scene.path).stem
        self.classes = folder / f"{stem}.classes.tif"
        self.style = folder / f"{stem}.classes.qml"
        self.probs = folder / f"{stem}.probabilities.tif" if options.probabilities else None
        for path in (self.classes, self.probs, self.style):
            if path is not None:
                check_writable(path)
        remove_stale_partials(folder, stem)
        self.stack = contextlib.ExitStack()
        tmp = self.stack.enter_context(
            tempfile.TemporaryDirectory(prefix=partial_prefix(stem), dir=folder)
        )
        cache = gdal_cache_bytes(scene, plan.window, plan.panel)
        self.stack.enter_context(rasterio.Env(GDAL_CACHEMAX=cache))
        self.tmp_classes = Path(tmp) / "classes.tif"
        self.tmp_probs = Path(tmp) / "probabilities.tif" if self.probs else None
        self.writers = contextlib.ExitStack()
        self.write = self.writers.enter_context(
            strip_writers(scene, self.card, self.tmp_classes, self.tmp_probs)
        )
        self.waiting: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        self.next, self.row = 0, 0

    def add(self, block: int, result: tuple[np.ndarray, np.ndarray | None]) -> None:
        """Keep block ``block``'s rows; write every block that is next in order."""
        self.waiting[block] = result
        while self.next in self.waiting:
            ids, probs = self.waiting.pop(self.next)
            self.write((self.row, 0, (ids, probs)))
            self.row += ids.shape[0]
            self.next += 1

    def finish(self, seconds: float) -> Prediction:
        """Close the temporary rasters, copy them to COGs, write the style; the prediction."""
        from jmlnet_geo.io.class_raster import copy_to_cog, write_qml

        self.writers.close()
        copy_to_cog(self.tmp_classes, self.classes)
        if self.probs is not None and self.tmp_probs is not None:
            copy_to_cog(self.tmp_probs, self.probs)
        self.stack.close()
        write_qml(self.style, self.card.classes, self.card.colours)
        return Prediction(
            scene=self.scene.path,
            classes=self.classes,
            style=self.style,
            probabilities=self.probs,
            seconds=seconds,
            pixels=self.scene.width * self.scene.height,
            window=self.plan.window,
            overlap=self.plan.overlap,
        )

    def close(self) -> None:
        """Drop the temporary files (after :meth:`finish`, nothing is left to drop)."""
        self.writers.close()
        self.stack.close()
