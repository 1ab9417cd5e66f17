"""DetCAM: Grad-CAM of the detector's RoI head on the *given* boxes (paper section 2.3, Alg. 1).

For every annotated box (not a detection) on a window of the scene:

1. the window goes through the detector's backbone (and FPN): features F^b;
2. RoIAlign (the detector's own ``roi_heads.box_roi_pool``) pools the box from F^b: F^roi;
3. the box head runs to its last spatial feature map M_k, (N, C, 7, 7)
   (:func:`jmlnet_geo.models.detector.box_head_feature_layer`, hooked); a head without a
   spatial layer (torchvision's ``TwoMLPHead``) has the RoIAlign output as M_k, with a
   :class:`DetCAMWarning`;
4. the box predictor gives the logit s of the box's *annotated* class;
5. alpha_k = spatial mean of ds/dM_k (Eq. 9);
6. D = ReLU(sum_k alpha_k M_k) (Eq. 10 with Grad-CAM's ReLU), scaled to [0, 1] per box
   (min-max; a map with no positive evidence stays all 0), then resized (bilinear) from the
   RoI grid to the box's pixels.

The RoIs of a box head are independent (eval mode), so the sum of the boxes' logits has each
box's own gradient: all boxes of a window take one backward pass, and only M_k and what follows
it are differentiated (the model's parameters get no gradient).

Windows (:func:`plan_windows`) hold whole boxes with a context margin, never cut: boxes are
gathered row-major into windows of at most ``window`` pixels a side; a box whose context is
larger than that is processed alone on its context, shrunk to ``window`` pixels.

Low and high proposals (Algorithm 1): D_l = D > tau_l, D_h = D > tau_h (strictly above). The
DetCAM proposal is D_l; CAMCut (:mod:`jmlnet_geo.proposals.camcut`) uses both.

Not a detector: the boxes are given. Nothing here writes files (see
:mod:`jmlnet_geo.proposals.detector_proposals`).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from rasterio.windows import Window
from torch import nn

from jmlnet_geo.config import TAU_HIGH, TAU_LOW
from jmlnet_geo.errors import CancelledError, OptionError
from jmlnet_geo.io.raster import Scene, open_dataset, read_window
from jmlnet_geo.normalization import Normalization
from jmlnet_geo.vocabulary import ShouldStop

#: Default thresholds of the paper (Tables 2 and 3).


@dataclass(frozen=True)
class DetCAMOptions:
    """How DetCAM runs over a scene.

    Attributes:
        window: Longest side of a window, pixels (several boxes share one forward pass).
        margin: Context around each box inside its window, as a fraction of its larger side.
        min_margin: Context of at least this many pixels on each side.
    """

    window: int = 1024
    margin: float = 0.5
    min_margin: int = 32


@dataclass(frozen=True)
class WindowPlan:
    """One forward and backward pass: a window of the scene and the boxes it holds.

    Attributes:
        window: Pixel window of the scene (inside it).
        scale: Model pixels per scene pixel (1.0 unless the window was shrunk).
        boxes: Indexes of its boxes (whose context lies inside ``window``).
    """

    window: Window
    scale: float
    boxes: tuple[int, ...]


def check_thresholds(tau_low: float, tau_high: float) -> None:
    """Raise :class:`OptionError` unless 0 <= tau_low < tau_high <= 1."""
    if not 0.0 <= tau_low < tau_high <= 1.0:
        raise OptionError(
            f"--tau-low {tau_low:g} and --tau-high {tau_high:g}: give 0 <= tau-low < tau-high "
            f"<= 1 (the paper uses {TAU_LOW:g} and {TAU_HIGH:g})"
        )


def low_high(heat: np.ndarray, tau_low: float, tau_high: float) -> tuple[np.ndarray, np.ndarray]:
    """Algorithm 1's proposals of one box: ``(D_l, D_h)``, bool, D > tau_l and D > tau_h."""
    return heat > tau_low, heat > tau_high


# --- one window -------------------------------------------------------------------------------


