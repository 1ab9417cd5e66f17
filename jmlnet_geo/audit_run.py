"""``jmlgeo audit``: score every box of a layer and find unboxed objects, as two GeoPackage layers.

Inputs: scenes, a box layer, and opinions about the boxes:

- proposals (:mod:`jmlnet_geo.proposals`): the rasters ``<stem>.<method>.tif`` of a run folder
  (``--run DIR``: ``DIR/proposals/`` of ``jmlgeo train`` or ``DIR`` of ``jmlgeo proposals``), or
  made here in a temporary folder (crf and grabcut by default);
- optionally a model: a bundle (run with :class:`jmlnet_geo.predict.Predictor` into a temporary
  folder) or the outputs of ``jmlgeo predict --probabilities`` (``<stem>.classes.tif`` and
  ``<stem>.probabilities.tif``).

Output (written by :func:`jmlnet_geo.audit_layers.write_audit`): layer ``boxes``, one row per
input feature with its original attributes and geometry (the input's CRS), plus the columns
below, most doubtful first; and, with a model, layer ``missing``: envelopes of predicted
objects that no box accounts for (:mod:`jmlnet_geo.audit_missing`; in the box layer's CRS;
pixel coordinates and an ``image`` column for plain images).

Columns of ``boxes``: ``feature`` (0-based row in the input), ``scene`` (file name),
``agreement`` and ``fill`` and ``proposal_extent`` (proposals, 0-1; not computed, fill 0, when
every proposal is the filled box), ``fallback`` (share of the proposals that are the filled
box, their fallback when they find nothing), ``appearance`` and ``appearance_class`` (share of
the box's look-alikes with another class, and the dominant one) and ``size_ratio`` (its side
over its same-class look-alikes'; :mod:`jmlnet_geo.audit_appearance`), ``class_share``,
``other_class``, ``other_share``, ``extent_iou`` (model), ``doubt`` (0-1) and ``reason``
(:mod:`jmlnet_geo.audit`). Features on no scene keep NaN scores and sort last.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio

from jmlnet_geo import audit_missing as missing_objects
from jmlnet_geo.audit import (
    AuditOptions,
    doubt,
    model_scores,
    proposal_agreement,
    proposal_extent,
    proposal_fallback,
    proposal_fill,
)
from jmlnet_geo.audit_appearance import Appearance, believed, scene_appearance
from jmlnet_geo.audit_layers import audit_frame, missing_frame
from jmlnet_geo.audit_missing import Component
from jmlnet_geo.errors import InputFileError, OptionError, display_path
from jmlnet_geo.io.raster import Scene
from jmlnet_geo.io.vector import SceneBoxes

Progress = Callable[[int, int], None]

#: Proposal methods read when none are named: every one found, the filled box left out.
AUDIT_METHODS = ("crf", "grabcut", "detcam", "camcut", "model")


@dataclass
class SceneAudit:
    """The scores of one scene's boxes (in :class:`SceneBoxes` order) and its missing objects."""

    rows: list[dict] = field(default_factory=list)
    missing: list[Component] = field(default_factory=list)
    own_pixels: np.ndarray | None = None  # int64 (n,) each box's predicted object, pixels


def proposal_folder(run: str | os.PathLike[str]) -> Path:
    """The folder holding a run's proposal rasters: ``run/proposals`` or ``run`` itself."""
    path = Path(run)
    if not path.is_dir():
        raise InputFileError(f"{display_path(path)}: --run folder not found; check the path")
    return path / "proposals" if (path / "proposals").is_dir() else path


