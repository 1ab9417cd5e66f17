"""``jmlgeo train``: boxes -> proposals -> segmenter stage 1 -> stage 2 -> bundle, with caching.

Proposals are the classic ones (box, crf, grabcut) and, when asked for, DetCAM and CAMCut: a
Faster R-CNN is then trained on the boxes first (stage ``detector``).

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

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jmlnet_geo import __version__
from jmlnet_geo.config import LOSS_NAMES, TrainConfig, check_head, config_dict
from jmlnet_geo.errors import JmlGeoError, OptionError, OutputError, display_path
from jmlnet_geo.io.raster import Scene, open_scenes
from jmlnet_geo.io.vector import SceneBoxes, boxes_for_scenes, read_boxes
from jmlnet_geo.io.write import atomic_output, output_folder
from jmlnet_geo.proposals.compose import CLASSIC_METHODS, DETECTOR_METHODS, ProposalOptions
from jmlnet_geo.train.fingerprint import file_stamps
from jmlnet_geo.train.optim import check_optimizer

Progress = Callable[[int, int], None]
StageProgress = Callable[[str, str], contextlib.AbstractContextManager[Progress]]

BUNDLE_NAME = "model.safetensors"

# Settings that change what each training stage learns (its fingerprint); how often it validates
# or checkpoints, and how many loader workers it uses, do not.
_STAGE1_KEYS = (
    "preset", "head", "weights", "tile_size", "batch_size", "optimizer", "lr", "momentum",
    "weight_decay", "poly_power", "warmup", "stage1_steps", "stage1_proposal", "seed",
)  # fmt: skip
_STAGE2_KEYS = ("proposals", "loss", "stage2_steps", "stage2_lr_scale")
MASK = "mask"  # the extra raster name of true masks


class RunFolderError(JmlGeoError, ValueError):
    """The run folder holds another run, or an interrupted one, and no --resume/--force."""


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

    Raises:
        RunFolderError: ``run_dir`` holds another or an interrupted run (see module docs).
        OptionError: Unknown proposal or loss names.
        BoxLayerError: Masks with a class the boxes do not have; unusable layers.
    """
    say = message or (lambda text: None)
    progress_of = stage_progress or _no_progress
    if not is_primary_process():  # DDP children stay silent; rank 0 reports
        say, progress_of = (lambda text: None), _no_progress
    seg = config.segmenter
    methods = _check_config(config)
    run = _RunFolder(Path(run_dir), resume=resume, force=force)

    scenes = open_scenes(inputs.scenes)
    layer = read_boxes(inputs.boxes, config.class_field, inputs.classes)
    names = layer.classes.names
    scene_boxes = boxes_for_scenes(layer, scenes)
    if inputs.masks is not None:  # a class the boxes lack fails here, before any work
        read_boxes(inputs.masks, config.class_field, names)
    files = [*inputs.scenes, inputs.boxes]
    base = {"files": file_stamps(files), "classes": list(names)}
    options = ProposalOptions()
    from jmlnet_geo.train.data import scene_normalization

    normalization = scene_normalization(scenes)

    # proposals, each method its own stage: the classic ones, then the detector's DetCAM/CAMCut
    classic = [m for m in methods if m in CLASSIC_METHODS]
    fps = {m: _fingerprint(base, m, asdict(options)) for m in classic}
    missing = [m for m in classic if not run.reusable(_proposal_stage(m), fps[m])]
    if missing:
        with progress_of(f"proposals ({', '.join(missing)})", "boxes") as report:
            from jmlnet_geo.proposals.compose import write_proposals

            write_proposals(
                scene_boxes, names, missing, run.path / "proposals", options, workers, report
            )
        for m in missing:
            run.finish(_proposal_stage(m), fps[m])
    detector_methods = [m for m in methods if m in DETECTOR_METHODS]
    if detector_methods:
        fps |= _detector_proposals(
            detector_methods, base, options, run, scene_boxes, names, normalization, config,
            progress_of, say,
        )  # fmt: skip

    # truth rasters (validation and/or masks)
    truth_files = {}
    for kind, source in (("truth", inputs.truth), (MASK, inputs.masks)):
        if source is None:
            continue
        fp = _fingerprint(base, file_stamps([source]), kind)
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

    mask_scenes = _mask_scenes(scenes, config, inputs.masks is not None)
    if mask_scenes:
        say(f"{len(mask_scenes)} of {len(scenes)} scene(s) train on true masks")

    stage_inputs = dict(
        run=run,
        scene_boxes=scene_boxes,
        names=names,
        normalization=normalization,
        truth=truth_files.get("truth"),
        masks=truth_files.get(MASK),
        mask_scenes=mask_scenes,
        config=config,
        progress_of=progress_of,
        say=say,
    )
    settings = config_dict(config)["segmenter"]
    # stage 1 depends on its own proposal only, so a user trying other stage-2 proposals or
    # losses with --resume (or bench/accuracy.py's rows) reuses it
    masks_fp = fps.get(MASK) if mask_scenes else None
    fp1 = _fingerprint(
        fps.get(seg.stage1_proposal), masks_fp, {k: settings[k] for k in _STAGE1_KEYS},
        sorted(mask_scenes), "stage1",
    )  # fmt: skip
    s1 = dict(proposals=[seg.stage1_proposal], loss="ce", steps=seg.stage1_steps, lr=seg.lr)
    scores1 = _train_stage("stage1", fp1, init=None, **s1, **stage_inputs)
    stage2_fps = [fps.get(m) for m in seg.proposals]
    fp2 = _fingerprint(fp1, stage2_fps, {k: settings[k] for k in _STAGE2_KEYS}, "stage2")
    s2 = dict(
        proposals=list(seg.proposals),
        loss=seg.loss,
        steps=seg.stage2_steps,
        lr=seg.lr * seg.stage2_lr_scale,
    )
    init = run.path / "stage1" / "weights.safetensors"
    scores2 = _train_stage("stage2", fp2, init=init, **s2, **stage_inputs)
    validation = scores2 or scores1

    bundle = run.path / BUNDLE_NAME
    fp = _fingerprint(fp2, "bundle")
    if run.primary and (not run.reusable("bundle", fp) or not bundle.exists()):
        _write_bundle(bundle, run, scenes, scene_boxes, names, normalization, config, validation)
        _training_curve(run.path)
        run.finish("bundle", fp)
    return TrainResult(bundle, validation, run.reused)


