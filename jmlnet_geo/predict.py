"""Streaming sliding-window prediction of a bundle over scenes of any size.

Windows of ``tile`` pixels overlap by ``overlap`` pixels (torchgeo's grid sampler with the last
row and column snapped inside the scene, see :mod:`jmlnet_geo.tiling`). Each window's logits are
weighted by a window that ramps down over the overlap, so seams do not show, and summed into a
buffer one tile high and one scene wide. Rows that no later window can reach are final: they are
turned into classes (and probabilities), written, and dropped. Memory therefore depends on the
scene's width and the tile size, not on its height. A DataLoader worker reads tiles ahead, the
model runs batched (AMP and channels-last on CUDA), and a writer thread writes strips, so reading,
inference and writing overlap.

Outputs per scene, in ``out_dir``: ``<stem>.classes.tif`` (uint8 Cloud-Optimised GeoTIFF on the
scene's grid: 0 background, 1..K classes, 255 nodata; colour table and class names),
``<stem>.classes.qml`` (QGIS style), and optionally ``<stem>.probabilities.tif`` (uint8 0-255, one
band per class, background first) and ``<stem>.polygons.gpkg`` (see :mod:`jmlnet_geo.vectorize`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

from jmlnet_geo.bundle import ModelCard, build_model, load_bundle
from jmlnet_geo.devices import resolve_device
from jmlnet_geo.errors import CancelledError, InputFileError, OptionError, display_path
from jmlnet_geo.io.class_raster import (
    class_raster_profile,
    class_raster_writer,
    copy_to_cog,
    write_qml,
)
from jmlnet_geo.io.raster import Scene, open_dataset, open_scene, read_valid
from jmlnet_geo.io.vector import IGNORE
from jmlnet_geo.io.write import check_writable, output_folder
from jmlnet_geo.normalization import Normalization
from jmlnet_geo.tiling import GridTiles, ScenesTiles, SceneTiles, collate_tiles

Progress = Callable[[int, int], None]


class ResolutionWarning(UserWarning):
    """A scene's pixel size is far from the one the bundle was trained at."""


@dataclass(frozen=True)
class PredictOptions:
    """How to predict.

    Attributes:
        tile: Window side in pixels (default: the bundle's training tile size).
        overlap: Overlap of neighbouring windows in pixels (default: a quarter of the tile).
        batch_size: Windows per forward pass.
        device: ``auto``, ``cpu`` or ``cuda``.
        tta: Average the logits of the window and its two flips (3x the work).
        probabilities: Also write per-class probabilities.
        loader_workers: Processes reading windows ahead of the model; 0 reads them in this
            thread. Default (None): 0 on CPU, where the model's threads already use every core
            and a reader process only competes with them (and adds its memory), 1 on CUDA.
    """

    tile: int | None = None
    overlap: int | None = None
    batch_size: int = 8
    device: str = "auto"
    tta: bool = False
    probabilities: bool = False
    loader_workers: int | None = None


@dataclass
class Prediction:
    """The files written for one scene and how long it took."""

    scene: str
    classes: Path
    style: Path
    probabilities: Path | None
    seconds: float
    pixels: int


