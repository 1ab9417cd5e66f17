"""The detector: training on the boxes (Lightning), its file, detection over scenes, and mAP.

The Faster R-CNN of :func:`jmlnet_geo.models.detector.build_detector` learns from the boxes
alone: random tiles of the scenes (:class:`jmlnet_geo.tiling.RandomTiles`) with the boxes inside
each tile, random flips, bands standardised with the scenes' statistics. It is what DetCAM and
CAMCut (:mod:`jmlnet_geo.proposals.detcam`) explain, and a product of its own (``jmlgeo detect``).

The *detector file* (``detector.safetensors``) is a plain safetensors file: the model's tensors
plus a JSON :class:`DetectorCard` in the header metadata (preset, classes, bands, normalisation,
tile size, how it was trained). Loading one never unpickles anything; Lightning's ``last.ckpt``
(a pickle) only serves to resume training and is never read by :func:`load_detector`.

A training folder holds::

    detector.safetensors    the detector file (written atomically when training ends)
    last.ckpt               resumable Lightning checkpoint
    run.json                fingerprint of the data and settings (what ``resume`` compares)
    logs/metrics.csv        train_loss and its four parts per step, learning rate

Not for the segmenter: see :mod:`jmlnet_geo.train.segmenter`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import shutil
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from jmlnet_geo import __version__
from jmlnet_geo.devices import resolve_device
from jmlnet_geo.errors import InputFileError, JmlGeoError, OptionError, display_path
from jmlnet_geo.evaluate.metrics import average_precision, mean_average_precision  # noqa: F401
from jmlnet_geo.io.raster import Scene, open_dataset, read_window
from jmlnet_geo.io.vector import SceneBoxes
from jmlnet_geo.io.write import atomic_output
from jmlnet_geo.train.data import Normalization, random_flips
from jmlnet_geo.train.fingerprint import file_stamps
from jmlnet_geo.train.optim import OptimizerSettings, check_optimizer

Progress = Callable[[int, int], None]

#: File name of the detector inside a training folder.
DETECTOR_FILE = "detector.safetensors"
FORMAT = "jmlgeo-detector"
FORMAT_VERSION = 1
_CARD_KEY = "jmlgeo_detector_card"

#: Defaults of :func:`train_detector` (the ``fast`` preset on a CPU: a few minutes per 100 steps).
DEFAULT_STEPS = 500
DEFAULT_BATCH_SIZE = 4
DEFAULT_TILE_SIZE = 256
DEFAULT_LR = 5e-4
#: Optimisers :class:`DetectorTask` knows. AdamW trains the from-scratch RoI head much faster
#: than SGD in the few hundred steps a CPU affords: on NWPU after 150-200 steps, SGD lr 0.01 left
#: the RoI classifier at background for the training boxes (DetCAM all 0 for 96 % of them);
#: AdamW 5e-4 with half the RoIs positive gave the most informative DetCAM of 2e-4 / 5e-4 / 1e-3.
#: RoIs sampled per tile for the box head's losses (torchvision: 512; the box head's four
#: convolutions over them dominate a CPU step, and a tile holds few objects).
DEFAULT_ROIS_PER_TILE = 64
#: Share of positive RoIs among them (torchvision: 0.25). Tiles hold few objects and the RoI
#: classifier, which DetCAM differentiates, must learn the classes, not only the background.
DEFAULT_POSITIVE_FRACTION = 0.5

#: Box parts (after cutting by a tile) thinner than this many pixels are left out of training.
MIN_TRAIN_BOX_PIXELS = 4.0


class DetectorFileError(InputFileError):
    """A detector file is missing, not a jmlgeo detector, or does not fit the data."""


@dataclass
class DetectorCard:
    """What a detector file says about its model.

    Attributes:
        preset: ``fast`` or ``paper`` (:func:`jmlnet_geo.models.detector.build_detector`).
        classes: Class names of ids 1..K, in the order of the model's outputs 1..K.
        in_channels: Number of bands the model reads.
        band_names: A name per band of the training scenes.
        normalization: ``{"mean": [...], "std": [...]}`` per band, in the scenes' units.
        tile_size: Side of the training tiles, pixels.
        training: How it was trained (steps, batch size, lr, seed, weights, fingerprint, loss).
        versions: Package versions that wrote it.
    """

    preset: str
    classes: list[str]
    in_channels: int
    band_names: list[str]
    normalization: dict[str, list[float]]
    tile_size: int
    training: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """K: object classes, background not included."""
        return len(self.classes)

    def band_normalization(self) -> Normalization:
        """The per-band standardisation the model expects."""
        return Normalization(
            tuple(float(v) for v in self.normalization["mean"]),
            tuple(float(v) for v in self.normalization["std"]),
        )


# --- the detector file ------------------------------------------------------------------------


def save_detector(path: str | os.PathLike[str], model: nn.Module, card: DetectorCard) -> None:
    """Write a detector's tensors and card to one safetensors file, atomically.

    Args:
        path: The file (``detector.safetensors`` by convention).
        model: The detector (any device; tensors are copied to the CPU).
        card: Its card.
    """
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        _CARD_KEY: json.dumps(asdict(card), sort_keys=True),
    }
    with atomic_output(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)


def read_detector_card(path: str | os.PathLike[str]) -> DetectorCard:
    """Read only the card of a detector file (cheap: no tensor is read).

    Raises:
        DetectorFileError: Missing file, a pickle or checkpoint, or not a jmlgeo detector.
    """
    return _open_detector(path, tensors=False)[1]


def load_detector(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[nn.Module, DetectorCard]:
    """Build the detector of a detector file, weights loaded, in eval mode.

    Args:
        path: A file written by :func:`save_detector` (``jmlgeo train-detector``).
        device: Where to put the model.

    Returns:
        ``(model, card)``: a torchvision ``FasterRCNN`` taking standardised float32 (C, H, W)
        tiles (see :meth:`DetectorCard.band_normalization`), and its card.

    Raises:
        DetectorFileError: Missing file, a pickle or checkpoint (refused, never unpickled), not a
            jmlgeo detector, or tensors that do not fit the card's architecture.
    """
    from jmlnet_geo.models.detector import build_detector

    state, card = _open_detector(path, tensors=True)
    model = build_detector(card.preset, card.num_classes, card.in_channels, weights=None)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise DetectorFileError(
            f"{display_path(path)}: its tensors do not fit a {card.preset} detector of "
            f"{card.num_classes} classes and {card.in_channels} bands ({first}); retrain it"
        ) from None
    return model.to(device).eval(), card


def _open_detector(
    path: str | os.PathLike[str], tensors: bool
) -> tuple[dict[str, torch.Tensor], DetectorCard]:
    from safetensors import SafetensorError, safe_open

    shown = display_path(path)
    if not os.path.isfile(path):
        raise DetectorFileError(
            f"{shown}: detector file not found; give the detector.safetensors that "
            "jmlgeo train-detector wrote"
        )
    refused = (
        f"{shown}: not a jmlgeo detector file (detectors are safetensors files written by "
        "jmlgeo train-detector; pickles and checkpoints such as last.ckpt are refused)"
    )
    try:
        with safe_open(os.fspath(path), framework="pt") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != FORMAT or _CARD_KEY not in metadata:
                raise DetectorFileError(refused)
            state = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as err:
        if isinstance(err, JmlGeoError):
            raise
        raise DetectorFileError(refused) from None
    try:
        card = DetectorCard(**json.loads(metadata[_CARD_KEY]))
    except (TypeError, ValueError) as err:
        raise DetectorFileError(f"{shown}: the detector's card is unreadable ({err})") from None
    return state, card


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
    normalization: Normalization,
    out_dir: str | os.PathLike[str],
    preset: str = "fast",
    steps: int = DEFAULT_STEPS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    tile_size: int = DEFAULT_TILE_SIZE,
    lr: float = DEFAULT_LR,
    optimizer: str = "adamw",
    device: str = "auto",
    resume: bool = False,
    progress: Progress | None = None,
    seed: int = 0,
    weights: str | os.PathLike[str] | None = "default",
    checkpoint_every: int = 50,
    loader_workers: int = 0,
    rois_per_tile: int = DEFAULT_ROIS_PER_TILE,
    positive_fraction: float = DEFAULT_POSITIVE_FRACTION,
    message: Callable[[str], None] | None = None,
) -> Path:
    """Train a detector on the boxes and write ``out_dir/detector.safetensors``.

    Args:
        scene_boxes: Each scene with its boxes (:func:`jmlnet_geo.io.vector.boxes_for_scenes`);
            all scenes have the same bands.
        class_names: Names of class ids 1..K.
        normalization: Band standardisation (:func:`jmlnet_geo.train.data.scene_normalization`).
        out_dir: Training folder (created when missing; see the module docstring).
        preset: ``fast`` or ``paper``.
        steps: Optimiser steps.
        batch_size: Tiles per step.
        tile_size: Square tile side, pixels.
        lr: Peak learning rate.
        optimizer: ``adamw`` (default) or ``sgd`` (momentum 0.9).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``; AMP (16-mixed) on CUDA.
        resume: Reuse ``out_dir`` when it holds a run of the same data and settings: a finished
            detector is returned as it is, an interrupted one continues from ``last.ckpt``.
            Otherwise (and always when False) training starts over.
        progress: Called with (steps done, steps).
        seed: Seed of tile sampling, flips and initialisation.
        weights: Initial weights (see ``build_detector``).
        checkpoint_every: Save ``last.ckpt`` every this many steps.
        loader_workers: DataLoader worker processes.
        rois_per_tile: RoIs sampled per tile for the box head's losses.
        positive_fraction: At most this share of them are positives (object RoIs).
        message: Receives one-line notes for the user (weights used, reuse).

    Returns:
        The detector file.

    Raises:
        OptionError: Bad steps, batch or tile size, or device.
        InputFileError: Scenes with different band counts.
    """
    from lightning.pytorch.callbacks import Callback, ModelCheckpoint

    from jmlnet_geo.models.backbones import weights_info
    from jmlnet_geo.models.detector import build_detector, describe_weights
    from jmlnet_geo.train.data import tiles_dataset, train_loader

    say = message or (lambda text: None)
    for name, value in (("steps", steps), ("batch size", batch_size), ("tile size", tile_size)):
        if value <= 0:
            raise OptionError(f"detector {name} {value}: give a positive number")
    check_optimizer(optimizer)
    bands = {sb.scene.count for sb in scene_boxes}
    if len(bands) != 1:
        raise InputFileError(f"scenes have different band counts ({sorted(bands)}); train on one")
    accelerator = resolve_device(device).type
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path, checkpoint, state_file = folder / DETECTOR_FILE, folder / "last.ckpt", folder / "run.json"
    settings = {
        "preset": preset,
        "steps": steps,
        "batch_size": batch_size,
        "tile_size": tile_size,
        "lr": lr,
        "optimizer": optimizer,
        "seed": seed,
        "weights": None if weights is None else os.fspath(weights),
        "rois_per_tile": rois_per_tile,
        "positive_fraction": positive_fraction,
    }
    fp = _fingerprint(scene_boxes, class_names, normalization, settings)
    previous = json.loads(state_file.read_text()) if state_file.exists() else {}
    same = resume and previous.get("fingerprint") == fp
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
    with atomic_output(state_file) as tmp:
        Path(tmp).write_text(json.dumps({"fingerprint": fp, "settings": settings}, indent=2))

    _quiet_lightning()
    L.seed_everything(seed, workers=True, verbose=False)
    count = next(iter(bands))
    model = build_detector(
        preset,
        len(class_names),
        count,
        weights,
        box_batch_size_per_image=rois_per_tile,
        box_positive_fraction=positive_fraction,
    )
    info = weights_info(model)
    if not checkpoint.exists():
        say(f"detector: {describe_weights(model)}")
    task = DetectorTask(
        model,
        normalization,
        steps,
        lr,
        optimizer,
        seed=seed,
        frozen=[] if info.from_scratch else frozen_stem(model),
    )
    data = tiles_dataset(scene_boxes, [{} for _ in scene_boxes])
    loader = train_loader(data, tile_size, steps, batch_size, loader_workers, seed)

    class _Report(Callback):
        def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
            if progress:
                progress(trainer.global_step, steps)

    trainer = L.Trainer(
        max_steps=steps,
        max_epochs=1,
        accelerator=accelerator,
        devices=1,
        precision="16-mixed" if accelerator == "cuda" else "32-true",
        logger=L.pytorch.loggers.CSVLogger(folder, name="logs", version=""),
        callbacks=[
            ModelCheckpoint(
                folder, save_last=True, save_top_k=0, every_n_train_steps=checkpoint_every
            ),
            _Report(),
        ],
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        gradient_clip_val=10.0,
        deterministic=False,
    )
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*not resumable.*")
        warnings.filterwarnings("ignore", message=".*save_top_k=0.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # Lightning's own deprecation
        warnings.filterwarnings("ignore", message=".*dirpath has changed.*")  # a moved folder
        trainer.fit(
            task,
            train_dataloaders=loader,
            ckpt_path=str(checkpoint) if checkpoint.exists() else None,
        )
    loss = trainer.callback_metrics.get("train_loss")
    scenes = [sb.scene for sb in scene_boxes]
    card = DetectorCard(
        preset=preset,
        classes=list(class_names),
        in_channels=count,
        band_names=list(scenes[0].band_names),
        normalization={"mean": list(normalization.mean), "std": list(normalization.std)},
        tile_size=tile_size,
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
        versions=_versions(),
    )
    save_detector(path, model, card)
    if accelerator == "cuda":
        torch.cuda.empty_cache()
    return path


def _fingerprint(
    scene_boxes: Sequence[SceneBoxes],
    class_names: Sequence[str],
    normalization: Normalization,
    settings: Mapping[str, Any],
) -> str:
    digest = hashlib.sha256()
    for sb in scene_boxes:
        digest.update(json.dumps(file_stamps([sb.scene.path])).encode())
        digest.update(np.ascontiguousarray(sb.xyxy, np.float64).tobytes())
        digest.update(np.ascontiguousarray(sb.class_ids, np.int64).tobytes())
    parts = [list(class_names), asdict(normalization), dict(settings)]
    digest.update(json.dumps(parts, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def _versions() -> dict[str, str]:
    import torchvision

    return {
        "jmlnet_geo": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
    }


def _quiet_lightning() -> None:
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)


# --- detection over scenes --------------------------------------------------------------------


@dataclass
class Detections:
    """Detected boxes of one scene.

    Attributes:
        xyxy: float64 (N, 4): col_min, row_min, col_max, row_max in scene pixels.
        labels: int64 (N,): class ids 1..K of the detector's card.
        scores: float32 (N,): confidence in 0..1.
    """

    xyxy: np.ndarray
    labels: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def check_bands(card: DetectorCard, scenes: Sequence[Scene], detector_path: str) -> None:
    """Refuse scenes whose band count differs from the detector's.

    Raises:
        DetectorFileError: The first scene that does not fit.
    """
    for scene in scenes:
        if scene.count != card.in_channels:
            raise DetectorFileError(
                f"{display_path(scene.path)}: has {scene.count} band(s) but the detector "
                f"{display_path(detector_path)} was trained on {card.in_channels}; give scenes "
                "of the same kind or train a detector on them"
            )


def detect_scene(
    model: nn.Module,
    card: DetectorCard,
    scene: Scene,
    window: int = 1024,
    overlap: int = 128,
    nms_iou: float = 0.5,
) -> Detections:
    """Detect objects over a whole scene with overlapping windows.

    Each detection is kept by the window whose centre is nearest to the detection's centre
    (so objects cut by one window's edge come from a window that sees them whole, as long as
    they are smaller than ``overlap``), then class-wise NMS removes the remaining duplicates.

    Args:
        model: A detector in eval mode (:func:`load_detector`); its device is used.
        card: Its card (normalisation).
        scene: The scene (same bands as the detector).
        window: Window side, pixels (scenes smaller than that are one window).
        overlap: Overlap of neighbouring windows, pixels.
        nms_iou: IoU above which a lower-scored detection of the same class is dropped.

    Returns:
        Every detection the model returns (its ``box_score_thresh``, 0.05 by default).
    """
    from rasterio.windows import Window
    from torchvision.ops import batched_nms

    device = next(model.parameters()).device
    normalization = card.band_normalization()
    cols = _starts(scene.width, window, overlap)
    rows = _starts(scene.height, window, overlap)
    width, height = min(window, scene.width), min(window, scene.height)
    centres = np.array([(c + width / 2, r + height / 2) for r in rows for c in cols])
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    with open_dataset(scene) as ds, torch.no_grad():
        k = 0
        for r in rows:
            for c in cols:
                image, valid = read_window(ds, scene, Window(c, r, width, height))
                tensor = torch.from_numpy(image.astype(np.float32))[None].to(device)
                mask = torch.from_numpy(valid)[None].to(device)
                (out,) = model(list(normalization.apply(tensor, mask)))
                boxes = out["boxes"].double().cpu().numpy() + [c, r, c, r]
                mid = (boxes[:, :2] + boxes[:, 2:]) / 2
                nearest = np.argmin(((mid[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
                keep = nearest == k if len(centres) > 1 else np.ones(len(boxes), bool)
                labels, scores = out["labels"].cpu().numpy(), out["scores"].cpu().numpy()
                found.append((boxes[keep], labels[keep], scores[keep]))
                k += 1
    xyxy = np.concatenate([f[0] for f in found]).reshape(-1, 4)
    labels = np.concatenate([f[1] for f in found]).astype(np.int64)
    scores = np.concatenate([f[2] for f in found]).astype(np.float32)
    if len(labels):
        keep = batched_nms(
            torch.from_numpy(xyxy),
            torch.from_numpy(scores).double(),
            torch.from_numpy(labels),
            nms_iou,
        ).numpy()
        xyxy, labels, scores = xyxy[keep], labels[keep], scores[keep]
    return Detections(xyxy, labels, scores)


def _starts(extent: int, window: int, overlap: int) -> list[int]:
    """Window offsets along one axis: every ``window - overlap``, the last snapped inside."""
    if extent <= window:
        return [0]
    stride = max(1, window - overlap)
    starts = list(range(0, extent - window, stride))
    return [*starts, extent - window]
