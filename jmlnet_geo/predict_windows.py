"""Planning of prediction: window size, overlap, batch size, padding, blending, AMP and TTA modes.

The inference window is independent of the training tile: the segmenters are fully
convolutional, so a larger window forwards fewer pixels twice and has fewer seams. Defaults:

- **window**: the bundle card's ``predict_window`` when present, else the largest window (a
  multiple of the model's output stride) within the device's memory budget: at most
  :data:`CPU_WINDOW` px on CPU, on CUDA what a quarter of the free memory allows (at most
  :data:`CUDA_WINDOW`); and in both cases no larger than keeps the blend buffer (float32,
  K + 2 planes, one window high and one scene wide) under :data:`BUFFER_BYTES`, so a very wide
  scene gets a smaller window rather than more memory. A default window is then shrunk to the
  smallest stride multiple that needs no more windows along the scene's longer side (2048 px: 3
  windows of 864 px, not 3 of 1024 mostly repeating pixels). A scene smaller than the window is
  predicted in one window of its own longer side (rounded up to the stride), padded by
  reflection (:func:`reflect_outside`).
- **overlap**: the card's ``predict_overlap`` when present, else ``min(RECEPTIVE_OVERLAP, window
  // 4)``: about one receptive field of the model (288 px, see :data:`RECEPTIVE_OVERLAP`), and
  never more than a quarter of the window (so 256 px on CPU's 1024 px window, and a 256 px window
  keeps the old 64 px).
- **batch size**: about :data:`BATCH_PIXELS` pixels per forward on CPU (8 windows of 256²), from
  free memory on CUDA.
- **weights**: :func:`weight_window` ``"ramp"`` (linear over the overlap) or ``"cosine"`` (flat
  centre, raised-cosine taper over the overlap); compared by the seams part of
  ``bench/predict.py`` (BENCHMARKS.md: the cosine window is not better).

Not for reading or writing: see :mod:`jmlnet_geo.predict`.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from jmlnet_geo.errors import OptionError
from jmlnet_geo.io.raster import Scene, open_dataset

#: Largest default window on CPU (px): the fast preset's forward of one 1024² window needs about
#: the memory of the old 8 x 256² batch.
CPU_WINDOW = 1024
#: Largest default window on CUDA (px).
CUDA_WINDOW = 2048
#: Pixels per forward pass on CPU when the batch size is not given (8 windows of 256²).
BATCH_PIXELS = 8 * 256 * 256
#: Bound on the blend buffer (bytes) used to choose the default window for wide scenes.
BUFFER_BYTES = 256 * 2**20
#: Bytes of activations per input pixel of one forward (inference, float32): the fast preset's
#: peak RSS growth is 618 B/px for one 1024² window (640 for 8 x 256², 415 for one 2048²), CPU;
#: the paper preset's ResNet-50 at stride 8 is not measured, taken as 4x. Used to size windows
#: and batches from free CUDA memory.
ACTIVATION_BYTES = {"fast": 600, "paper": 2400}
#: Default overlap (px) per preset: about one receptive field. Both presets' outermost ASPP taps
#: reach 288 px from the output pixel (fast: rate 18 at stride 16; paper: rate 36 at stride 8),
#: and measured on the trained demo bundle (fast) as the gradient of one output pixel's logits
#: with respect to a 512² input, less the uniform level of the ASPP image-pooling branch, 90 % of
#: the remaining gradient mass lies within 145 px (Chebyshev radius), a diameter of 290 px
#: (``bench/predict_windows.py``, in git history). The seam excess falls with the overlap (0.72,
#: 0.38, 0.14 points at 96, 256, 512 px, 2048² mosaic of the sample scene), the forwarded pixels
#: rise with it.
RECEPTIVE_OVERLAP = {"fast": 288, "paper": 288}
#: Output stride when the model does not state one (the paper preset's dilated ResNet-50).
PAPER_STRIDE = 8
WEIGHTS = ("ramp", "cosine")
#: ``PredictOptions.tta`` values; ``Predictor(amp=...)`` values.
TTA_MODES = ("none", "flips")
AMP_MODES = ("auto", "off", "bf16", "fp16")


class WindowWarning(UserWarning):
    """A requested window was changed (rounded to the model's output stride)."""


@dataclass(frozen=True)
class WindowPlan:
    """How one scene is cut: square windows of ``window`` px overlapping by ``overlap`` px."""

    window: int
    overlap: int
    batch_size: int


def output_stride(model: Any) -> int:
    """The model's output stride in px: ``encoder.output_stride`` (fast preset, 16), else 8."""
    encoder = getattr(model, "encoder", None)
    stride = getattr(encoder, "output_stride", None)
    return int(stride) if stride else PAPER_STRIDE


def card_value(card: Any, name: str) -> int | None:
    """An optional integer card field: the attribute, else ``architecture[name]``, else None."""
    value = getattr(card, name, None)
    if value is None:
        value = (getattr(card, "architecture", None) or {}).get(name)
    return int(value) if value else None


def round_window(window: int, stride: int, flag: str = "--window") -> int:
    """``window`` rounded to the nearest multiple of ``stride`` (at least one), with a warning."""
    rounded = max(stride, stride * round(window / stride))
    if rounded != window:
        warnings.warn(
            f"{flag} {window}: not a multiple of the model's output stride ({stride} px); "
            f"using {rounded}",
            WindowWarning,
            stacklevel=3,
        )
    return rounded


def plan_windows(
    card: Any,
    model: Any,
    device: str,
    scene_shape: tuple[int, int],
    window: int | None = None,
    overlap: int | None = None,
    batch_size: int | None = None,
    free_bytes: int | None = None,
) -> WindowPlan:
    """Window, overlap and batch size for one scene (see the module docstring).

    Args:
        card: The bundle's model card (``num_classes``, ``architecture``, optional
            ``predict_window`` / ``predict_overlap``).
        model: The segmenter (for its output stride).
        device: ``"cpu"`` or ``"cuda"`` (a ``torch.device.type``).
        scene_shape: (height, width) of the scene in px.
        window: The window side the user asked for (px); None picks the default.
        overlap: The overlap asked for (px); None picks the default.
        batch_size: Windows per forward pass asked for; None picks the default.
        free_bytes: Free device memory (CUDA); None on CPU.

    Raises:
        OptionError: An overlap not smaller than the window.
    """
    stride = output_stride(model)
    preset = (getattr(card, "architecture", None) or {}).get("preset", "fast")
    per_pixel = ACTIVATION_BYTES.get(preset, ACTIVATION_BYTES["paper"])
    height, width = scene_shape
    planes_bytes = 4 * (card.num_classes + 1)
    explicit_window = window is not None
    if window is not None:
        window = round_window(window, stride)
    else:
        window = card_value(card, "predict_window")
        explicit_window = window is not None  # the bundle's preference is kept as it is
        if window is None:
            largest = CPU_WINDOW if free_bytes is None else CUDA_WINDOW
            if free_bytes is not None:
                largest = min(largest, int(math.sqrt(free_bytes / 4 / per_pixel)))
            by_buffer = BUFFER_BYTES // (planes_bytes * max(width, 1))
            window = min(largest, by_buffer)
        window = max(stride, window // stride * stride)
    explicit_overlap = overlap is not None
    if overlap is None:
        overlap = card_value(card, "predict_overlap")
        if overlap is None:
            overlap = min(RECEPTIVE_OVERLAP.get(preset, 288), window // 4)
        overlap = min(overlap, window // 2)
    if not 0 <= overlap < window:
        which = "--overlap" if explicit_overlap else "the bundle's predict_overlap"
        raise OptionError(f"{which} {overlap}: give 0 <= overlap < window ({window} px)")
    whole = -(-max(height, width) // stride) * stride
    if window > whole:  # a smaller scene: one window of its own size covers it
        window, overlap = whole, min(overlap, whole // 2)
    elif not explicit_window:  # the smallest window giving as few windows along the longer side
        count = -(-(max(height, width) - overlap) // (window - overlap))
        fit = -(-(max(height, width) + (count - 1) * overlap) // count)
        window = min(window, -(-fit // stride) * stride)
    if batch_size is None:
        budget = BATCH_PIXELS if free_bytes is None else free_bytes // 4 // per_pixel
        batch_size = max(1, min(64, budget // (window * window)))
    return WindowPlan(window, overlap, batch_size)


def reflect_outside(image: Any, valid: Any, windows: list[list[int]], scene_shape: tuple) -> None:
    """Fill the parts of windows past the scene's far edges with the scene reflected, in place.

    Only a scene smaller than the window along a side has such parts (windows are otherwise
    snapped inside). Reflection keeps the classes inside closer to the scene's own than the
    mean (0 after normalisation): 99.37 / 99.32 / 98.89 % against 99.04 / 99.22 / 98.75 % of a
    crop's pixels agree with the crop predicted inside the whole scene, three crops of the sample
    scene, ``bench/predict_windows.py`` (in git history; figures in BENCHMARKS.md).

    Args:
        image: float32 tensor (N, C, H, W) of raw windows, zero outside the scene.
        valid: bool tensor (N, H, W), False outside the scene (reflected too).
        windows: (col_off, row_off, width, height) of each window in scene pixels.
        scene_shape: (height, width) of the scene.
    """
    import torch

    for i, (col, row, width, height) in enumerate(windows):
        rows, cols = min(height, scene_shape[0] - row), min(width, scene_shape[1] - col)
        if rows < height or cols < width:
            pad = ((0, height - rows), (0, width - cols))
            inside = image[i, :, :rows, :cols].numpy()
            image[i] = torch.from_numpy(np.pad(inside, ((0, 0), *pad), mode="reflect"))
            valid[i] = torch.from_numpy(np.pad(valid[i, :rows, :cols].numpy(), pad, "reflect"))


def amp_dtype(amp: str, device: Any) -> Any:
    """The autocast ``torch.dtype`` of ``amp`` on a ``torch.device`` (None: fp32).

    See :class:`jmlnet_geo.predict.Predictor` for the names.

    Raises:
        OptionError: An unknown name.
    """
    if amp not in AMP_MODES:
        raise OptionError(f"--amp {amp}: choose from {', '.join(AMP_MODES)}")
    import torch

    if amp == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def tta_mode(tta: bool | str) -> str:
    """``none`` or ``flips`` from a ``PredictOptions.tta`` value (True: ``flips``)."""
    mode = {True: "flips", False: "none"}.get(tta, tta) if isinstance(tta, bool) else tta
    if mode not in TTA_MODES:
        raise OptionError(f"--tta {tta}: choose from {', '.join(TTA_MODES)}")
    return mode


def weight_window(size: int, overlap: int, kind: str = "ramp") -> np.ndarray:
    """float32 (size, size) blending weights, separable, 1 in the centre, ~0 at the edges.

    ``ramp``: linear from 1e-3 at the edge to 1 at ``overlap`` px from it. ``cosine``: raised
    cosine (Hann half-window) over the same distance. Weights never reach 0, so every pixel of a
    window counts, and a lone window's argmax is the model's own.
    """
    if kind not in WEIGHTS:
        raise OptionError(f"weights '{kind}': choose from {', '.join(WEIGHTS)}")
    edge = np.minimum(np.arange(size) + 0.5, size - 0.5 - np.arange(size))
    ramp = np.clip(edge / max(overlap, 1), 0.0, 1.0)
    if kind == "cosine":
        ramp = 0.5 - 0.5 * np.cos(np.pi * ramp)
    ramp = np.clip(ramp, 1e-3, 1.0).astype(np.float32)
    return np.outer(ramp, ramp)


class Blender:
    """Weighted sum of window logits over a buffer one window high, emitting finished strips.

    The buffer holds float32 (K+1, window, scene width) weighted logit sums and (window, width)
    weight sums, in scene pixel coordinates shifted up by ``top`` rows; rows no later window
    reaches are handed to ``finish_strip(sums, weights)`` (views of the buffer, so it must copy
    what it keeps) and what it returns is yielded with the strip's first row. Windows must come
    row by row from the top, as :class:`jmlnet_geo.tiling.GridTiles` yields them.
    """

    def __init__(
        self,
        scene: Any,
        num_classes: int,
        tile: int,
        overlap: int,
        finish_strip: Callable[[np.ndarray, np.ndarray], Any],
        weights: str = "ramp",
    ) -> None:
        self.scene, self.tile, self.finish_strip = scene, tile, finish_strip
        self.top = 0
        self.logits = np.zeros((num_classes, tile, scene.width), np.float32)
        self.weight = np.zeros((tile, scene.width), np.float32)
        self.window_weight = weight_window(tile, overlap, weights)

    def add(self, window: list[int], logits: np.ndarray) -> Iterator[tuple[int, Any]]:
        """Add one window's float32 logits (K+1, tile, tile) at ``window`` = (col, row, ...)."""
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


def limit_gdal_cache(cache: int, worker_id: int, parent: int | None = None) -> None:
    """DataLoader ``worker_init_fn``: the reader worker's GDAL cache limit, in bytes.

    The worker also dies with ``parent`` (the predicting process), whatever kills it.
    """
    from rasterio.env import set_gdal_config

    from jmlnet_geo.children import die_with_parent

    die_with_parent(parent)
    set_gdal_config("GDAL_CACHEMAX", cache)


def blend_batch(buffer: Blender, windows: list, logits: Any, event: Any, phases: dict):
    """Wait for a launched batch's logits and add them to the buffer; yield finished strips.

    ``logits``: float32 (N, K+1, tile, tile) host tensor of the batch's ``windows``; ``event``:
    the CUDA event marking its copy back, or None; the blender's seconds go to
    ``phases["blend"]``.
    """
    if event is not None:
        event.synchronize()
    for window, window_logits in zip(windows, logits.numpy(), strict=True):
        yield from timed_strips(buffer.add(window, window_logits), phases)


def timed_strips(strips: Iterator[tuple[int, Any]], phases: dict) -> list:
    """The blender's strips, its time added to ``phases["blend"]``."""
    start = time.perf_counter()
    done = list(strips)
    phases["blend"] += time.perf_counter() - start
    return done


def submit_strip(writer: ThreadPoolExecutor, write, strip, pending: Future | None) -> Future:
    """Queue a strip write; at most one write waits, so memory stays bounded."""
    if pending is not None:
        pending.result()
    return writer.submit(write, strip)