# --- stages -----------------------------------------------------------------------------------


def _detector_proposals(
    methods: Sequence[str],
    base: dict[str, Any],
    options: ProposalOptions,
    run: _RunFolder,
    scene_boxes: Sequence[SceneBoxes],
    names: Sequence[str],
    normalization,
    config: TrainConfig,
    progress_of: StageProgress,
    say: Callable[[str], None],
) -> dict[str, str]:
    """Train the detector (stage ``detector``), then write DetCAM/CAMCut into ``proposals/``.

    Both are cached like the other stages (one stage per method). The detector's folder keeps
    its own checkpoint, so an interrupted detector continues from it with ``--resume``.

    Returns:
        The fingerprint of each method's rasters (covering the detector's).
    """
    det = config.detector
    folder = run.path / "detector"
    trained_by = {k: v for k, v in asdict(det).items() if k not in ("tau_low", "tau_high")}
    fp_det = _fingerprint(base, trained_by, config.segmenter.seed, "detector")
    from jmlnet_geo.train.detector import DETECTOR_FILE, train_detector

    detector = folder / DETECTOR_FILE
    if not run.reusable("detector", fp_det) or not detector.exists():
        if run.primary and (folder / "last.ckpt").exists() and not run.resume:
            raise RunFolderError(
                f"{display_path(run.path)}: the detector was interrupted; pass --resume to "
                "continue it or --force to start over"
            )
        with progress_of(f"detector ({det.preset})", "steps") as report:
            detector = train_detector(
                scene_boxes,
                names,
                normalization,
                folder,
                preset=det.preset,
                steps=det.steps,
                batch_size=det.batch_size,
                tile_size=det.tile_size,
                lr=det.lr,
                device=config.device,
                resume=True,  # its own fingerprint decides between reuse, resume and restart
                progress=report,
                seed=config.segmenter.seed,
                message=say,
            )
        run.finish("detector", fp_det)
    fps = {m: _fingerprint(fp_det, m, asdict(options), det.tau_low, det.tau_high) for m in methods}
    missing = [m for m in methods if not run.reusable(_proposal_stage(m), fps[m])]
    if missing:
        from jmlnet_geo.proposals.detector_proposals import write_detector_proposals

        with progress_of(", ".join(missing), "boxes") as report:
            write_detector_proposals(
                scene_boxes,
                names,
                missing,
                run.path / "proposals",
                detector,
                tau_low=det.tau_low,
                tau_high=det.tau_high,
                device=config.device,
                progress=report,
                options=options,
            )
        for m in missing:
            run.finish(_proposal_stage(m), fps[m])
    return fps


