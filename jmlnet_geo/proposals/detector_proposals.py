"""DetCAM and CAMCut proposal rasters of scenes, from a trained detector.

The detector-based counterpart of :func:`jmlnet_geo.proposals.compose.write_proposals`: same
file names (``<stem>.detcam.tif``, ``<stem>.camcut.tif``), same class rasters (0 background, the
box's class id on the object, 255 where the scene is nodata), same painting (large boxes first),
and the same fallback rule: a box whose mask is empty or covers less than ``min_fraction`` of
it gets the filled box, counted in the summary.

Per scene: DetCAM of every box (:func:`jmlnet_geo.proposals.detcam.scene_detcam`, windows of
many boxes, one backward pass each), then DetCAM = D_l, and CAMCut = GrabCut seeded by D_l / D_h
on the same crop the classic methods use (:func:`jmlnet_geo.proposals.crop.read_crop`); pixels
of D_h are always part of the CAMCut mask. Optionally the continuous DetCAM is written as
``<stem>.detcam_heat.tif`` (uint8, 255 = 1.0, 0 outside the boxes) to inspect in QGIS.

Time per box: DetCAM's is each window's time (reading, forward, backward, resizing) shared by
its boxes; CAMCut's adds its own GrabCut to that (it needs the DetCAM).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jmlnet_geo.detector_file import (
    DetectorCard,
    DetectorFileError,
    check_bands,
    load_detector,
    read_detector_card,
)
from jmlnet_geo.devices import resolve_device
from jmlnet_geo.errors import CancelledError, display_path
from jmlnet_geo.io.class_raster import class_raster_profile, strips
from jmlnet_geo.io.raster import Scene, open_dataset
from jmlnet_geo.io.vector import SceneBoxes
from jmlnet_geo.io.write import atomic_output
from jmlnet_geo.proposals.camcut import CAMCutOptions, camcut_mask
from jmlnet_geo.proposals.compose import (
    MethodSummary,
    SceneSummary,
    check_methods,
    output_paths,
    paint_order,
    paint_proposal,
    pixel_boxes,
    scene_stretch,
    single_threaded_cv2,
    strip_parts,
)
from jmlnet_geo.proposals.crop import full_size, read_crop
from jmlnet_geo.proposals.detcam import (
    TAU_HIGH,
    TAU_LOW,
    DetCAMOptions,
    check_thresholds,
    scene_detcam,
)
from jmlnet_geo.proposals.options import DETECTOR_METHODS, ProposalOptions
from jmlnet_geo.vocabulary import Progress, ShouldStop

#: Method name of the continuous DetCAM raster (not a proposal).
HEAT = "detcam_heat"


def heat_path(out_dir: str | os.PathLike[str], scene: Scene) -> Path:
    """Where the continuous DetCAM of ``scene`` goes: ``<stem>.detcam_heat.tif``."""
    return Path(out_dir) / f"{Path(scene.path).stem}.{HEAT}.tif"


def detector_labels(
    card: DetectorCard,
    class_names: Sequence[str],
    scene_boxes: Sequence[SceneBoxes],
    detector_path: str | os.PathLike[str],
) -> list[np.ndarray]:
    """The boxes' class ids turned into the detector's (matched by class name).

    Returns:
        Per scene, int64 (N,) class ids 1..K of the detector.

    Raises:
        DetectorFileError: A box's class is not among the detector's classes.
    """
    known = {name: i + 1 for i, name in enumerate(card.classes)}
    used = sorted({class_names[i - 1] for sb in scene_boxes for i in sb.class_ids.tolist()})
    unknown = [name for name in used if name not in known]
    if unknown:
        raise DetectorFileError(
            f"{display_path(detector_path)}: trained on classes {', '.join(card.classes)}, "
            f"but the boxes also have {', '.join(unknown)}; train a detector on these boxes "
            "(leave out --detector)"
        )
    lookup = np.array([0, *(known.get(name, 0) for name in class_names)], np.int64)
    return [lookup[sb.class_ids] for sb in scene_boxes]


def write_detector_proposals(
    scene_boxes: Sequence[SceneBoxes],
    class_names: Sequence[str],
    methods: Sequence[str],
    out_dir: str | os.PathLike[str],
    detector_path: str | os.PathLike[str],
    tau_low: float = TAU_LOW,
    tau_high: float = TAU_HIGH,
    heatmap: bool = False,
    device: str = "auto",
    progress: Progress | None = None,
    options: ProposalOptions | None = None,
    detcam_options: DetCAMOptions | None = None,
    camcut_options: CAMCutOptions | None = None,
    should_stop: ShouldStop | None = None,
    loaded: tuple[Any, DetectorCard] | None = None,
) -> list[SceneSummary]:
    """Write the DetCAM and/or CAMCut proposal raster of every scene.

    Args:
        scene_boxes: Each scene with its boxes (:func:`jmlnet_geo.io.vector.boxes_for_scenes`).
        class_names: Names of class ids 1..K of the boxes (written into every raster).
        methods: Some of :data:`jmlnet_geo.proposals.compose.DETECTOR_METHODS`.
        out_dir: Output folder (created when missing).
        detector_path: A detector file (:func:`jmlnet_geo.train.detector.train_detector`).
        tau_low: D_l = D > tau_low: the DetCAM proposal, and CAMCut's sure background below.
        tau_high: D_h = D > tau_high: CAMCut's sure foreground.
        heatmap: Also write ``<stem>.detcam_heat.tif`` (see the module docstring).
        device: ``auto``, ``cpu`` or ``cuda``.
        progress: Called with (work done, work in all), in boxes (twice per box with CAMCut).
        options: Crop settings (margin, ``max_side``, ``min_fraction``, picture bands) shared
            with the classic methods (default ``ProposalOptions()``).
        detcam_options: DetCAM windows (default ``DetCAMOptions()``).
        camcut_options: GrabCut iterations of CAMCut (default ``CAMCutOptions()``).
        should_stop: Polled between windows and boxes; True stops with :class:`CancelledError`
            before any raster is written.
        loaded: ``load_detector(detector_path, device)`` done already (a cluster worker's
            cache, :func:`jmlnet_geo.cluster.cached_detector`); default: loaded here.

    Returns:
        One summary per scene (methods ``detcam`` / ``camcut``).

    Raises:
        OptionError: An unknown method, or thresholds not 0 <= tau_low < tau_high <= 1.
        DetectorFileError: Missing or unreadable detector file (pickles refused), a scene with
            another band count, or box classes the detector does not know.
        OutputError: The folder cannot be written, or two scenes share a file stem.
        CancelledError: ``should_stop`` returned True.
    """
    import torch

    options = options or ProposalOptions()
    detcam_options = detcam_options or DetCAMOptions()
    methods = check_methods(methods, DETECTOR_METHODS)
    check_thresholds(tau_low, tau_high)
    card = read_detector_card(detector_path)
    check_bands(card, [sb.scene for sb in scene_boxes], os.fspath(detector_path))
    labels = detector_labels(card, class_names, scene_boxes, detector_path)
    paths = output_paths(scene_boxes, methods, out_dir)
    model, card = loaded or load_detector(detector_path, resolve_device(device))
    normalization = card.band_normalization()
    total = sum(len(sb) for sb in scene_boxes) * (1 + ("camcut" in methods))
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, total)

    advance(0)
    computed = []  # everything first, so a stop request leaves no raster behind
    for sb, scene_labels in zip(scene_boxes, labels, strict=True):
        boxes = pixel_boxes(sb)
        heats, seconds = scene_detcam(
            model, normalization, sb.scene, boxes, scene_labels, detcam_options, advance,
            should_stop,
        )  # fmt: skip
        found: dict[str, tuple[list[np.ndarray], list[bool], np.ndarray]] = {}
        if "detcam" in methods:
            masks, fallbacks = detcam_masks(heats, tau_low, options.min_fraction)
            found["detcam"] = (masks, fallbacks, seconds)
        if "camcut" in methods:
            masks, fallbacks, own = camcut_masks(
                sb.scene, boxes, heats, tau_low, tau_high, options, camcut_options, advance,
                should_stop,
            )  # fmt: skip
            found["camcut"] = (masks, fallbacks, seconds + own)
        computed.append((boxes, found, [heat_values(h) for h in heats] if heatmap else None))
    summaries = []
    for sb, (boxes, found, heats) in zip(scene_boxes, computed, strict=True):
        per_method: dict[str, MethodSummary] = {}
        for method in methods:
            masks, fallbacks, secs = found[method]
            path = paths[(sb.scene.path, method)]
            paint_proposal(path, sb, boxes, masks, class_names, method)
            per_method[method] = MethodSummary(
                path=os.fspath(path),
                boxes=len(boxes),
                fallbacks=int(sum(fallbacks)),
                seconds=float(np.sum(secs)),
            )
        if heats is not None:
            write_heat_raster(heat_path(out_dir, sb.scene), sb.scene, boxes, heats)
        summaries.append(SceneSummary(sb.scene.path, len(sb), per_method))
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return summaries


def detcam_masks(
    heats: Sequence[np.ndarray], tau_low: float, min_fraction: float
) -> tuple[list[np.ndarray], list[bool]]:
    """The DetCAM proposal of each box: D_l = D > tau_low, or the filled box when degenerate.

    Returns:
        ``(masks, fallbacks)``: bool (rows, cols) per box, and whether it fell back.
    """
    masks, fallbacks = [], []
    for heat in heats:
        mask = heat > tau_low
        fallback = bool(mask.mean() < min_fraction) if mask.size else True
        masks.append(np.ones(heat.shape, bool) if fallback else mask)
        fallbacks.append(fallback)
    return masks, fallbacks


def camcut_masks(
    scene: Scene,
    boxes: np.ndarray,
    heats: Sequence[np.ndarray],
    tau_low: float,
    tau_high: float,
    options: ProposalOptions | None = None,
    camcut_options: CAMCutOptions | None = None,
    advance: Callable[[int], None] | None = None,
    should_stop: ShouldStop | None = None,
) -> tuple[list[np.ndarray], list[bool], np.ndarray]:
    """The CAMCut proposal of each box of a scene, from its DetCAM.

    Args:
        scene: The scene.
        boxes: int64 (N, 4) col0, row0, col1, row1 in scene pixels, end exclusive.
        heats: Per box, float32 (rows, cols) DetCAM in [0, 1].
        tau_low: D_l threshold.
        tau_high: D_h threshold.
        options: Crop settings and ``min_fraction`` (default ``ProposalOptions()``).
        camcut_options: GrabCut iterations (default ``CAMCutOptions()``).
        advance: Called with 1 after each box.
        should_stop: Polled before each box.

    Returns:
        ``(masks, fallbacks, seconds)``: bool (rows, cols) per box (D_h always included; the
        filled box when CAMCut cannot run or is degenerate), whether it fell back, and float64
        (N,) GrabCut seconds per box.
    """
    options = options or ProposalOptions()
    camcut_options = camcut_options or CAMCutOptions()
    stretch = scene_stretch(scene, options)
    masks, fallbacks = [], []
    seconds = np.zeros(len(boxes))
    with open_dataset(scene) as ds, single_threaded_cv2():
        for i, heat in enumerate(heats):
            if should_stop and should_stop():
                raise CancelledError("stopped on request; no proposal was written")
            start = time.perf_counter()
            box = tuple(int(v) for v in boxes[i])
            crop = read_crop(
                ds, scene, box, stretch, options.margin, options.min_margin, options.max_side
            )
            mask = camcut_mask(crop, heat, tau_low, tau_high, camcut_options)
            fallback = mask is None or mask.mean() < options.min_fraction
            if fallback:
                full = np.ones(crop.box_shape, bool)
            else:
                full = full_size(mask, crop) | (heat > tau_high)
            masks.append(full)
            fallbacks.append(bool(fallback))
            seconds[i] = time.perf_counter() - start
            if advance:
                advance(1)
    return masks, fallbacks, seconds


def heat_values(heat: np.ndarray) -> np.ndarray:
    """A box's DetCAM (float in [0, 1]) as the heat raster stores it: uint8 round(255 * D)."""
    return np.rint(255.0 * np.clip(heat, 0.0, 1.0)).astype(np.uint8)