def cached_methods(
    folder: Path, scene_boxes: Sequence[SceneBoxes], methods: Sequence[str] | None
) -> list[str]:
    """The methods whose rasters exist for every scene (``methods`` must all exist).

    Raises:
        InputFileError: A named method's raster is missing, or none is found at all.
    """
    from jmlnet_geo.proposals.compose import proposal_path

    def have(m: str) -> bool:
        return all(proposal_path(folder, sb.scene, m).exists() for sb in scene_boxes)

    if methods:
        for m in methods:
            if not have(m):
                sb = next(s for s in scene_boxes if not proposal_path(folder, s.scene, m).exists())
                raise InputFileError(
                    f"{display_path(proposal_path(folder, sb.scene, m))}: no {m} proposal; run "
                    f"jmlgeo proposals --methods {m} --out {display_path(folder)}, or drop {m}"
                )
        return list(methods)
    found = [m for m in AUDIT_METHODS if have(m)]
    if not found:
        raise InputFileError(
            f"{display_path(folder)}: no proposal rasters (<scene>.<method>.tif) for these "
            "scenes; give the folder of jmlgeo train or jmlgeo proposals, or omit --run"
        )
    return found


def prediction_paths(folder: Path, scene: Scene) -> tuple[Path, Path | None]:
    """``<stem>.classes.tif`` and, when present, ``<stem>.probabilities.tif`` of a scene.

    Raises:
        InputFileError: No class raster for the scene.
    """
    stem = Path(scene.path).stem
    classes = folder / f"{stem}.classes.tif"
    probs = folder / f"{stem}.probabilities.tif"
    if not classes.exists():
        raise InputFileError(
            f"{display_path(classes)}: no prediction for {scene.name}; run jmlgeo predict "
            f"--probabilities --out {display_path(folder)}, or give --model"
        )
    return classes, probs if probs.exists() else None


def predict_scenes(
    bundle: str | os.PathLike[str],
    scenes: Sequence[Scene],
    folder: Path,
    device: str = "auto",
    progress: Progress | None = None,
) -> Path:
    """Predict every scene with a bundle into ``folder`` (classes and probabilities)."""
    from jmlnet_geo.predict import PredictOptions, Predictor

    predictor = Predictor(bundle, device=device)
    options = PredictOptions(device=device, probabilities=True)
    for i, scene in enumerate(scenes):
        predictor.predict(scene.path, folder, options)
        if progress:
            progress(i + 1, len(scenes))
    return folder


class _Bands:
    """``bands[k]`` reads band k + 1 of a raster once (probabilities of class id k)."""

    def __init__(self, path: Path) -> None:
        self.path, self.cache = path, {}

    def __getitem__(self, k: int) -> np.ndarray:
        if k not in self.cache:
            with rasterio.open(self.path) as ds:
                self.cache[k] = ds.read(k + 1)
        return self.cache[k]


def score_scene(
    sb: SceneBoxes,
    proposals: dict[str, Path],
    prediction: tuple[Path, Path | None] | None,
    options: AuditOptions | None = None,
    progress: Callable[[int], None] | None = None,
    looks: Appearance | None = None,
    min_pixels: np.ndarray | int | None = None,
) -> SceneAudit:
    """Score the boxes of one scene (and find its missing objects with a prediction).

    Args:
        sb: The scene and its boxes (scene pixels).
        proposals: Method -> its proposal raster on the scene's grid.
        prediction: (class raster, probability raster or None) on the scene's grid, or None.
        options: Scoring settings.
        progress: Called with the number of boxes scored so far.
        looks: The appearance opinion of these boxes (:func:`scene_appearance`), or None.
        min_pixels: ``missing``'s size floor per class id (default ``options.min_pixels``,
            else :func:`jmlnet_geo.audit_missing.layer_min_pixels` of this scene's boxes).
    """
    from jmlnet_geo.proposals.agreement import box_masks_from_raster

    options = options or AuditOptions()
    from jmlnet_geo.proposals.compose import pixel_boxes

    boxes = pixel_boxes(sb)
    masks = {m: box_masks_from_raster(p, boxes, sb.class_ids) for m, p in proposals.items()}
    classes = None
    if prediction is not None:
        with rasterio.open(prediction[0]) as ds:
            _check_grid(ds, sb.scene, prediction[0])
            classes = ds.read(1)
    result = SceneAudit()
    for i, (box, class_id) in enumerate(zip(boxes, sb.class_ids, strict=True)):
        own = [masks[m][i] for m in masks]
        fallback = proposal_fallback(own)  # share of filled boxes (a proposal's fallback)
        found = [] if fallback == 1.0 else own  # all fell back: they found nothing
        row = {
            "agreement": proposal_agreement(found),
            "fill": proposal_fill(found) if found else (0.0 if own else math.nan),
            "proposal_extent": proposal_extent(found),
            "fallback": fallback,
        }
        share = log_ratio = math.nan
        if looks is not None:
            share, log_ratio = looks.other_share[i], looks.log_size_ratio[i]
            row |= {"appearance": share, "appearance_class": looks.other_class[i],
                    "size_ratio": math.exp(log_ratio)}  # fmt: skip
        scores = None
        if classes is not None:
            crop, local = _context(classes, box, options.margin)
            scores = model_scores(crop, local, int(class_id))
            row |= {
                "class_share": scores.class_share,
                "other_class": scores.other_class,
                "other_share": scores.other_share,
                "extent_iou": scores.extent_iou,
            }
        row["doubt"], row["reason"] = doubt(scores, row["agreement"], row["fill"],
                                            row["proposal_extent"], options, fallback, share,
                                            log_ratio)  # fmt: skip
        result.rows.append(row)
        if progress:
            progress(i + 1)
    if classes is not None:
        probs = _Bands(prediction[1]) if prediction[1] is not None else None
        if min_pixels is None:
            min_pixels = options.min_pixels or missing_objects.layer_min_pixels([sb])
        scan = missing_objects.scan_objects(classes, probs, boxes, sb.class_ids, min_pixels,
                                            options.min_score, options.max_boxed_share)  # fmt: skip
        result.missing, result.own_pixels = scan.missing, scan.own_pixels
    return result