class Predictor:
    """A bundle's model, ready to predict scenes."""

    def __init__(self, bundle: str | os.PathLike[str], device: str = "auto") -> None:
        """Load a bundle (never unpickles) and put its model on ``device``.

        Raises:
            InputFileError: Not a bundle.
            OptionError: Unknown or unavailable device.
        """
        state, self.card = load_bundle(bundle)
        self.bundle = os.fspath(bundle)
        self.device = resolve_device(device)
        self.model = build_model(self.card, state).to(self.device)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        norm = self.card.normalization
        self.normalization = Normalization(tuple(norm["mean"]), tuple(norm["std"]))

    @torch.inference_mode()
    def logits(self, image: torch.Tensor, valid: torch.Tensor, tta: bool = False) -> torch.Tensor:
        """float32 (N, K+1, H, W) logits of raw tiles (N, C, H, W) on the model's device."""
        x = self.normalization.apply(
            image.to(self.device, non_blocking=True), valid.to(self.device)
        )
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        autocast = torch.autocast("cuda", dtype=torch.float16, enabled=self.device.type == "cuda")
        with autocast:
            out = self.model(x).float()
            if tta:
                out += self.model(x.flip(-1)).float().flip(-1)
                out += self.model(x.flip(-2)).float().flip(-2)
                out /= 3
        return out

    def predict(
        self,
        scene_path: str | os.PathLike[str],
        out_dir: str | os.PathLike[str],
        options: PredictOptions = PredictOptions(),
        progress: Progress | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Prediction:
        """Predict one scene and write its class raster (and probabilities, style).

        Raises:
            InputFileError: Unreadable scene, or a band count other than the bundle's.
            OutputError: ``out_dir`` cannot be written.
            CancelledError: ``should_stop`` returned True; nothing final was written.
        """
        start = time.perf_counter()
        scene = open_scene(scene_path)
        self._check_scene(scene)
        tile = options.tile or self.card.tile_size
        overlap = tile // 4 if options.overlap is None else options.overlap
        if not 0 <= overlap < tile:
            raise OptionError(f"--overlap {overlap}: give 0 <= overlap < tile ({tile})")
        out = Path(output_folder(out_dir, "the predictions"))
        stem = Path(scene.path).stem
        classes_path = out / f"{stem}.classes.tif"
        probs_path = out / f"{stem}.probabilities.tif" if options.probabilities else None
        style_path = out / f"{stem}.classes.qml"
        for path in (classes_path, probs_path, style_path):
            if path is not None:
                check_writable(path)
        cache = gdal_cache_bytes(scene, tile)
        with (
            tempfile.TemporaryDirectory(prefix=f".{stem}.", dir=out) as tmp,
            rasterio.Env(GDAL_CACHEMAX=cache),  # also bounds the COG copy's overviews
        ):
            tmp_classes = Path(tmp) / "classes.tif"
            tmp_probs = Path(tmp) / "probabilities.tif" if probs_path else None
            self._stream(
                scene, tile, overlap, options, cache, tmp_classes, tmp_probs, progress,
                should_stop,
            )  # fmt: skip
            copy_to_cog(tmp_classes, classes_path)
            if probs_path is not None and tmp_probs is not None:
                copy_to_cog(tmp_probs, probs_path)
        write_qml(style_path, self.card.classes, self.card.colours)
        return Prediction(
            scene=scene.path,
            classes=classes_path,
            style=style_path,
            probabilities=probs_path,
            seconds=time.perf_counter() - start,
            pixels=scene.width * scene.height,
        )

    # --- internals ----------------------------------------------------------------------------

    def _check_scene(self, scene: Scene) -> None:
        card = self.card
        if scene.count != card.bands:
            raise InputFileError(
                f"{display_path(scene.path)}: has {scene.count} band(s) but the bundle was "
                f"trained on {card.bands} ({', '.join(card.band_names) or 'unnamed'}); "
                "give a scene with the same bands"
            )
        if card.resolution and scene.georeferenced:
            ratio = scene.res[0] / card.resolution[0]
            if ratio > 1.5 or ratio < 1 / 1.5:
                warnings.warn(
                    f"{display_path(scene.path)}: pixel size {scene.res[0]:.4g} is far from the "
                    f"bundle's {card.resolution[0]:.4g} ({card.crs_units or 'map units'}); "
                    "resample the scene for best results",
                    ResolutionWarning,
                    stacklevel=3,
                )

    def _stream(
        self,
        scene: Scene,
        tile: int,
        overlap: int,
        options: PredictOptions,
        cache: int,
        classes_path: Path,
        probs_path: Path | None,
        progress: Progress | None,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        data = ScenesTiles([SceneTiles(scene)])
        sampler = GridTiles(data, tile, tile - overlap)
        workers = options.loader_workers
        if workers is None:
            workers = 1 if self.device.type == "cuda" else 0
        loader = torch.utils.data.DataLoader(
            data,
            sampler=sampler,
            batch_size=options.batch_size,
            num_workers=workers,
            collate_fn=collate_tiles,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if workers else None,
            worker_init_fn=functools.partial(_limit_gdal_cache, cache),
        )
        total, done = len(sampler), 0
        outputs = functools.partial(strip_outputs, probabilities=probs_path is not None)
        buffer = Blender(scene, self.card.num_classes, tile, overlap, outputs)
        with (
            strip_writers(scene, self.card, classes_path, probs_path) as write,
            ThreadPoolExecutor(1) as writer,
        ):
            pending: Future | None = None
            for batch in loader:
                if should_stop and should_stop():
                    raise CancelledError("stopped on request; no prediction was written")
                logits = self.logits(batch["image"], batch["valid"], options.tta).cpu().numpy()
                for window, tile_logits in zip(batch["window"].tolist(), logits, strict=True):
                    for strip in buffer.add(window, tile_logits):
                        pending = _submit(writer, write, strip, pending)
                done += len(logits)
                if progress:
                    progress(done, total)
            for strip in buffer.finish():
                pending = _submit(writer, write, strip, pending)
            if pending is not None:
                pending.result()


class Blender:
    """Weighted sum of window logits over a buffer one tile high, emitting finished strips.

    The buffer holds float32 (K+1, tile, scene width) weighted logit sums and (tile, width)
    weight sums; rows no later window reaches are handed to ``finish_strip(sums, weights)``
    (views of the buffer, so it must copy what it keeps) and what it returns is yielded with the
    strip's first row. Public, like :func:`strip_writers`: both are looked up here when a
    prediction starts, so a benchmark can time them by setting the module's attribute.
    """

    def __init__(
        self,
        scene: Scene,
        num_classes: int,
        tile: int,
        overlap: int,
        finish_strip: Callable[[np.ndarray, np.ndarray], Any],
    ) -> None:
        self.scene, self.tile, self.finish_strip = scene, tile, finish_strip
        self.top = 0
        self.logits = np.zeros((num_classes, tile, scene.width), np.float32)
        self.weight = np.zeros((tile, scene.width), np.float32)
        self.window_weight = _ramp(tile, overlap)

    def add(self, window: list[int], logits: np.ndarray) -> Iterator[tuple[int, Any]]:
        """Add one window's logits (K+1, tile, tile); yield strips that became final."""
        col, row = window[0], window[1]
        if row > self.top:
            yield self._flush(row - self.top)
        height = min(self.tile, self.scene.height - row)
        width = min(self.tile, self.scene.width - col)
        r0 = row - self.top
        w = self.window_weight[:height, :width]
        self.logits[:, r0 : r0 + height, col : col + width] += logits[:, :height, :width] * w
        self.weight[r0 : r0 + height, col : col + width] += w

    def finish(self) -> Iterator[tuple[int, Any]]:
        """Yield the last strip."""
        yield self._flush(min(self.tile, self.scene.height - self.top))

    def _flush(self, rows: int) -> tuple[int, Any]:
        item = self.top, self.finish_strip(self.logits[:, :rows], self.weight[:rows])
        for plane in (*self.logits, self.weight):  # move up in place, one class at a time
            plane[:-rows] = plane[rows:]
            plane[-rows:] = 0
        self.top += rows
        return item


#: Columns per step when turning a strip's logit sums into classes (bounds the temporaries).
_COLUMNS = 2048


def strip_outputs(
    sums: np.ndarray, weights: np.ndarray, probabilities: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Class ids and optional probabilities of a blended strip.

    Args:
        sums: float32 (K+1, rows, width) weighted sums of window logits.
        weights: float32 (rows, width) sums of the weights (all > 0).
        probabilities: Also return the softmax of the blended logits.

    Returns:
        uint8 (rows, width) argmax class ids, and uint8 (K+1, rows, width) probabilities scaled
        to 0-255 (or None). The weights are positive, so the sums' argmax is the blended
        logits' argmax; only the probabilities divide.
    """
    ids = np.empty(weights.shape, np.uint8)
    probs = np.empty(sums.shape, np.uint8) if probabilities else None
    for start in range(0, weights.shape[1], _COLUMNS):
        part = slice(start, start + _COLUMNS)
        ids[:, part] = sums[:, :, part].argmax(0)
        if probs is not None:
            logits = sums[:, :, part] / weights[:, part]
            shifted = np.exp(logits - logits.max(0, keepdims=True))
            probs[:, :, part] = np.rint(255 * shifted / shifted.sum(0, keepdims=True))
    return ids, probs


def gdal_cache_bytes(scene: Scene, tile: int) -> int:
    """GDAL block cache for streaming ``scene``: two rows of tiles (or blocks) across it.

    Windows move row by row, and a window row shares at most one row of blocks with the next,
    so two rows of blocks are all the reads reuse (strip writes need less). GDAL's default (5 %
    of the RAM) lets the cache, and the process, grow with the scene. Bounded to 32-512 MiB.
    """
    with open_dataset(scene) as ds:
        block_rows = ds.block_shapes[0][0]
    itemsize = np.dtype(scene.dtype).itemsize
    need = 2 * max(tile, block_rows) * scene.width * scene.count * itemsize
    return int(min(max(need, 32 * 2**20), 512 * 2**20))


def _limit_gdal_cache(cache: int, worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: the reader worker's GDAL cache limit, in bytes."""
    from rasterio.env import set_gdal_config

    set_gdal_config("GDAL_CACHEMAX", cache)


def _ramp(tile: int, overlap: int) -> np.ndarray:
    """float32 (tile, tile) blending weights: 1 inside, ramping linearly to ~0 over the overlap."""
    edge = np.minimum(np.arange(tile) + 0.5, tile - 0.5 - np.arange(tile))
    ramp = np.clip(edge / max(overlap, 1), 1e-3, 1.0).astype(np.float32)
    return np.outer(ramp, ramp)


@contextlib.contextmanager
def strip_writers(scene: Scene, card: ModelCard, classes_path: Path, probs_path: Path | None):
    """Yield ``write((row, (class ids, probabilities)))`` that writes a strip (nodata masked)."""
    with contextlib.ExitStack() as stack:
        classes = stack.enter_context(
            class_raster_writer(classes_path, scene, card.classes, colours=card.colours)
        )
        probs = None
        if probs_path is not None:
            profile = class_raster_profile(scene) | {"count": card.num_classes, "nodata": None}
            probs = stack.enter_context(rasterio.open(probs_path, "w", **profile))
            probs.update_tags(class_names=",".join(["background", *card.classes]))
        src = stack.enter_context(open_dataset(scene))

        def write(item: tuple[int, tuple[np.ndarray, np.ndarray | None]]) -> None:
            row, (ids, p) = item
            window = Window(0, row, scene.width, ids.shape[0])
            valid = read_valid(src, scene, window)
            ids[~valid] = IGNORE
            classes.write(ids, 1, window=window)
            if probs is not None and p is not None:
                p[:, ~valid] = 0
                probs.write(p, window=window)

        yield write


def _submit(writer: ThreadPoolExecutor, write, strip, pending: Future | None) -> Future:
    """Queue a strip write; at most one write waits, so memory stays bounded."""
    if pending is not None:
        pending.result()
    return writer.submit(write, strip)
