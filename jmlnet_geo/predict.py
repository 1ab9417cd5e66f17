"""Streaming sliding-window prediction of a bundle over scenes of any size.

Square windows of ``window`` pixels (independent of the training tile; defaults planned by
:mod:`jmlnet_geo.predict_windows` from the bundle, the device and the scene) overlap by ``overlap``
pixels (torchgeo's grid sampler with the last row and column snapped inside the scene, see
:mod:`jmlnet_geo.tiling`). Each window's logits are weighted by a window that tapers over the
overlap, so seams do not show, and summed into a buffer one window high and one panel wide (the
scene's width, or a range of its columns when it is wider than the plan's panel;
:mod:`jmlnet_geo.blending`). Rows that no later window can reach are final: they are turned into
classes (and probabilities), written, and dropped. Memory therefore depends on the window and the
panel, not on the scene's size. The model runs batched; on CUDA under autocast (bf16 where
supported, else fp16), channels-last, with a DataLoader worker reading windows ahead into pinned
memory and each batch's logits copied back while the next batch runs; on CPU the same code path runs
in fp32 (``amp`` can force bf16 there, for tests). A writer thread writes strips, so reading,
inference and writing overlap.

Outputs per scene, in ``out_dir``: ``<stem>.classes.tif`` (uint8 Cloud-Optimised GeoTIFF on the
scene's grid: 0 background, 1..K classes, 255 nodata; colour table and class names),
``<stem>.classes.qml`` (QGIS style), and optionally ``<stem>.probabilities.tif`` (uint8 0-255, one
band per class, background first) and ``<stem>.polygons.gpkg`` (see :mod:`jmlnet_geo.vectorize`).
"""

from __future__ import annotations

import functools
import os
import tempfile
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rasterio
import torch

from jmlnet_geo.blending import (
    Blender,
    PanelBlender,
    blend_batch,
    strip_outputs,
    strip_writers,
    submit_strip,
    timed_strips,
    window_order,
)
from jmlnet_geo.bundle import build_model, load_bundle
from jmlnet_geo.devices import resolve_device
from jmlnet_geo.errors import CancelledError, InputFileError, display_path
from jmlnet_geo.io.class_raster import (
    copy_to_cog,
    write_qml,
)
from jmlnet_geo.io.raster import Scene, open_scene
from jmlnet_geo.io.write import (
    check_writable,
    output_folder,
    partial_prefix,
    remove_stale_partials,
)
from jmlnet_geo.normalization import Normalization
from jmlnet_geo.predict_windows import (
    WindowPlan,
    WindowWarning,
    amp_dtype,
    gdal_cache_bytes,
    limit_gdal_cache,
    plan_windows,
    reflect_outside,
    tta_mode,
)
from jmlnet_geo.tiling import collate_tiles
from jmlnet_geo.vocabulary import Progress, ShouldStop

__all__ = ["Blender", "PredictOptions", "Prediction", "Predictor", "ResolutionWarning"]
__all__ += ["WindowWarning", "gdal_cache_bytes", "strip_outputs"]


class ResolutionWarning(UserWarning):
    """A scene's pixel size is far from the one the bundle was trained at."""


@dataclass(frozen=True)
class PredictOptions:
    """How to predict.

    Attributes:
        window: Window side in pixels, rounded to a multiple of the model's output stride
            (default: planned, see :mod:`jmlnet_geo.predict_windows`: 1024 on CPU for the fast
            preset, from free memory on CUDA).
        tile: Older name of ``window`` (used when ``window`` is None).
        overlap: Overlap of neighbouring windows in pixels (default: about one receptive field
            of the model, at most a quarter of the window).
        batch_size: Windows per forward pass (default: about 0.5 Mpx per pass on CPU, from free
            memory on CUDA).
        device: ``auto``, ``cpu`` or ``cuda``.
        tta: ``none``, or ``flips``: average the logits of the window and its horizontal,
            vertical and double flips (4x the work). True means ``flips``.
        weights: Blending window, ``ramp`` or ``cosine`` (see
            :func:`jmlnet_geo.predict_windows.weight_window`).
        probabilities: Also write per-class probabilities.
        panel: Columns blended in one buffer (default: planned so that the buffer stays under
            256 MiB; a wider scene is blended panel by panel, see :mod:`jmlnet_geo.blending`).
            The classes do not depend on it; only memory and the windows forwarded twice do.
        loader_workers: Processes reading windows ahead of the model; 0 reads them in this
            thread. Default (None): 0 on CPU, where the model's threads already use every core
            and a reader process only competes with them (and adds its memory), 1 on CUDA.
    """

    window: int | None = None
    tile: int | None = None
    overlap: int | None = None
    batch_size: int | None = None
    device: str = "auto"
    tta: bool | str = False
    weights: str = "ramp"
    probabilities: bool = False
    loader_workers: int | None = None
    panel: int | None = None