def _check_grid(ds, scene: Scene, path: Path) -> None:
    if (ds.width, ds.height) != (scene.width, scene.height):
        raise InputFileError(
            f"{display_path(path)}: {ds.width}x{ds.height} is not the grid of {scene.name} "
            f"({scene.width}x{scene.height}); predict this scene again"
        )


def _context(classes: np.ndarray, box: np.ndarray, margin: float):
    """The crop of ``classes`` around a box (``margin`` x its larger side) and the box in it."""
    c0, r0, c1, r1 = (int(v) for v in box)
    pad = int(math.ceil(margin * max(c1 - c0, r1 - r0)))
    y0, x0 = max(0, r0 - pad), max(0, c0 - pad)
    y1, x1 = min(classes.shape[0], r1 + pad), min(classes.shape[1], c1 + pad)
    return classes[y0:y1, x0:x1], (c0 - x0, r0 - y0, c1 - x0, r1 - y0)


@dataclass(frozen=True)
class AuditInputs:
    """What an audit reads.

    Attributes:
        scenes: Scene files.
        boxes: Box layer.
        class_field: Its class column.
        classes: Fixed class order (default: the model's, else the layer's sorted values).
        model: A bundle, or None.
        predictions: A folder of ``jmlgeo predict --probabilities`` outputs, or None.
        run: A run folder with cached proposals, or None (proposals are made here).
        methods: Proposal methods (default: every cached one, or crf and grabcut).
    """

    scenes: tuple[Path, ...]
    boxes: Path
    class_field: str = "class"
    classes: tuple[str, ...] | None = None
    model: Path | None = None
    predictions: Path | None = None
    run: Path | None = None
    methods: tuple[str, ...] | None = None


@dataclass
class AuditResult:
    """The two layers (``missing`` None without a model) and what was used."""

    boxes: gpd.GeoDataFrame
    missing: gpd.GeoDataFrame | None
    methods: list[str]