def _proposal_stage(method: str) -> str:
    """The stage name of one proposal method in ``run.json``."""
    return f"proposals:{method}"


def _train_stage(
    name: str,
    fp: str,
    init: Path | None,
    proposals: Sequence[str],
    loss: str,
    steps: int,
    lr: float,
    run: _RunFolder,
    scene_boxes: Sequence[SceneBoxes],
    names: Sequence[str],
    normalization,
    truth: dict[str, Path] | None,
    masks: dict[str, Path] | None,
    mask_scenes: set[str],
    config: TrainConfig,
    progress_of: StageProgress,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Train one stage (or reuse it); returns its last validation scores."""
    folder = run.path / name
    weights = folder / "weights.safetensors"
    checkpoint = folder / "last.ckpt"
    if not run.primary:  # a DDP child: reuse what rank 0 finished, else join the stage's fit
        if run.finished(name, fp):
            return run.state["stages"][name].get("validation", {})
    elif run.reusable(name, fp) and weights.exists():
        return run.state["stages"][name].get("validation", {})
    else:
        if steps <= 0:
            raise OptionError(f"{name}: give it at least one step")
        # a checkpoint continues only the same stage with the same settings; one left by a run
        # with other settings (or by a version that did not record it) is not resumed
        resumable = checkpoint.exists() and run.interrupted(name, fp)
        if resumable and not run.resume:
            raise RunFolderError(
                f"{display_path(run.path)}: {name} was interrupted; pass --resume to continue "
                "it or --force to start over"
            )
        if not resumable:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True, exist_ok=True)
        run.start(name, fp)

    import lightning as L
    import torch
    from lightning.pytorch.callbacks import Callback, ModelCheckpoint

    from jmlnet_geo.devices import resolve_device
    from jmlnet_geo.models.backbones import describe_weights
    from jmlnet_geo.models.segmenter import build_segmenter
    from jmlnet_geo.train.data import grid_loader, tiles_dataset, train_loader
    from jmlnet_geo.train.segmenter import SegmenterTask

    seg = config.segmenter
    _quiet_lightning()
    L.seed_everything(seg.seed, workers=True, verbose=False)
    extras = []
    for sb in scene_boxes:
        stem = Path(sb.scene.path).stem
        layers = {p: str(run.path / "proposals" / f"{stem}.{p}.tif") for p in proposals}
        if sb.scene.path in mask_scenes and masks is not None:
            layers = {p: str(masks[sb.scene.path]) for p in proposals}
        extras.append(layers)
    data = tiles_dataset(scene_boxes, extras)
    loaders = [
        train_loader(data, seg.tile_size, steps, seg.batch_size, seg.loader_workers, seg.seed)
    ]
    val_every = None
    if truth is not None:
        val_data = tiles_dataset(
            scene_boxes, [{"truth": str(truth[sb.scene.path])} for sb in scene_boxes]
        )
        loaders.append(grid_loader(val_data, seg.tile_size, seg.batch_size, seg.loader_workers))
        val_every = min(seg.val_every, steps)

    weights_arg = None if init is not None else seg.weights
    bands = scene_boxes[0].scene.count
    model = build_segmenter(seg.preset, len(names) + 1, bands, weights_arg, head=seg.head)
    if init is not None:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(init))
    elif not checkpoint.exists():
        say(f"{name}: {describe_weights(model)}")
    task = SegmenterTask(
        model,
        len(names) + 1,
        normalization,
        proposals,
        loss,
        steps,
        lr,
        optimizer=seg.optimizer,
        momentum=seg.momentum,
        weight_decay=seg.weight_decay,
        poly_power=seg.poly_power,
        warmup=seg.warmup,
        seed=seg.seed,
    )

    class _Report(Callback):
        def __init__(self, report: Progress) -> None:
            self.report = report

        def on_train_batch_end(self, trainer, *args: object) -> None:
            self.report(trainer.global_step, steps)

    accelerator = resolve_device(config.device).type
    precision = config.precision
    if precision == "auto":
        precision = "16-mixed" if accelerator == "cuda" else "32-true"
    loggers = [L.pytorch.loggers.CSVLogger(run.path / "logs", name=name, version="")]
    with contextlib.suppress(ModuleNotFoundError, ImportError):
        loggers.append(
            L.pytorch.loggers.TensorBoardLogger(run.path / "logs", name=name, version="tb")
        )
    with progress_of(f"segmenter {name} ({loss})", "steps") as report:
        trainer = L.Trainer(
            max_steps=steps,
            max_epochs=1,
            accelerator=accelerator,
            devices=config.devices,
            strategy=config.strategy,
            precision=precision,
            logger=loggers,
            callbacks=[
                ModelCheckpoint(folder, save_last=True, every_n_train_steps=seg.checkpoint_every),
                _Report(report),
            ],
            val_check_interval=val_every,
            limit_val_batches=None if val_every else 0,
            num_sanity_val_steps=0,
            enable_progress_bar=False,
            enable_model_summary=False,
            log_every_n_steps=1,
            use_distributed_sampler=False,
            deterministic=False,
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*not resumable.*")
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")
            warnings.filterwarnings("ignore", message=".*no `val_dataloader`.*")
            trainer.fit(
                task,
                train_dataloaders=loaders[0],
                val_dataloaders=loaders[1] if len(loaders) > 1 else None,
                ckpt_path=str(checkpoint) if checkpoint.exists() else None,
            )
    if not run.primary:  # rank 0 writes the weights; wait for them before the next stage
        run.wait_for(name, fp)
        return run.state["stages"][name].get("validation", {})
    validation = {}
    if "val_miou" in trainer.callback_metrics:
        validation = {"miou": float(trainer.callback_metrics["val_miou"])}
    from safetensors.torch import save_file

    with atomic_output(weights) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, tmp)
    torch.cuda.empty_cache() if accelerator == "cuda" else None
    run.finish(name, fp, validation=validation)
    return validation


def _write_bundle(path, run, scenes, scene_boxes, names, normalization, config, validation):
    import platform

    import torch
    import torchvision
    from safetensors.torch import load_file

    from jmlnet_geo.bundle import ModelCard, save_bundle
    from jmlnet_geo.io.class_raster import class_colours

    first = scenes[0]
    counts: dict[str, int] = {}
    for sb in scene_boxes:
        for class_id, n in zip(*np.unique(sb.class_ids, return_counts=True), strict=True):
            counts[names[class_id - 1]] = counts.get(names[class_id - 1], 0) + int(n)
    card = ModelCard(
        classes=list(names),
        colours=[list(c) for c in class_colours(len(names))],
        bands=first.count,
        band_names=list(first.band_names),
        normalization={"mean": list(normalization.mean), "std": list(normalization.std)},
        tile_size=config.segmenter.tile_size,
        resolution=list(first.res) if first.georeferenced else None,
        crs_units=(first.crs.linear_units if first.crs is not None else None),
        architecture={
            "segmenter": config.segmenter.head,
            "preset": config.segmenter.preset,
            "num_classes": len(names) + 1,
            "in_channels": first.count,
        },
        config=config_dict(config),
        versions={
            "jmlnet_geo": __version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "python": platform.python_version(),
        },
        training_data={
            "scenes": [os.path.basename(s.path) for s in scenes],
            "boxes_per_class": counts,
            "pixels": int(sum(s.width * s.height for s in scenes)),
        },
        validation=validation,
    )
    save_bundle(path, load_file(run.path / "stage2" / "weights.safetensors"), card)


def _training_curve(run_path: Path) -> None:
    """Plot train loss and validation mIoU of both stages to ``training_curve.png``."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_miou) = plt.subplots(1, 2, figsize=(10, 4))
    offset = 0
    for stage in ("stage1", "stage2"):
        metrics = run_path / "logs" / stage / "metrics.csv"
        if not metrics.exists():
            continue
        with open(metrics, newline="") as f:
            rows = list(csv.DictReader(f))
        loss = [
            (int(r["step"]) + offset, float(r["train_loss"])) for r in rows if r.get("train_loss")
        ]
        miou = [(int(r["step"]) + offset, float(r["val_miou"])) for r in rows if r.get("val_miou")]
        if loss:
            ax_loss.plot(*zip(*loss, strict=True), label=stage, linewidth=0.8)
        if miou:
            ax_miou.plot(*zip(*miou, strict=True), marker="o", label=stage)
        offset = max([offset] + [s for s, _ in loss]) + 1
    ax_loss.set(xlabel="step", ylabel="train loss", title="training loss")
    ax_miou.set(xlabel="step", ylabel="mIoU", title="validation mIoU")
    for ax in (ax_loss, ax_miou):
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    with atomic_output(run_path / "training_curve.png") as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


# --- the run folder ---------------------------------------------------------------------------


class _RunFolder:
    """``run.json`` and the rules for reusing, resuming or refusing a run folder."""

    def __init__(self, path: Path, resume: bool, force: bool) -> None:
        self.path, self.resume, self.reused = path, resume, []
        state_file = path / "run.json"
        if path.exists() and not path.is_dir():
            raise OutputError(f"{display_path(path)}: is a file; give a folder for the run")
        if state_file.exists() and force and is_primary_process():
            shutil.rmtree(path)
        elif path.exists() and any(path.iterdir()) and not state_file.exists():
            raise RunFolderError(
                f"{display_path(path)}: not empty and not a jmlgeo run folder; give a new folder"
            )
        output_folder(path, "the run")
        self.primary = is_primary_process()
        self.state = {"stages": {}}
        if state_file.exists():
            self.state = json.loads(state_file.read_text())

    def finished(self, stage: str, fp: str) -> bool:
        """Whether ``run.json`` on disk (re-read) records ``stage`` done with this fingerprint."""
        state_file = self.path / "run.json"
        if state_file.exists():
            self.state = json.loads(state_file.read_text())
        entry = self.state["stages"].get(stage, {})
        return entry.get("fingerprint") == fp and bool(entry.get("done"))

    def wait_for(self, stage: str, fp: str, timeout: float = 3600.0) -> None:
        """Block (a DDP child) until rank 0 records ``stage`` as done."""
        deadline = time.monotonic() + timeout
        while not self.finished(stage, fp):
            if time.monotonic() > deadline:
                raise RunFolderError(f"{display_path(self.path)}: rank 0 never finished {stage}")
            time.sleep(0.5)

    def reusable(self, stage: str, fp: str) -> bool:
        """Whether ``stage`` finished with this fingerprint; a mismatch fails unless resuming.

        In a DDP child, waits until rank 0 finished the stage and returns True.
        """
        if not self.primary:
            self.wait_for(stage, fp)
            return True
        entry = self.state["stages"].get(stage)
        if entry is None:
            return False
        if entry.get("fingerprint") == fp:
            if entry.get("done"):
                self.reused.append(stage)
                return True
            return False  # started with these settings and interrupted: the stage may resume
        if not self.resume:
            raise RunFolderError(
                f"{display_path(self.path)}: holds a run with other inputs or settings "
                f"(stage {stage} differs); pass --resume to reuse what still matches, "
                "--force to start over, or another --out"
            )
        self.state["stages"].pop(stage)
        return False

    def interrupted(self, stage: str, fp: str) -> bool:
        """Whether ``stage`` was started with this fingerprint and did not finish."""
        entry = self.state["stages"].get(stage, {})
        return entry.get("fingerprint") == fp and not entry.get("done")

    def start(self, stage: str, fp: str) -> None:
        """Record that ``stage`` starts with this fingerprint (what a later resume compares)."""
        self._record(stage, {"fingerprint": fp, "done": False})

    def finish(self, stage: str, fp: str, **extra: Any) -> None:
        """Record a finished stage."""
        self._record(stage, {"fingerprint": fp, "done": True, **extra})

    def _record(self, stage: str, entry: dict[str, Any]) -> None:
        self.state["stages"][stage] = entry
        with atomic_output(self.path / "run.json") as tmp:
            Path(tmp).write_text(json.dumps(self.state, indent=2))


# --- helpers ----------------------------------------------------------------------------------


def _check_config(config: TrainConfig) -> list[str]:
    """The proposal methods the run needs; unknown proposal or loss names fail."""
    seg = config.segmenter
    known = (*CLASSIC_METHODS, *DETECTOR_METHODS, MASK)
    wanted = [seg.stage1_proposal, *seg.proposals]
    unknown = [p for p in wanted if p not in known]
    if unknown:
        raise OptionError(f"unknown proposal '{unknown[0]}'; choose from {', '.join(known[:-1])}")
    check_head(seg.preset, seg.head)
    check_optimizer(seg.optimizer)
    if seg.loss not in LOSS_NAMES:
        raise OptionError(f"unknown loss '{seg.loss}'; choose from {', '.join(LOSS_NAMES)}")
    if any(p in DETECTOR_METHODS for p in wanted):
        from jmlnet_geo.proposals.detcam import check_thresholds

        check_thresholds(config.detector.tau_low, config.detector.tau_high)
        if config.detector.steps <= 0:
            raise OptionError(f"--detector-steps {config.detector.steps}: give at least 1")
    if not 0.0 <= config.masks_fraction <= 1.0:
        raise OptionError(f"--masks-fraction {config.masks_fraction}: give a value in 0..1")
    return [m for m in dict.fromkeys(wanted) if m != MASK]


def _mask_scenes(scenes: Sequence[Scene], config: TrainConfig, have_masks: bool) -> set[str]:
    """Scenes trained on true masks: a seeded ``masks_fraction`` of them (all when 1)."""
    if not have_masks:
        if config.masks_fraction > 0:
            raise OptionError("--masks-fraction needs --masks (the true masks)")
        return set()
    fraction = config.masks_fraction if config.masks_fraction > 0 else 1.0
    count = round(fraction * len(scenes))
    if count == 0:
        raise OptionError(
            f"--masks-fraction {fraction:g} of {len(scenes)} scene(s) rounds to no scene; "
            "give more scenes (masks are mixed in per scene) or a larger fraction"
        )
    order = np.random.default_rng(config.segmenter.seed).permutation(len(scenes))
    return {scenes[i].path for i in sorted(order[:count])}


def _fingerprint(*parts: object) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def is_primary_process() -> bool:
    """False in the extra processes of distributed training (they must not write)."""
    for variable in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"):
        if int(os.environ.get(variable, "0") or 0) != 0:
            return False
    return True


def _quiet_lightning() -> None:
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def _no_progress(name: str, unit: str) -> Iterator[Progress]:
    yield lambda done, total: None
