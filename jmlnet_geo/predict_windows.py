"""Planning of prediction: window size, overlap, batch size, padding, blending, AMP and TTA modes.

The inference window is independent of the training tile: the segmenters are fully
convolutional, so a larger window forwards fewer pixels twice and has fewer seams. Defaults:

- **window**: the bundle card's ``predict_window`` when present, else the largest window (a
  multiple of the model's output stride) within the device's memory budget: at most
  :data:`CPU_WINDOW` px on CPU, on CUDA what a quarter of the free memory allows (at most
  :data:`CUDA_WINDOW`); and no larger than keeps the blend buffer (float32, K + 2 planes, one
  window high and one scene wide) under :data:`BUFFER_BYTES`, down to :data:`MIN_WINDOW`: a wide
  scene gets a smaller window rather than more memory (measured: a 2048 x 20000 px scene with a
  656 px window took 0.90x the time and 0.85x the peak RSS of 1024 px windows in panels), and a
  very wide one is blended in panels (below). A default window is then shrunk to the
  smallest stride multiple that needs no more windows along the scene's longer side (2048 px: 3
  windows of 864 px, not 3 of 1024 mostly repeating pixels). A scene smaller than the window is
  predicted in one window of its own longer side (rounded up to the stride), padded by
  reflection (:func:`reflect_outside`).
- **overlap**: the card's ``predict_overlap`` when present, else ``min(RECEPTIVE_OVERLAP, window
  // 4)``: about one receptive field of the model (288 px, see :data:`RECEPTIVE_OVERLAP`), and
  never more than a quarter of the window (so 256 px on CPU's 1024 px window, and a 256 px window
  keeps the old 64 px).
- **panels**: when the buffer one window high across the scene would pass :data:`BUFFER_BYTES`
  (at :data:`MIN_WINDOW`, a scene wider than 256 MiB / (4 B x (K + 2) x 512): 26 214 px for 3
  classes, 10 922 for 10; or a large window given by hand), it spans one panel of columns
  instead (cut at multiples of :data:`PANEL_ALIGN` px, at least two windows wide), and the scene
  is blended panel by panel (:func:`panel_columns`, :func:`panel_order`), the windows straddling
  a cut forwarded once per panel. So memory stays flat with the scene's width as with its
  height, and the window never shrinks below :data:`MIN_WINDOW`.
- **batch size**: about :data:`BATCH_PIXELS` pixels per forward on CPU (8 windows of 256²), from
  free memory on CUDA.
- **weights**: :func:`weight_window` ``"ramp"`` (linear over the overlap) or ``"cosine"`` (flat
  centre, raised-cosine taper over the overlap); compared by the seams part of
  ``bench/predict.py`` (BENCHMARKS.md: the cosine window is not better).

Not for reading or writing: see :mod:`jmlnet_geo.predict`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
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
#: Bound on the blend buffer (bytes): it sets the width of the panels of a wide scene.
BUFFER_BYTES = 256 * 2**20
#: Smallest default window (px) of a wide scene: a wider scene is blended in panels instead. At
#: 512 px the overlap is 128 px (a quarter), below one receptive field but twice the training
#: tile's old 64 px.
MIN_WINDOW = 512
#: Panels are cut at multiples of this many columns (whole blocks of the tiled outputs).
PANEL_ALIGN = 512
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
    """How one scene is cut: square windows of ``window`` px overlapping by ``overlap`` px.

    Windows are forwarded ``batch_size`` at a time and blended in panels of ``panel`` columns
    (None: one panel, the scene's width).
    """

    window: int
    overlap: int
    batch_size: int
    panel: int | None = None


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
    panel: int | None = None,
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
        panel: The panel width asked for (px); None plans it from :data:`BUFFER_BYTES`.

    Raises:
        OptionError: An overlap not smaller than the window, or a panel under 1 px.
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
            window = min(largest, max(by_buffer, MIN_WINDOW))
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
    if panel is None and planes_bytes * window * width > BUFFER_BYTES:
        panel = BUFFER_BYTES // (planes_bytes * window) // PANEL_ALIGN * PANEL_ALIGN
        panel = max(panel, -(-2 * window // PANEL_ALIGN) * PANEL_ALIGN)
    elif panel is not None and panel < 1:
        raise OptionError(f"PredictOptions.panel {panel}: give a width of at least 1 px")
    return WindowPlan(window, overlap, batch_size, panel if panel and panel < width else None)


def panel_columns(width: int, panel: int | None) -> list[tuple[int, int]]:
    """The column ranges ``(c0, c1)`` (end exclusive) of a scene's panels, left to right."""
    if not panel or panel >= width:
        return [(0, width)]
    return [(c0, min(c0 + panel, width)) for c0 in range(0, width, panel)]


def panel_order(
    columns: Sequence[int], window: int, panels: Sequence[tuple[int, int]]
) -> list[tuple[int, int]]:
    """The forwarding order: ``(panel index, window index)`` pairs, panel by panel.

    Args:
        columns: The first column of each window of the grid, in the grid's order (row by row).
        window: The window's side (px).
        panels: :func:`panel_columns`.

    Returns:
        For each panel in turn, every window reaching into its columns, in the grid's order; a
        window straddling a cut appears once per panel it reaches.
    """
    return [
        (p, k)
        for p, (c0, c1) in enumerate(panels)
        for k, col in enumerate(columns)
        if col < c1 and col + window > c0
    ]


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


def gdal_cache_bytes(scene: Scene, tile: int, panel: int | None = None) -> int:
    """GDAL block cache for streaming ``scene``: two rows of tiles (or blocks) across a panel.

    Windows move row by row, and a window row shares at most one row of blocks with the next,
    so two rows of blocks across the panel (``panel`` columns and a window; None: the scene's
    width) are all the reads reuse (strip writes need less). GDAL's default (5 % of the RAM)
    lets the cache, and the process, grow with the scene. Bounded to 32-512 MiB.
    """
    with open_dataset(scene) as ds:
        block_rows = ds.block_shapes[0][0]
    itemsize = np.dtype(scene.dtype).itemsize
    columns = min(scene.width, panel + tile) if panel else scene.width
    need = 2 * max(tile, block_rows) * columns * scene.count * itemsize
    return int(min(max(need, 32 * 2**20), 512 * 2**20))


def limit_gdal_cache(cache: int, worker_id: int, parent: int | None = None) -> None:
    """DataLoader ``worker_init_fn``: the reader worker's GDAL cache limit, in bytes.

    The worker also dies with ``parent`` (the predicting process), whatever kills it.
    """
    from rasterio.env import set_gdal_config

    from jmlnet_geo.children import die_with_parent

    die_with_parent(parent)
    set_gdal_config("GDAL_CACHEMAX", cache)
