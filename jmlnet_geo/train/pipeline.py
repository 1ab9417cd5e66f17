"""``jmlgeo train``: boxes -> proposals -> segmenter stage 1 -> stage 2 -> bundle, with caching.

Proposals are the classic ones (box, crf, grabcut) and, when asked for, DetCAM and CAMCut: a
Faster R-CNN is then trained on the boxes first (stage ``detector``). With true masks
(``--masks``) a seeded share of the scenes (``masks_fraction``, default all) learns from them
instead; a run with every scene on masks (full supervision) computes no proposal and no
detector, and both stages learn from the masks alone.

A run folder holds every stage's outputs and ``run.json``, which records for each stage a
fingerprint of its inputs (files by content, see ``fingerprint``) and settings. A stage whose
fingerprint is unchanged is reused; an interrupted training stage resumes from its last
checkpoint with ``resume=True``. A folder holding a run of other settings is refused unless
``resume`` (reuse what still matches, redo the rest) or ``force`` (start over) is given.

Layout of a run folder::

    run.json                      stages, fingerprints, configuration
    proposals/<scene>.<m>.tif     proposal rasters (class rasters on each scene's grid)
    detector/                     detector.safetensors, its last.ckpt and logs (detcam/camcut)
    truth/<scene>.truth.tif       rasterised truth (validation, --masks)
    stage1/ stage2/               last.ckpt (resumable), weights.safetensors when finished
    logs/stage1/ logs/stage2/     CSV (and TensorBoard when installed) logs
    model.safetensors             the bundle
    training_curve.png            loss and validation mIoU per step
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from jmlnet_geo.config import (
    AUTO,
    DETECTOR_OPTIONAL_KEYS,
    DETECTOR_TRAINING_KEYS,
    MODEL_PROPOSAL,
    TrainConfig,
    config_dict,
)
from jmlnet_geo.errors import display_path
from jmlnet_geo.io.raster import open_scenes
from jmlnet_geo.io.vector import SceneBoxes, boxes_for_scenes, read_boxes
from jmlnet_geo.normalization import Normalization, scene_normalization
from jmlnet_geo.proposals.options import CLASSIC_METHODS, DETECTOR_METHODS, ProposalOptions
from jmlnet_geo.proposals.stage import (
    DetectorProposalOptions,
    SceneMap,
    StageProgress,
    make_proposals,
    no_progress,
)
from jmlnet_geo.train.checks import (
    MASK,
    check_config,
    mask_scenes,
    scenes_with_pixels,
    stage_labels,
    supervision,
)
from jmlnet_geo.train.doubtful import BY_MODEL, drop_doubtful
from jmlnet_geo.train.fingerprint import boxes_digest, file_stamps, fingerprint
from jmlnet_geo.train.fit import CHECKPOINT
from jmlnet_geo.train.run_folder import RunFolder, RunFolderError, is_primary_process
from jmlnet_geo.train.self_training import (
    ModelProposalInputs,
    agreement_voters,
    choose_stage1,
    model_proposal,
    model_proposal_fingerprint,
    predict_stage,
)
from jmlnet_geo.train.stage import WEIGHTS, StageInputs, stage_summary, train_stage

BUNDLE_NAME = "model.safetensors"

# Settings that change what each training stage learns (its fingerprint); how often it validates
# or checkpoints, and how many loader workers it uses, do not.
_STAGE1_KEYS = (
    "preset", "head", "weights", "tile_size", "batch_size", "optimizer", "lr", "momentum",
    "weight_decay", "poly_power", "warmup", "stage1_steps", "stage1_proposal", "seed",
)  # fmt: skip
_STAGE2_KEYS = ("proposals", "loss", "stage2_steps", "stage2_lr_scale")
# Later options enter a fingerprint only when not at their default (the value runs made before
# them had), so those runs stay reusable.
_OPTIONAL_DEFAULTS = {
    "box_tiles": 0.0,
    "box_loss_weight": 0.0,
    "box_pairwise_weight": 1.0,
    "box_margin": 0.5,
    "box_skip_neighbours": False,
    "box_outside_weight": 1.0,
    "box_outside_hard": False,
    "drop_doubtful": 0.0,
}


@dataclass(frozen=True)
class TrainInputs:
    """The files a training run reads.

    Attributes:
        scenes: Scenes to train on.
        boxes: Box layer.
        classes: Fixed class order (default: the layer's sorted values).
        truth: Truth polygons or class raster for validation mIoU during training.
        masks: True masks (polygons) for full or semi supervision (``masks_fraction``).
    """

    scenes: tuple[Path, ...]
    boxes: Path
    classes: tuple[str, ...] | None = None
    truth: Path | None = None
    masks: Path | None = None


@dataclass
class TrainResult:
    """What a run produced."""

    bundle: Path
    validation: dict[str, Any]
    reused: list[str]


def train(
    inputs: TrainInputs,
    config: TrainConfig,
    run_dir: str | os.PathLike[str],
    resume: bool = False,
    force: bool = False,
    workers: int = 1,
    stage_progress: StageProgress | None = None,
    message: Callable[[str], None] | None = None,
    scene_map: SceneMap | None = None,
) -> TrainResult:
    """Run the whole pipeline and write the bundle ``run_dir/model.safetensors``.

    Args:
        inputs: Scenes, boxes and optional truth/masks.
        config: Settings (a preset with overrides).
        run_dir: The run folder (created when missing).
        resume: Reuse finished stages whose fingerprint matches and continue interrupted ones.
        force: Delete a previous run in ``run_dir`` and start over.
        workers: Processes for the per-box proposals.
        stage_progress: ``stage_progress(name, unit)`` gives a ``progress(done, total)``
            context manager per stage.
        message: Receives one-line notes for the user.
        scene_map: Runs the proposals one scene per task elsewhere (``--cluster``, see
            :func:`jmlnet_geo.proposals.stage.make_proposals`); the rasters are the same.

    Raises:
        RunFolderError: ``run_dir`` holds another or an interrupted run (see module docs).
        OptionError: Unknown proposal or loss names.
        BoxLayerError: Masks with a class the boxes do not have; unusable layers.
    """
    say = message or (lambda text: None)
    progress_of = stage_progress or no_progress
    if not is_primary_process():  # DDP children stay silent; rank 0 reports
        say, progress_of = (lambda text: None), no_progress
    seg = config.segmenter
    methods = check_config(config)
    if seg.stage1_proposal == AUTO:  # the agreement reads every voter's rasters
        methods = list(dict.fromkeys([*methods, *agreement_voters(seg.proposals)]))
    run = RunFolder(Path(run_dir), resume=resume, force=force)

    scenes, statistics = scenes_with_pixels(open_scenes(inputs.scenes))
    layer = read_boxes(inputs.boxes, config.class_field, inputs.classes)
    names = layer.classes.names
    scene_boxes = boxes_for_scenes(layer, scenes)
    if inputs.masks is not None:  # a class the boxes lack fails here, before any work
        read_boxes(inputs.masks, config.class_field, names)
    masked = mask_scenes(scenes, config, inputs.masks is not None)
    full = supervision(masked, scenes) == "full"
    if full:  # every scene learns from the masks: no proposal, no detector
        methods = []
    base = {"files": file_stamps(inputs.scenes), "boxes": boxes_digest(scene_boxes),
            "classes": list(names)}  # fmt: skip
    options = ProposalOptions()
    normalization = scene_normalization(scenes, statistics)

    # proposals, each method its own stage: the classic ones, then the detector's DetCAM/CAMCut
    det = config.detector
    fps = {m: fingerprint(base, m, asdict(options)) for m in methods if m in CLASSIC_METHODS}
    detector = None
    if any(m in DETECTOR_METHODS for m in methods):
        fp_det = fingerprint(base, _trained_by(config), config.segmenter.seed, "detector")
        for m in (m for m in methods if m in DETECTOR_METHODS):
            low = [det.camcut_low] if m == "camcut" and det.camcut_low != "sure" else []
            fps[m] = fingerprint(fp_det, m, asdict(options), det.tau_low, det.tau_high, *low)
        detector = _DetectorStage(
            run, fp_det, scene_boxes, names, normalization, config, progress_of, say
        )
    if methods:
        make_proposals(
            scene_boxes, names, methods, run.path / "proposals", options, detector=detector,
            detector_options=DetectorProposalOptions(
                det.tau_low, det.tau_high, device=config.device, camcut_low=det.camcut_low
            ),
            workers=workers, cache=_StageCache(run, fps), stage_progress=progress_of,
            scene_map=scene_map,
        )  # fmt: skip

    # truth rasters (validation and/or masks)
    truth_files = {}
    for kind, source in (("truth", inputs.truth), (MASK, inputs.masks)):
        if source is None:
            continue
        fp = fingerprint(base, file_stamps([source]), kind)
        folder = run.path / kind
        paths = {s.path: folder / f"{Path(s.path).stem}.{kind}.tif" for s in scenes}
        if not run.reusable(kind, fp):
            from jmlnet_geo.evaluate import write_truth_raster

            folder.mkdir(parents=True, exist_ok=True)
            for s in scenes:
                write_truth_raster(paths[s.path], s, source, config.class_field, names)
            run.finish(kind, fp)
        truth_files[kind] = paths
        if kind == MASK:
            fps[MASK] = fp  # for the stages that train on the masks

    if masked:
        say(f"{len(masked)} of {len(scenes)} scene(s) train on true masks")

    train_boxes, ignore, drop_fp, dropped = scene_boxes, None, None, None
    if seg.drop_doubtful > 0:
        train_boxes, ignore, drop_fp, dropped = drop_doubtful(
            run, scene_boxes, methods, [fps[m] for m in methods], masked, inputs.boxes,
            seg.drop_doubtful, say,
        )  # fmt: skip
    stage_inputs = StageInputs(
        run, train_boxes, names, normalization, truth_files.get("truth"), truth_files.get(MASK),
        masked, config, progress_of, say, ignore,
    )  # fmt: skip
    settings = config_dict(config)["segmenter"]
    stage1, choice = (MASK if full else seg.stage1_proposal), None
    if stage1 == AUTO:
        choice = choose_stage1(scene_boxes, run.path / "proposals", seg.proposals, say).as_dict()
        stage1 = choice["proposal"]
        if run.primary:
            run.finish("stage1_choice", fingerprint(*(fps[m] for m in sorted(fps))), **choice)
    # stage 1 depends on its own proposal only, so a user trying other stage-2 proposals or
    # losses with --resume (or bench/accuracy.py's rows) reuses it
    masks_fp = fps.get(MASK) if masked else None
    stage1_settings = {k: settings[k] for k in _STAGE1_KEYS} | {"stage1_proposal": stage1}
    stage1_settings |= {k: v for k, v in settings.items() if _OPTIONAL_DEFAULTS.get(k, v) != v}
    meaningless = ()  # settings of a term that is off
    if not seg.box_loss_weight:
        meaningless = ("box_pairwise_weight", "box_margin", "box_skip_neighbours",
                       "box_outside_weight", "box_outside_hard")  # fmt: skip
    elif not seg.box_outside_weight:
        meaningless = ("box_outside_hard",)
    for key in meaningless:
        stage1_settings.pop(key, None)
    fp1 = fingerprint(fps.get(stage1), masks_fp, stage1_settings, sorted(masked), "stage1",
                      *([drop_fp] if drop_fp else []))  # fmt: skip
    s1 = dict(proposals=[stage1], loss="ce", steps=seg.stage1_steps, lr=seg.lr)
    records = []

    def trained(name: str, fp: str, init: Path | None, **stage: Any) -> dict[str, Any]:
        labels = stage_labels(stage["proposals"], scenes, masked)
        scores = train_stage(name, fp, init, **stage, inputs=stage_inputs, labels=labels)
        records.append(stage_summary(run, name, labels, stage, name in run.reused))
        return scores

    scores1, first = trained("stage1", fp1, None, **s1), "stage1"
    if seg.drop_doubtful > 0 and seg.drop_doubtful_by == BY_MODEL:  # choose again with stage 1,
        first_dropped = dropped["dropped"]  # then train stage 1 again from scratch without them
        stage1_model = ModelProposalInputs(run, scenes, scene_boxes, names, normalization, config,
                                           progress_of)  # fmt: skip
        train_boxes, ignore, drop_fp2, dropped = drop_doubtful(
            run, scene_boxes, methods, [fps[m] for m in methods], masked, inputs.boxes,
            seg.drop_doubtful, say,
            (fp1, lambda each: predict_stage("stage1", stage1_model, "audit with stage 1", each)),
        )  # fmt: skip
        dropped["stage1_dropped"] = first_dropped
        stage_inputs = replace(stage_inputs, scene_boxes=train_boxes, ignore=ignore)
        first, fp1 = "stage1_again", fingerprint(fp1, drop_fp2, "stage1_again")
        scores1 = trained(first, fp1, None, **s1)
    s2 = dict(
        proposals=[MASK] if full else list(seg.proposals),
        loss=seg.loss,
        steps=seg.stage2_steps,
        lr=seg.lr * seg.stage2_lr_scale,
    )
    model_inputs = ModelProposalInputs(
        run, scenes, train_boxes, names, normalization, config, progress_of
    )
    last, last_fp, validation = first, fp1, scores1
    for round_ in range(1, seg.rounds + 1):  # round 1 is the paper's stage 2
        self_trained = MODEL_PROPOSAL in s2["proposals"]  # from the stage before this round
        if self_trained:
            fps[MODEL_PROPOSAL] = model_proposal_fingerprint(last_fp)
        stage2_fps = [fps.get(m) for m in s2["proposals"]]
        extra = [] if round_ == 1 else [round_]
        fp2 = fingerprint(last_fp, stage2_fps, {k: settings[k] for k in _STAGE2_KEYS}, "stage2",
                          *extra)  # fmt: skip
        name = "stage2" if round_ == 1 else f"stage2_round{round_}"
        if self_trained and not (run.finished(name, fp2) and (run.path / name / WEIGHTS).exists()):
            model_proposal(last, last_fp, model_inputs)
        init = run.path / last / WEIGHTS
        scores2 = trained(name, fp2, init, **s2)
        last, last_fp, validation = name, fp2, scores2 or validation

    bundle = run.path / BUNDLE_NAME
    fp = fingerprint(last_fp, "bundle")
    if run.primary and (not run.reusable("bundle", fp) or not bundle.exists()):
        from jmlnet_geo.train.card import RunRecord, write_bundle
        from jmlnet_geo.train.curve import training_curve

        weights = run.path / last / WEIGHTS
        record = RunRecord(inputs, supervision(masked, scenes), masked, records, choice, dropped)
        write_bundle(
            bundle, weights, scenes, scene_boxes, names, normalization, config, validation, record
        )
        training_curve(run.path, (first, "stage2"))
        run.finish("bundle", fp)
    return TrainResult(bundle, validation, run.reused)


# --- the proposal stages ----------------------------------------------------------------------


def proposal_stage(method: str) -> str:
    """The stage name of one proposal method in ``run.json``."""
    return f"proposals:{method}"


def _trained_by(config: TrainConfig) -> dict[str, Any]:
    """The detector settings that change what it learns (the seed is added separately)."""
    values = asdict(config.detector)
    trained = {k: values[k] for k in DETECTOR_TRAINING_KEYS}
    return trained | {k: values[k] for k in DETECTOR_OPTIONAL_KEYS if values[k]}


class _StageCache:
    """Proposal methods as stages of the run folder (a ``proposals.stage.ProposalCache``)."""

    def __init__(self, run: RunFolder, fps: Mapping[str, str]) -> None:
        self.run, self.fps = run, fps

    def fresh(self, method: str) -> bool:
        """Whether the method's stage finished with its fingerprint (see ``RunFolder``)."""
        return self.run.reusable(proposal_stage(method), self.fps[method])

    def record(self, method: str) -> None:
        """Record the method's stage as finished."""
        self.run.finish(proposal_stage(method), self.fps[method])


@dataclass
class _DetectorStage:
    """Stage ``detector``: train the detector into ``detector/`` (or reuse it); its file.

    Cached like the other stages; the detector's folder keeps its own checkpoint, so an
    interrupted detector continues from it with ``--resume``.
    """

    run: RunFolder
    fp: str
    scene_boxes: Sequence[SceneBoxes]
    names: Sequence[str]
    normalization: Normalization
    config: TrainConfig
    progress_of: StageProgress
    say: Callable[[str], None]

    def __call__(self) -> Path:
        """The detector file, trained first unless the stage is reusable."""
        from jmlnet_geo.detector_file import DETECTOR_FILE
        from jmlnet_geo.train.detector import train_detector

        run, det = self.run, self.config.detector
        folder = run.path / "detector"
        detector = folder / DETECTOR_FILE
        if run.reusable("detector", self.fp) and detector.exists():
            return detector
        if run.primary and (folder / CHECKPOINT).exists() and not run.resume:
            raise RunFolderError(
                f"{display_path(run.path)}: the detector was interrupted; pass --resume to "
                "continue it or --force to start over"
            )
        with self.progress_of(f"detector ({det.preset})", "steps") as report:
            detector = train_detector(
                self.scene_boxes, self.names, self.normalization, folder, det,
                seed=self.config.segmenter.seed, device=self.config.device,
                resume=True,  # its own fingerprint decides between reuse, resume and restart
                progress=report, message=self.say,
            )  # fmt: skip
        run.finish("detector", self.fp)
        return detector
