"""The detector's training: a Lightning task on the boxes, ``train_detector``, and VOC mAP.

The Faster R-CNN of :func:`jmlnet_geo.models.detector.build_detector` learns from the boxes
alone: random tiles of the scenes (:class:`jmlnet_geo.tiling.RandomTiles`) with the boxes inside
each tile, random flips, bands standardised with the scenes' statistics. It is what DetCAM and
CAMCut (:mod:`jmlnet_geo.proposals.detcam`) explain, and a product of its own (``jmlgeo detect``,
:mod:`jmlnet_geo.detection`). Its file format is :mod:`jmlnet_geo.detector_file`.

A training folder holds::

    detector.safetensors    the detector file (written atomically when training ends)
    last.ckpt               resumable Lightning checkpoint
    run.json                fingerprint of the data and settings (see ``train.run_folder``)
    logs/metrics.csv        train_loss and its four parts per step, learning rate

Not for the segmenter: see :mod:`jmlnet_geo.train.segmenter`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from jmlnet_geo.config import DetectorConfig, detector_training_settings
from jmlnet_geo.detector_file import DETECTOR_FILE, DetectorCard, read_detector_card, save_detector
from jmlnet_geo.devices import resolve_device
from jmlnet_geo.errors import InputFileError, JmlGeoError, OptionError, display_path
from jmlnet_geo.evaluate.metrics import average_precision, mean_average_precision  # noqa: F401
from jmlnet_geo.io.vector import SceneBoxes
from jmlnet_geo.model_file import writer_versions
from jmlnet_geo.normalization import Normalization, scene_normalization
from jmlnet_geo.train.data import random_flips
from jmlnet_geo.train.fingerprint import array_digest, file_stamps, fingerprint
from jmlnet_geo.train.fit import CHECKPOINT, FitSettings, fit_task, seed_fit
from jmlnet_geo.train.optim import OptimizerSettings, check_optimizer
from jmlnet_geo.train.run_folder import RunState
from jmlnet_geo.vocabulary import Progress

#: Defaults of :func:`train_detector` (:class:`jmlnet_geo.config.DetectorConfig`'s, fast preset).
DEFAULT_STEPS, DEFAULT_BATCH_SIZE = DetectorConfig.steps, DetectorConfig.batch_size
DEFAULT_TILE_SIZE, DEFAULT_LR = DetectorConfig.tile_size, DetectorConfig.lr
#: Box parts (after cutting by a tile) thinner than this many pixels are left out of training.
MIN_TRAIN_BOX_PIXELS = 4.0
GRADIENT_CLIP = 10.0  # gradient norm clip: a from-scratch RoI head spikes in its first steps
_STAGE = "detector"  # its stage name in the folder's run.json


# --- the Lightning module ---------------------------------------------------------------------


class DetectorTask(L.LightningModule):
    """Train a torchvision Faster R-CNN on tile batches of :func:`jmlnet_geo.tiling.collate_tiles`.

    The loss is the sum of torchvision's four (RPN objectness and box regression, RoI-head
    classification and box regression). AdamW (or SGD) with a linear warm-up, then poly decay.
    """

    def __init__(
        self,
        model: nn.Module,
        normalization: Normalization,
        steps: int,
        lr: float,
        optimizer: str = "adamw",
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        poly_power: float = 0.9,
        warmup: int | None = None,
        seed: int = 0,
        frozen: Sequence[nn.Module] = (),
    ) -> None:
        """Set up the task.

        Args:
            model: A detector from :func:`jmlnet_geo.models.detector.build_detector`.
            normalization: Band standardisation (applied here, on the device).
            steps: Total optimiser steps (for the schedule).
            lr: Peak learning rate.
            optimizer: ``adamw`` or ``sgd`` (with ``momentum``).
            momentum: SGD momentum.
            weight_decay: Weight decay.
            poly_power: Exponent of the poly decay after the warm-up.
            warmup: Steps of linear warm-up from lr / 100 (default: 10 % of ``steps``, <= 200).
            seed: Seed of the random flips.
            frozen: Modules whose parameters are not trained and whose batch norms keep their
                statistics (eval mode), e.g. the stem of a pretrained backbone.
        """
        super().__init__()
        self.model = model
        self.normalization = normalization
        warmup = min(200, max(1, steps // 10)) if warmup is None else max(0, warmup)
        self.optimizer_settings = OptimizerSettings(
            optimizer, lr, steps, momentum, weight_decay, poly_power, warmup
        )
        self.flips = torch.Generator().manual_seed(seed)
        self.frozen = list(frozen)
        for module in self.frozen:
            module.requires_grad_(False)

    def train(self, mode: bool = True) -> DetectorTask:
        """Set training mode, keeping the frozen modules in eval mode."""
        super().train(mode)
        for module in self.frozen:
            module.eval()
        return self

    def forward(
        self, image: torch.Tensor, valid: torch.Tensor | None = None
    ) -> list[dict[str, torch.Tensor]]:
        """Raw float32 (N, C, H, W) tiles -> detections (eval mode), boxes in tile pixels."""
        return self.model(list(self.normalization.apply(image, valid)))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        """One step: flips, standardisation, the detector's four losses summed."""
        batch = random_flips(batch, ["valid"], self.flips)
        images = self.normalization.apply(batch["image"], batch["valid"])
        targets = []
        for boxes, labels in zip(batch["boxes"], batch["labels"], strict=True):
            boxes = boxes.to(images.device, torch.float32)
            keep = ((boxes[:, 2:] - boxes[:, :2]) >= MIN_TRAIN_BOX_PIXELS).all(dim=1)
            targets.append({"boxes": boxes[keep], "labels": labels.to(images.device)[keep]})
        losses = self.model(list(images), targets)
        loss = sum(losses.values())
        n = len(targets)
        self.log("train_loss", loss, on_step=True, batch_size=n)
        for name, value in losses.items():
            self.log(name, value, on_step=True, batch_size=n)
        self.log("lr", self.optimizers().param_groups[0]["lr"], on_step=True, batch_size=1)
        return loss

    def configure_optimizers(self) -> dict:
        """AdamW or SGD over the trainable parameters; linear warm-up then poly decay, per step."""
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        return self.optimizer_settings.configure(trainable)


