"""One segmenter training stage of ``jmlgeo train`` (stage 1 or 2), cached in the run folder.

A stage trains :class:`jmlnet_geo.train.segmenter.SegmenterTask` on the proposal rasters of the
run folder (``proposals/<stem>.<method>.tif``, or the true masks for the scenes that train on
them) and writes ``<stage>/weights.safetensors`` (a plain safetensors state dict) when done. A
finished stage with the same fingerprint is reused; an interrupted one resumes from its
``last.ckpt`` with ``resume``. Logs go to ``logs/<stage>/``.

A finished stage's ``run.json`` entry holds its ``record`` (:func:`stage_record`): what it learnt
from, its loss, steps, wall time, final loss, device and threads; the bundle's card lists them.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jmlnet_geo.config import TrainConfig
from jmlnet_geo.errors import OptionError, display_path
from jmlnet_geo.io.vector import SceneBoxes
from jmlnet_geo.io.write import save_safetensors
from jmlnet_geo.normalization import Normalization
from jmlnet_geo.train.fit import CHECKPOINT
from jmlnet_geo.train.run_folder import RunFolder, RunFolderError
from jmlnet_geo.vocabulary import StageProgress

if TYPE_CHECKING:
    from jmlnet_geo.tiling import IgnoreBoxes

#: File name of a finished stage's weights in its folder.
WEIGHTS = "weights.safetensors"


@dataclass
class StageInputs:
    """What every segmenter stage of a run reads.

    Attributes:
        run: The run folder.
        scene_boxes: Each scene with its boxes.
        names: Class names of ids 1..K.
        normalization: Band standardisation of the scenes.
        truth: Scene path -> rasterised truth (validation), or None.
        masks: Scene path -> rasterised true masks, or None.
        mask_scenes: Paths of the scenes that train on the true masks.
        config: The run's settings.
        progress_of: ``progress_of(name, unit)`` gives a ``progress(done, total)`` context.
        say: Receives one-line notes for the user.
        ignore: Per scene (``scene_boxes`` order), the dropped boxes painted 255 in its
            training labels (``--drop-doubtful``, :mod:`jmlnet_geo.train.doubtful`), or None.
    """

    run: RunFolder
    scene_boxes: Sequence[SceneBoxes]
    names: Sequence[str]
    normalization: Normalization
    truth: dict[str, Path] | None
    masks: dict[str, Path] | None
    mask_scenes: set[str]
    config: TrainConfig
    progress_of: StageProgress
    say: Callable[[str], None]
    ignore: Sequence[IgnoreBoxes | None] | None = None


def train_stage(
    name: str,
    fp: str,
    init: Path | None,
    proposals: Sequence[str],
    loss: str,
    steps: int,
    lr: float,
    inputs: StageInputs,
    labels: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Train one stage (or reuse it).

    Args:
        name: ``stage1``, ``stage1_again`` or ``stage2`` (its folder and ``run.json`` entry).
        fp: The stage's fingerprint.
        init: Weights to start from (stage 1's), or None for the preset's initial weights.
        proposals: Names of the Z proposal rasters it learns from.
        loss: ``ce``, ``ma``, ``mm`` or ``bmm``.
        steps: Optimiser steps.
        lr: Peak learning rate.
        inputs: The run's data and settings.
        labels: What it actually learns from, for its record (default: ``proposals``).

    Returns:
        Its last validation scores (``{"miou": float}``, empty without truth).

    Raises:
        OptionError: ``steps`` < 1.
        RunFolderError: An interrupted stage and no ``resume``.
    """
    run = inputs.run
    folder = run.path / name
    weights = folder / WEIGHTS
    checkpoint = folder / CHECKPOINT
    if not run.primary:  # a DDP child: reuse what rank 0 finished, else join the stage's fit
        if run.finished(name, fp):
            return run.entry(name).get("validation", {})
    elif run.reusable(name, fp) and weights.exists():
        return run.entry(name).get("validation", {})
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
    started = time.perf_counter()
    trainer, model, accelerator = _fit(name, init, proposals, loss, steps, lr, inputs)
    wall = time.perf_counter() - started
    if not run.primary:  # rank 0 writes the weights; wait for them before the next stage
        run.wait_for(name, fp)
        return run.entry(name).get("validation", {})
    validation = {}
    if "val_miou" in trainer.callback_metrics:
        validation = {"miou": float(trainer.callback_metrics["val_miou"])}
    save_safetensors(
        weights, {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    )
    if accelerator == "cuda":
        import torch

        torch.cuda.empty_cache()
    record = stage_record(
        name, labels or proposals, loss, lr, trainer, wall, accelerator, inputs.config.devices
    )
    run.finish(name, fp, validation=validation, record=record | {"validation": validation})
    return validation


def stage_record(
    name: str,
    labels: Sequence[str],
    loss: str,
    lr: float,
    trainer: Any,
    wall_time_s: float,
    accelerator: str,
    devices: int,
) -> dict[str, Any]:
    """What a stage did, JSON-ready, for ``run.json`` and the model card.

    Returns:
        ``name``, ``labels``, ``loss``, ``lr``, ``steps`` (optimiser steps run in total, a
        resumed stage's earlier ones included), ``wall_time_s`` (this process's fit, s),
        ``final_loss`` (the last logged training loss, None when none was logged),
        ``device`` (``cpu``, or ``cuda`` with the GPU's name), ``devices``, ``threads``
        (torch's intra-op threads).
    """
    import torch

    final = trainer.callback_metrics.get("train_loss")
    device = accelerator
    if accelerator == "cuda" and torch.cuda.is_available():
        device = f"cuda ({torch.cuda.get_device_name()})"
    return {
        "name": name,
        "labels": list(labels),
        "loss": loss,
        "lr": lr,
        "steps": int(trainer.global_step),
        "wall_time_s": round(wall_time_s, 3),
        "final_loss": None if final is None else float(final),
        "device": device,
        "devices": devices,
        "threads": torch.get_num_threads(),
    }


def _fit(name, init, proposals, loss, steps, lr, inputs: StageInputs):
    """Build data, model and task of a stage and fit it; returns (trainer, model, accelerator)."""
    from jmlnet_geo.devices import resolve_device
    from jmlnet_geo.model_file import load_weights
    from jmlnet_geo.models.backbones import describe_weights
    from jmlnet_geo.models.segmenter import build_segmenter
    from jmlnet_geo.train.data import grid_loader, tiles_dataset, train_loader
    from jmlnet_geo.train.fit import FitSettings, fit_task, seed_fit
    from jmlnet_geo.train.segmenter import SegmenterTask

    run, config, seg = inputs.run, inputs.config, inputs.config.segmenter
    seed_fit(seg.seed)
    extras = []
    for sb in inputs.scene_boxes:
        stem = Path(sb.scene.path).stem
        layers = {p: str(run.path / "proposals" / f"{stem}.{p}.tif") for p in proposals}
        if sb.scene.path in inputs.mask_scenes and inputs.masks is not None:
            layers = {p: str(inputs.masks[sb.scene.path]) for p in proposals}
        extras.append(layers)
    data = tiles_dataset(inputs.scene_boxes, extras, inputs.ignore)
    loader = train_loader(
        data,
        seg.tile_size,
        steps,
        seg.batch_size,
        seg.loader_workers,
        seg.seed,
        seg.box_tiles,
    )
    val_loader, val_every = None, None
    if inputs.truth is not None:
        truth = inputs.truth
        val_data = tiles_dataset(
            inputs.scene_boxes, [{"truth": str(truth[sb.scene.path])} for sb in inputs.scene_boxes]
        )
        val_loader = grid_loader(val_data, seg.tile_size, seg.batch_size, seg.loader_workers)
        val_every = min(seg.val_every, steps)

    classes = len(inputs.names) + 1
    bands = inputs.scene_boxes[0].scene.count
    weights_arg = None if init is not None else seg.weights
    model = build_segmenter(seg.preset, classes, bands, weights_arg, head=seg.head)
    if init is not None:
        from safetensors.torch import load_file

        described = f"a {seg.preset} {seg.head} of {classes} classes and {bands} bands"
        load_weights(model, load_file(init), display_path(init), described)
    elif not (run.path / name / CHECKPOINT).exists():
        inputs.say(f"{name}: {describe_weights(model)}")
    task = SegmenterTask(
        model, classes, inputs.normalization, proposals, loss, steps, lr,
        optimizer=seg.optimizer, momentum=seg.momentum, weight_decay=seg.weight_decay,
        poly_power=seg.poly_power, warmup=seg.warmup, seed=seg.seed,
        box_loss_weight=seg.box_loss_weight, box_pairwise_weight=seg.box_pairwise_weight,
        box_margin=seg.box_margin, box_skip_neighbours=seg.box_skip_neighbours,
        box_outside_weight=seg.box_outside_weight, box_outside_hard=seg.box_outside_hard,
    )  # fmt: skip
    accelerator = resolve_device(config.device).type
    settings = FitSettings(
        steps=steps,
        folder=run.path / name,
        log_dir=run.path / "logs",
        log_name=name,
        checkpoint_every=seg.checkpoint_every,
        accelerator=accelerator,
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy=config.strategy,
        precision=config.precision,
        tensorboard=True,
        val_every=val_every,
        seed=seg.seed,
    )
    with inputs.progress_of(f"segmenter {name} ({loss})", "steps") as report:
        trainer = fit_task(task, settings, loader, val_loader, progress=report)
    return trainer, model, accelerator


def stage_summary(
    run: RunFolder, name: str, labels: Sequence[str], stage: dict[str, Any], reused: bool
) -> dict[str, Any]:
    """The card's record of a finished stage: its ``run.json`` record, ``reused`` added.

    A stage finished by a version that wrote no record gets what is known of it (labels, loss,
    lr, steps asked for) and None for what was not recorded (wall time, final loss, device).
    """
    record = dict(run.entry(name).get("record") or {})
    if not record:
        record = {
            "name": name, "labels": list(labels), "loss": stage["loss"], "lr": stage["lr"],
            "steps": stage["steps"], "wall_time_s": None, "final_loss": None, "device": None,
            "threads": None, "validation": run.entry(name).get("validation", {}),
        }  # fmt: skip
    return record | {"reused": reused}