def write_heat_raster(
    path: str | os.PathLike[str], scene: Scene, boxes: np.ndarray, heats: Sequence[np.ndarray]
) -> None:
    """Write the continuous DetCAM of a scene: uint8, round(255 * D) in the boxes, 0 elsewhere.

    Boxes are painted large to small (as the proposals), so a small box's map stays visible.
    No nodata value: 255 means D = 1.

    Args:
        path: Output GeoTIFF on ``scene``'s grid.
        scene: The scene.
        boxes: int64 (N, 4) col0, row0, col1, row1 in scene pixels, end exclusive.
        heats: Per box, (rows, cols) DetCAM: float in [0, 1], or uint8 from :func:`heat_values`.
    """
    import rasterio

    profile = {**class_raster_profile(scene), "nodata": None}
    order = paint_order(boxes)
    values = [h if h.dtype == np.uint8 else heat_values(h) for h in heats]
    with (
        atomic_output(path) as tmp,
        rasterio.Env(GDAL_PAM_ENABLED=False),
        rasterio.open(tmp, "w", **profile) as dst,
    ):
        dst.update_tags(proposal_method=HEAT, scale="255 = DetCAM 1.0")
        dst.set_band_description(1, "DetCAM (0-255)")
        for window in strips(scene):
            top, bottom = window.row_off, window.row_off + window.height
            canvas = np.zeros((window.height, window.width), np.uint8)
            for i, rows, box_rows in strip_parts(boxes, order, top, bottom):
                canvas[rows, boxes[i, 0] : boxes[i, 2]] = values[i][box_rows]
            dst.write(canvas, 1, window=window)