def frozen_stem(model: nn.Module) -> list[nn.Module]:
    """The early layers left untrained when the backbone is pretrained (stride <= 4).

    As torchvision's ``trainable_backbone_layers=3``: the stem and the first stage(s) hold
    generic edges and colours and dominate the backward pass's cost on large maps.

    Args:
        model: A detector from ``build_detector``.

    Returns:
        ``conv_stem``, ``bn1``, ``blocks[0:2]`` (fast) or ``conv1``, ``bn1``, ``layer1`` (paper).
    """
    body = model.backbone.body
    if hasattr(body, "conv_stem"):
        return [body.conv_stem, body.bn1, *list(body.blocks)[:2]]
    return [m for m in (getattr(body, n, None) for n in ("conv1", "bn1", "layer1")) if m]


# --- training ---------------------------------------------------------------------------------


def train_detector(
    scene_boxes: Sequence[SceneBoxes],
    class_names: Sequence[str],
    normalization: Normalization | None,
    out_dir: str | os.PathLike[str],
    config: DetectorConfig | None = None,
    seed: int = 0,
    device: str = "auto",
    resume: bool = False,
    progress: Progress | None = None,
    message: Callable[[str], None] | None = None,
    **overrides: Any,
) -> Path:
    """Train a detector on the boxes and write ``out_dir/detector.safetensors``.

    Args:
        scene_boxes: Each scene with its boxes (:func:`jmlnet_geo.io.vector.boxes_for_scenes`);
            all scenes have the same bands.
        class_names: Names of class ids 1..K.
        normalization: Band standardisation (None: ``scene_normalization`` of the scenes).
        out_dir: Training folder (created when missing; see the module docstring).
        config: Preset, steps, tiles, optimiser, weights, RoIs... (default ``DetectorConfig()``).
        seed: Seed of tile sampling, flips and initialisation.
        device: ``auto``, ``cpu`` or ``cuda`` (AMP on CUDA).
        resume: When True, a finished detector of the same data and settings in ``out_dir`` is
            reused as it is, an interrupted one continues from ``last.ckpt``.
            Otherwise (and always when False) training starts over.
        progress: Called with (steps done, steps).
        message: Receives one-line notes for the user (weights used, reuse).
        **overrides: :class:`DetectorConfig` fields replacing those of ``config`` (``steps=2``).

    Returns:
        The detector file.

    Raises:
        OptionError: Bad steps, batch or tile size, optimiser, or device.
        InputFileError: Scenes with different band counts.
    """
    from jmlnet_geo.models.backbones import weights_info
    from jmlnet_geo.models.detector import build_detector, describe_weights
    from jmlnet_geo.train.data import tiles_dataset, train_loader

    config = dataclasses.replace(config or DetectorConfig(), **overrides)
    say = message or (lambda text: None)
    steps, sizes = config.steps, {"batch size": config.batch_size, "tile size": config.tile_size}
    for name, value in {"steps": steps, **sizes}.items():
        if value <= 0:
            raise OptionError(f"detector {name} {value}: give a positive number")
    check_optimizer(config.optimizer)
    bands = {sb.scene.count for sb in scene_boxes}
    if len(bands) != 1:
        raise InputFileError(f"scenes have different band counts ({sorted(bands)}); train on one")
    accelerator = resolve_device(device).type
    normalization = normalization or scene_normalization([sb.scene for sb in scene_boxes])
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path, checkpoint = folder / DETECTOR_FILE, folder / CHECKPOINT
    settings = detector_training_settings(config, seed)
    fp = detector_fingerprint(scene_boxes, class_names, normalization, settings)
    run = RunState(folder)
    same = resume and run.entry(_STAGE).get("fingerprint") == fp
    if same and path.exists():
        with contextlib.suppress(JmlGeoError):
            if read_detector_card(path).training.get("fingerprint") == fp:
                say(f"{display_path(path)}: reusing the detector trained with these settings")
                if progress:
                    progress(steps, steps)
                return path
    if not (same and checkpoint.exists()):
        checkpoint.unlink(missing_ok=True)
        shutil.rmtree(folder / "logs", ignore_errors=True)
    run.start(_STAGE, fp, settings=settings)

    seed_fit(seed)
    count = next(iter(bands))
    model = build_detector(
        config.preset,
        len(class_names),
        count,
        config.weights,
        box_batch_size_per_image=config.rois_per_tile,
        box_positive_fraction=config.positive_fraction,
    )
    info = weights_info(model)
    if not checkpoint.exists():
        say(f"detector: {describe_weights(model)}")
    task = DetectorTask(
        model,
        normalization,
        steps,
        config.lr,
        config.optimizer,
        seed=seed,
        frozen=[] if info.from_scratch else frozen_stem(model),
    )
    data = tiles_dataset(scene_boxes, [{} for _ in scene_boxes])
    loader = train_loader(
        data, config.tile_size, steps, config.batch_size, config.loader_workers, seed,
        config.box_tiles,
    )  # fmt: skip
    fit = FitSettings(
        steps=steps,
        folder=folder,
        log_dir=folder,
        log_name="logs",
        checkpoint_every=config.checkpoint_every,
        accelerator=accelerator,
        top_k=0,
        gradient_clip=GRADIENT_CLIP,
        seed=seed,
    )
    started = time.perf_counter()
    trainer = fit_task(task, fit, loader, progress=progress)
    loss = trainer.callback_metrics.get("train_loss")
    scenes = [sb.scene for sb in scene_boxes]
    card = DetectorCard(
        preset=config.preset,
        classes=list(class_names),
        in_channels=count,
        band_names=list(scenes[0].band_names),
        normalization={"mean": list(normalization.mean), "std": list(normalization.std)},
        tile_size=config.tile_size,
        training={
            **settings,
            "weights_used": info.describe(),
            "frozen_stem": not info.from_scratch,
            "fingerprint": fp,
            "final_loss": None if loss is None else float(loss),
            "scenes": [os.path.basename(s.path) for s in scenes],
            "boxes": int(sum(len(sb) for sb in scene_boxes)),
            "device": accelerator,
            "seconds": round(time.perf_counter() - started, 1),
        },
        versions=writer_versions(),
    )
    save_detector(path, model, card)
    run.finish(_STAGE, fp, settings=settings)
    if accelerator == "cuda":
        torch.cuda.empty_cache()
    return path


def detector_fingerprint(
    scene_boxes: Sequence[SceneBoxes],
    class_names: Sequence[str],
    normalization: Normalization,
    settings: dict[str, Any],
) -> str:
    """What a detector learns from: the scenes' files, their boxes, classes, bands, settings."""
    per_scene = [
        [file_stamps([sb.scene.path]), array_digest(sb.xyxy.astype(np.float64)),
         array_digest(sb.class_ids.astype(np.int64))] for sb in scene_boxes
    ]  # fmt: skip
    return fingerprint(per_scene, list(class_names), asdict(normalization), settings)