def detcam_window(
    model: nn.Module, image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """DetCAM of boxes on one standardised image, on the RoI grid (Algorithm 1, steps 1-6).

    Args:
        model: A torchvision ``FasterRCNN`` with a convolutional box head (run in eval mode,
            its mode restored afterwards).
        image: float32 (C, H, W), standardised, on the model's device.
        boxes: float32 (N, 4) x_min, y_min, x_max, y_max in ``image`` pixels.
        labels: int64 (N,) the boxes' classes, 1..K of the model.

    Returns:
        float32 (N, h, w) in [0, 1] on the CPU (h = w = 7 for the presets): D of each box over
        its own extent (cell (0, 0) is the box's top-left corner).

    Warns:
        DetCAMWarning: The box head has no spatial layer: the RoIAlign output is M_k.
    """
    if len(boxes) == 0:
        return torch.zeros((0, 7, 7))
    layer = feature_layer(model)
    captured: list[torch.Tensor] = []

    def hook(module: nn.Module, args: object, output: torch.Tensor) -> torch.Tensor:
        leaf = output.detach().requires_grad_(True)  # differentiate from M_k on
        captured.append(leaf)
        return leaf

    handle = layer.register_forward_hook(hook) if layer is not None else None
    training = model.training
    model.eval()  # batch norms on running statistics: every RoI independent of the others
    try:
        with _no_parameter_grads(model):
            target = [{"boxes": boxes.float(), "labels": labels.long()}]
            with torch.no_grad():
                images, targets = model.transform([image], target)
                features = model.backbone(images.tensors)  # step 1: F^b
                rois = model.roi_heads.box_roi_pool(  # step 2: F^roi
                    features, [targets[0]["boxes"]], images.image_sizes
                )
            with torch.enable_grad():
                if layer is None:  # no spatial layer in the head: M_k = F^roi
                    rois = rois.detach().requires_grad_(True)
                    captured.append(rois)
                x = model.roi_heads.box_head(rois)  # step 3: M_k (captured by the hook)
                logits, _ = model.roi_heads.box_predictor(x)  # step 4
                score = logits.gather(1, labels.long().view(-1, 1).to(logits.device)).sum()
                (grad,) = torch.autograd.grad(score, captured[-1])  # one pass, all boxes
    finally:
        if handle is not None:
            handle.remove()
        model.train(training)
    maps = captured[-1].detach()
    alpha = grad.mean(dim=(2, 3))  # Eq. 9: (N, C)
    cam = torch.relu((alpha[:, :, None, None] * maps).sum(dim=1))  # Eq. 10: (N, h, w)
    return normalize_maps(cam).float().cpu()


class DetCAMWarning(UserWarning):
    """DetCAM runs on a detector whose box head has no spatial layer (see feature_layer)."""


def feature_layer(model: nn.Module) -> nn.Module | None:
    """The box-head layer whose output is M_k, or None (with a warning) when there is none.

    Heads with convolutions (both presets' ``FastRCNNConvFCHead``) give their last conv block
    (:func:`jmlnet_geo.models.detector.box_head_feature_layer`); heads that flatten at once
    (torchvision's ``TwoMLPHead``) give None: DetCAM then uses the RoIAlign output as M_k.
    """
    from jmlnet_geo.errors import JmlGeoError
    from jmlnet_geo.models.detector import box_head_feature_layer

    try:
        return box_head_feature_layer(model)
    except JmlGeoError:
        warnings.warn(
            "the detector's box head has no convolution before it flattens the RoI features: "
            "DetCAM uses the RoIAlign output (F^roi) as M_k",
            DetCAMWarning,
            stacklevel=3,
        )
        return None


def normalize_maps(cam: torch.Tensor) -> torch.Tensor:
    """Min-max scale each (h, w) map of (N, h, w) to [0, 1]; flat maps become all 0."""
    flat = cam.flatten(1)
    low = flat.min(dim=1).values[:, None, None]
    span = (flat.max(dim=1).values[:, None, None] - low).clamp_min(0)
    out = (cam - low) / span.clamp_min(1e-12)
    return torch.where(span > 1e-12, out, torch.zeros_like(out))


def box_heat(roi_map: torch.Tensor, rows: int, cols: int) -> np.ndarray:
    """A box's (h, w) RoI-grid map resized to the box's pixels: float32 (rows, cols) in [0, 1].

    Bilinear with pixel centres aligned (``align_corners=False``): RoI cell (i, j) covers the
    box's i-th / j-th seventh, as RoIAlign pooled it.
    """
    heat = F.interpolate(roi_map[None, None], size=(rows, cols), mode="bilinear")
    return heat[0, 0].clamp(0, 1).numpy().astype(np.float32)


@contextlib.contextmanager
def _no_parameter_grads(model: nn.Module) -> Iterator[None]:
    """No parameter needs a gradient inside the block (restored afterwards)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


# --- windows over a scene ---------------------------------------------------------------------


def box_context(boxes: np.ndarray, width: int, height: int, options: DetCAMOptions) -> np.ndarray:
    """int64 (N, 4) col0, row0, col1, row1 of each box plus its context, clipped to the scene."""
    boxes = np.asarray(boxes, np.int64).reshape(-1, 4)
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    pad = np.maximum(options.min_margin, np.ceil(options.margin * side)).astype(np.int64)
    out = boxes + np.stack([-pad, -pad, pad, pad], axis=1)
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
    return out


def plan_windows(
    boxes: np.ndarray, width: int, height: int, options: DetCAMOptions = DetCAMOptions()
) -> list[WindowPlan]:
    """Gather boxes into windows that hold each box and its context whole.

    Row-major sweep: the first box not yet placed anchors a ``window``-sized square at its
    context's top-left corner (moved inside the scene); every box whose context lies inside
    joins it; the window is then cut down to its boxes' contexts. A box whose context is longer
    than ``window`` gets a window of its own, shrunk to ``window`` pixels. Deterministic.

    Args:
        boxes: int64 (N, 4) col0, row0, col1, row1 in scene pixels, end exclusive.
        width: Scene columns.
        height: Scene rows.
        options: Window size and context.

    Returns:
        Windows covering every box exactly once.
    """
    context = box_context(boxes, width, height, options)
    sides = np.maximum(context[:, 2] - context[:, 0], context[:, 3] - context[:, 1])
    order = np.lexsort((np.arange(len(context)), context[:, 0], context[:, 1]))
    free = np.ones(len(context), bool)
    plans = []
    size = options.window
    for i in order:
        if not free[i]:
            continue
        c0, r0, c1, r1 = (int(v) for v in context[i])
        if sides[i] > size:
            free[i] = False
            scale = size / int(sides[i])
            plans.append(WindowPlan(Window(c0, r0, c1 - c0, r1 - r0), scale, (int(i),)))
            continue
        wc0, wr0 = min(c0, max(0, width - size)), min(r0, max(0, height - size))
        wc1, wr1 = min(width, wc0 + size), min(height, wr0 + size)
        inside = (
            free
            & (sides <= size)
            & (context[:, 0] >= wc0)
            & (context[:, 1] >= wr0)
            & (context[:, 2] <= wc1)
            & (context[:, 3] <= wr1)
        )
        members = np.nonzero(inside)[0]
        free[members] = False
        lo = context[members, :2].min(axis=0)
        hi = context[members, 2:].max(axis=0)
        window = Window(int(lo[0]), int(lo[1]), int(hi[0] - lo[0]), int(hi[1] - lo[1]))
        plans.append(WindowPlan(window, 1.0, tuple(int(m) for m in members)))
    return plans


def scene_detcam(
    model: nn.Module,
    normalization: Normalization,
    scene: Scene,
    boxes: np.ndarray,
    labels: np.ndarray,
    options: DetCAMOptions = DetCAMOptions(),
    progress: Callable[[int], None] | None = None,
    should_stop: ShouldStop | None = None,
) -> tuple[list[np.ndarray], np.ndarray]:
    """DetCAM of every box of a scene, at the boxes' full resolution.

    Args:
        model: The detector in eval mode (:func:`jmlnet_geo.detector_file.load_detector`);
            tensors go to its device.
        normalization: The detector's band standardisation.
        scene: The scene (same bands as the detector).
        boxes: int64 (N, 4) col0, row0, col1, row1 in scene pixels, end exclusive
            (:func:`jmlnet_geo.proposals.compose.pixel_boxes`).
        labels: int64 (N,) each box's class, 1..K *of the detector*.
        options: Windows and context.
        progress: Called with the number of boxes finished by each window.
        should_stop: Polled between windows; True stops with :class:`CancelledError`.

    Returns:
        ``(heats, seconds)``: per box, float32 (rows, cols) D in [0, 1] over the box's pixels;
        float64 (N,) seconds per box (each window's time shared by its boxes).
    """
    boxes = np.asarray(boxes, np.int64).reshape(-1, 4)
    labels = np.asarray(labels, np.int64)
    device = next(model.parameters()).device
    heats: list[np.ndarray | None] = [None] * len(boxes)
    seconds = np.zeros(len(boxes))
    with open_dataset(scene) as ds:
        for plan in plan_windows(boxes, scene.width, scene.height, options):
            if should_stop and should_stop():
                raise CancelledError("stopped on request; no proposal was written")
            start = time.perf_counter()
            image, valid = read_window(ds, scene, plan.window)
            tensor = torch.from_numpy(image.astype(np.float32))[None].to(device)
            mask = torch.from_numpy(valid)[None].to(device)
            tensor = normalization.apply(tensor, mask)
            index = list(plan.boxes)
            xyxy = boxes[index].astype(np.float64) - [plan.window.col_off, plan.window.row_off] * 2
            if plan.scale < 1.0:
                size = (
                    max(1, round(plan.window.height * plan.scale)),
                    max(1, round(plan.window.width * plan.scale)),
                )
                xyxy *= [
                    size[1] / plan.window.width,
                    size[0] / plan.window.height,
                ] * 2
                tensor = F.interpolate(tensor, size=size, mode="bilinear", antialias=True)
            roi_maps = detcam_window(
                model,
                tensor[0],
                torch.from_numpy(xyxy).float().to(device),
                torch.from_numpy(labels[index]).to(device),
            )
            for k, i in enumerate(index):
                col0, row0, col1, row1 = boxes[i]
                heats[i] = box_heat(roi_maps[k], int(row1 - row0), int(col1 - col0))
            seconds[index] = (time.perf_counter() - start) / len(index)
            if progress:
                progress(len(index))
    return [h for h in heats if h is not None], seconds


def shrink_factor(boxes: np.ndarray, scene: Scene, options: DetCAMOptions) -> list[float]:
    """Per box, the scale of its window (1.0 unless the box was processed shrunk)."""
    out = [1.0] * len(boxes)
    for plan in plan_windows(boxes, scene.width, scene.height, options):
        for i in plan.boxes:
            out[i] = plan.scale
    return out


__all__ = [
    "TAU_HIGH",
    "TAU_LOW",
    "DetCAMOptions",
    "DetCAMWarning",
    "WindowPlan",
    "box_context",
    "box_heat",
    "check_thresholds",
    "detcam_window",
    "feature_layer",
    "low_high",
    "normalize_maps",
    "plan_windows",
    "scene_detcam",
    "shrink_factor",
]