def run_audit(
    inputs: AuditInputs,
    options: AuditOptions | None = None,
    workers: int = 1,
    device: str = "auto",
    stage_progress=None,
    message: Callable[[str], None] | None = None,
) -> AuditResult:
    """Read, score and collect; nothing is written (``audit_layers.write_audit`` writes).

    Args:
        inputs: Files and choices.
        options: Scoring settings.
        workers: Processes for proposals made here.
        device: Model device.
        stage_progress: ``stage_progress(name, unit)`` gives a ``progress(done, total)``
            context manager per step (:data:`jmlnet_geo.proposals.stage.StageProgress`).
        message: Receives one-line notes.

    Raises:
        OptionError: Bad settings, or both ``model`` and ``predictions``.
        InputFileError, BoxLayerError, CRSMismatchError, NoOverlapError: unusable inputs.
    """
    from jmlnet_geo.io.raster import open_scenes
    from jmlnet_geo.io.vector import boxes_for_scenes, read_boxes
    from jmlnet_geo.proposals.compose import proposal_path
    from jmlnet_geo.proposals.stage import check_request, make_proposals, no_progress

    options = options or AuditOptions()
    say = message or (lambda text: None)
    progress_of = stage_progress or no_progress
    options.check()
    if inputs.model is not None and inputs.predictions is not None:
        raise OptionError("give --model or --predictions, not both")
    methods = list(inputs.methods) if inputs.methods else None
    if methods and inputs.run is None:
        methods = check_request(methods)
    scenes = open_scenes(inputs.scenes)
    layer = read_boxes(inputs.boxes, inputs.class_field, _class_order(inputs, scenes))
    names = layer.classes.names
    scene_boxes = boxes_for_scenes(layer, scenes)
    original = _read_original(inputs.boxes)
    with tempfile.TemporaryDirectory(prefix="jmlgeo-audit-") as tmp:
        if inputs.run is not None:
            folder = proposal_folder(inputs.run)
            methods = cached_methods(folder, scene_boxes, methods)
            say(f"proposals from {display_path(folder)}: {', '.join(methods)}")
        else:
            folder = Path(tmp) / "proposals"
            methods = methods or ["crf", "grabcut"]
            make_proposals(scene_boxes, names, methods, folder, workers=workers,
                           stage_progress=progress_of)  # fmt: skip
        predictions = inputs.predictions
        if inputs.model is not None:
            with progress_of("prediction", "scenes") as report:
                predictions = predict_scenes(
                    inputs.model, scenes, Path(tmp) / "prediction", device, report
                )
        audits = []
        total = sum(len(sb) for sb in scene_boxes)
        with progress_of("appearance", "scenes") as report:
            looks, layer_looks = scene_appearance(
                scene_boxes, options, say, lambda done: report(done, len(scene_boxes))
            )
        floors = options.min_pixels or missing_objects.layer_min_pixels(scene_boxes)
        with progress_of("audit", "boxes") as report:
            done = 0
            for sb, look in zip(scene_boxes, looks, strict=True):
                paths = {m: proposal_path(folder, sb.scene, m) for m in methods}
                pred = prediction_paths(predictions, sb.scene) if predictions else None

                def scored(i: int, d: int = done) -> None:
                    report(d + i, total)

                audits.append(score_scene(sb, paths, pred, options, scored, look, floors))
                done += len(sb)
            report(total, total)
    boxes = audit_frame(original, scene_boxes, audits, names)
    missing = None
    if predictions is not None:
        kept = missing_objects.plausible(
            [a.missing for a in audits], scene_boxes, [a.own_pixels for a in audits],
            options.min_object_share, options.aspect_slack,
        )  # fmt: skip
        for sb, audit, found in zip(scene_boxes, audits, kept, strict=True):  # pieces first
            audit.missing = believed(found, sb.scene, layer_looks, options)
        missing = missing_frame(scene_boxes, audits, names, layer.crs)
    return AuditResult(boxes, missing, methods)


def _class_order(inputs: AuditInputs, scenes: Sequence[Scene]) -> tuple[str, ...] | None:
    """The class order: given, else the model's (bundle card or prediction raster tags)."""
    if inputs.classes:
        return inputs.classes
    if inputs.model is not None:
        from jmlnet_geo.card import read_card

        return tuple(read_card(inputs.model).card["classes"])
    if inputs.predictions is not None and scenes:
        from jmlnet_geo.io.class_raster import read_class_names

        classes, _ = prediction_paths(Path(inputs.predictions), scenes[0])
        with rasterio.open(classes) as ds:
            return read_class_names(ds)
    return None


def _read_original(path: Path) -> gpd.GeoDataFrame:
    """Every feature of the box layer with all its attributes (read_boxes keeps only some)."""
    return gpd.read_file(path)