@dataclass
class Prediction:
    """The files written for one scene, how long it took, and its windows (size, overlap, count).

    ``phases``: wall seconds of the parts of :meth:`Predictor.predict`: ``forward`` (the model
    on every batch, normalisation included; asynchronous on CUDA, so there it is the launch),
    ``blend`` (adding windows to the buffer and turning finished strips into classes), ``write``
    (strip writes, in the writer thread, overlapped with the rest) and ``cog`` (the copies to
    Cloud-Optimised GeoTIFFs at the end).
    """

    scene: str
    classes: Path
    style: Path
    probabilities: Path | None
    seconds: float
    pixels: int
    window: int = 0
    overlap: int = 0
    windows: int = 0
    phases: dict[str, float] = field(default_factory=dict)


class Predictor:
    """A bundle's model, ready to predict scenes."""

    def __init__(
        self, bundle: str | os.PathLike[str], device: str = "auto", amp: str = "auto"
    ) -> None:
        """Load a bundle (never unpickles) and put its model on ``device``.

        Args:
            bundle: The bundle file.
            device: ``auto``, ``cpu`` or ``cuda``.
            amp: Autocast dtype of the forward: ``auto`` (bf16 on CUDA where supported, else
                fp16; fp32 on CPU), ``off`` (fp32), ``bf16`` or ``fp16`` (forced, also on CPU).

        Raises:
            InputFileError: Not a bundle.
            OptionError: Unknown or unavailable device, unknown ``amp``.
        """
        state, self.card = load_bundle(bundle)
        self.bundle = os.fspath(bundle)
        self.device = resolve_device(device)
        self.amp_dtype = amp_dtype(amp, self.device)
        self.model = build_model(self.card, state).to(self.device)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        norm = self.card.normalization
        self.normalization = Normalization(tuple(norm["mean"]), tuple(norm["std"]))

    @torch.inference_mode()
    def logits(
        self, image: torch.Tensor, valid: torch.Tensor, tta: bool | str = False
    ) -> torch.Tensor:
        """float32 (N, K+1, H, W) logits of raw windows (N, C, H, W) and validity (N, H, W).

        ``tta="flips"`` (or True) averages the logits of the windows and of their horizontal,
        vertical and double flips, each flipped back. The result stays on the model's device.
        """
        x = self.normalization.apply(
            image.to(self.device, non_blocking=True), valid.to(self.device, non_blocking=True)
        )
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        flips = [()] + ([(-1,), (-2,), (-2, -1)] if tta_mode(tta) == "flips" else [])
        dtype = self.amp_dtype
        with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=bool(dtype)):
            out = self.model(x).float()
            for dims in flips[1:]:
                out += self.model(x.flip(dims)).float().flip(dims)
        return out / len(flips) if len(flips) > 1 else out

    def plan(self, scene: Scene, options: PredictOptions = PredictOptions()) -> WindowPlan:
        """Window, overlap and batch size :meth:`predict` uses for ``scene`` with ``options``."""
        free = None
        if self.device.type == "cuda":
            free = torch.cuda.mem_get_info(self.device)[0]
        return plan_windows(
            self.card,
            self.model,
            self.device.type,
            (scene.height, scene.width),
            options.window or options.tile,
            options.overlap,
            options.batch_size,
            free,
            options.panel,
        )

    def predict(
        self,
        scene_path: str | os.PathLike[str],
        out_dir: str | os.PathLike[str],
        options: PredictOptions = PredictOptions(),
        progress: Progress | None = None,
        should_stop: ShouldStop | None = None,
    ) -> Prediction:
        """Predict one scene and write its class raster (and probabilities, style).

        Raises:
            InputFileError: Unreadable scene, or a band count other than the bundle's.
            OptionError: An overlap not smaller than the window, unknown ``tta`` or ``weights``.
            OutputError: ``out_dir`` cannot be written.
            CancelledError: ``should_stop`` returned True; nothing final was written.
        """
        start = time.perf_counter()
        scene = open_scene(scene_path)
        self._check_scene(scene)
        tta_mode(options.tta)
        plan = self.plan(scene, options)
        out = Path(output_folder(out_dir, "the predictions"))
        stem = Path(scene.path).stem
        classes_path = out / f"{stem}.classes.tif"
        probs_path = out / f"{stem}.probabilities.tif" if options.probabilities else None
        style_path = out / f"{stem}.classes.qml"
        for path in (classes_path, probs_path, style_path):
            if path is not None:
                check_writable(path)
        remove_stale_partials(out, stem)  # what a killed run of ours left
        cache = gdal_cache_bytes(scene, plan.window, plan.panel)
        with (
            tempfile.TemporaryDirectory(prefix=partial_prefix(stem), dir=out) as tmp,
            rasterio.Env(GDAL_CACHEMAX=cache),  # also bounds the COG copy's overviews
        ):
            tmp_classes = Path(tmp) / "classes.tif"
            tmp_probs = Path(tmp) / "probabilities.tif" if probs_path else None
            self._phases = dict.fromkeys(("forward", "blend", "write", "cog"), 0.0)
            self._stream(scene, plan, options, cache, tmp_classes, tmp_probs, progress, should_stop)
            cog_start = time.perf_counter()
            copy_to_cog(tmp_classes, classes_path)
            if probs_path is not None and tmp_probs is not None:
                copy_to_cog(tmp_probs, probs_path)
            self._phases["cog"] = time.perf_counter() - cog_start
        write_qml(style_path, self.card.classes, self.card.colours)
        return Prediction(
            scene=scene.path,
            classes=classes_path,
            style=style_path,
            probabilities=probs_path,
            seconds=time.perf_counter() - start,
            pixels=scene.width * scene.height,
            window=plan.window,
            overlap=plan.overlap,
            windows=self._windows,
            phases=dict(self._phases),
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
        plan: WindowPlan,
        options: PredictOptions,
        cache: int,
        classes_path: Path,
        probs_path: Path | None,
        progress: Progress | None,
        should_stop: ShouldStop | None,
    ) -> None:
        windows = window_order(scene, plan)
        sampler = [windows.grid[k] for _, k in windows.order]
        cuda = self.device.type == "cuda"
        workers = options.loader_workers
        if workers is None:
            workers = 1 if cuda else 0
        loader = torch.utils.data.DataLoader(
            windows.data,
            sampler=sampler,
            batch_size=plan.batch_size,
            num_workers=workers,
            collate_fn=collate_tiles,
            pin_memory=cuda,
            prefetch_factor=4 if workers else None,
            worker_init_fn=functools.partial(limit_gdal_cache, cache, parent=os.getpid()),
        )
        total, done = len(sampler), 0
        self._windows, self._height, self._width = total, scene.height, scene.width
        outputs = functools.partial(strip_outputs, probabilities=probs_path is not None)
        buffer = PanelBlender(
            scene, self.card.num_classes, plan, windows.panels, [p for p, _ in windows.order],
            outputs, options.weights,
        )  # fmt: skip
        with (
            strip_writers(scene, self.card, classes_path, probs_path, self._phases) as write,
            ThreadPoolExecutor(1) as writer,
        ):
            pending: Future | None = None
            running = None  # the batch whose logits are still being computed / copied back
            for batch in loader:
                if should_stop and should_stop():
                    raise CancelledError("stopped on request; no prediction was written")
                launched = self._launch(batch, options.tta)
                if running is not None:  # blend the last batch while this one runs
                    for strip in blend_batch(buffer, *running, self._phases):
                        pending = submit_strip(writer, write, strip, pending)
                    done += len(running[0])
                    if progress:
                        progress(done, total)
                running = launched
            for strip in blend_batch(buffer, *running, self._phases) if running else ():
                pending = submit_strip(writer, write, strip, pending)
            if progress:
                progress(total, total)
            for strip in timed_strips(buffer.finish(), self._phases):
                pending = submit_strip(writer, write, strip, pending)
            if pending is not None:
                pending.result()

    def _launch(self, batch: dict[str, Any], tta: bool | str) -> tuple[list, torch.Tensor, Any]:
        # (windows, host logits, CUDA event marking the copy back, or None on CPU)
        windows = batch["window"].tolist()
        reflect_outside(batch["image"], batch["valid"], windows, (self._height, self._width))
        start = time.perf_counter()
        logits = self.logits(batch["image"], batch["valid"], tta)
        self._phases["forward"] += time.perf_counter() - start
        if self.device.type != "cuda":
            return windows, logits, None
        host = torch.empty(logits.shape, dtype=logits.dtype, pin_memory=True)
        host.copy_(logits, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return windows, host, event
