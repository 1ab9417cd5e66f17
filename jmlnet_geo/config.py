"""Training settings and the two presets.

``paper`` follows the JMLNet paper (section 3.1): DeepLab v3 ResNet-50, 512-pixel tiles, batch 20,
SGD lr 0.007 with poly decay (power 0.9), CE on CAMCut for 50k iterations then a 10k-iteration
finetune with BMM over {GrabCut, DetCAM, CAMCut}. ``fast`` shrinks the budget for CPUs and
trains both stages with CE on GrabCut plus the projection term of the box-consistency loss
(weight 1, no pairwise term): on NWPU at that budget it beat plain CE on GrabCut at both seeds
(48.81 / 47.64 and 50.41 / 47.01 mIoU) and draws ships and vehicles (24-29 IoU, 0 under CE),
while BoxInst's full loss with its pairwise term shrank large objects into background (36.52);
no multi-label stage 2 has beaten CE on GrabCut at both seeds (BENCHMARKS.md), so the
multi-label losses stay options. The model:
DeepLab v3 (ASPP) with the v3+ stride-4 decoder on an ImageNet-pretrained EfficientNet-Lite0
(offline weights), 256 tiles, batch 8, and AdamW (lr 1e-3, 20 warm-up steps)
instead of SGD: at the CPU budget of a few hundred steps, SGD does not get past the background
(NWPU, full masks, 200 + 100 steps: 15.8 mIoU with SGD lr 0.01, 16.0 with lr 0.05, 47.3 with
AdamW; BENCHMARKS.md, "Accuracy on NWPU"). A preset only sets defaults; every value can be
overridden.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from jmlnet_geo.errors import OptionError

PRESETS = ("fast", "paper")
LOSS_NAMES = ("ce", "ma", "mm", "bmm")

#: Segmentation heads: DeepLab v3 (ASPP, then bilinear upsampling of the logits to the input) and
#: DeepLab v3+ (the same ASPP, plus a decoder that adds the stride-4 encoder features).
HEADS = ("deeplabv3", "deeplabv3plus")
#: The head of each preset. ``fast`` uses v3+: at output stride 16, plain v3 cannot draw objects
#: a few pixels wide (sample_data, CE on GrabCut, 300 steps: 37.3 mIoU with v3 and vehicles at 0
#: IoU, 63.0 with v3+; a CPU step 1.3 vs 1.8 s), and stride 8 costs 5-7 s a step.
DEFAULT_HEADS = {"fast": "deeplabv3plus", "paper": "deeplabv3"}


def check_head(preset: str, head: str | None) -> str:
    """The head to build: ``head``, or the preset's when None.

    Raises:
        OptionError: A head the preset does not have (the message lists the ones it has).
    """
    head = head or DEFAULT_HEADS[preset]
    allowed = HEADS if preset == "fast" else (DEFAULT_HEADS[preset],)
    if head not in allowed:
        raise OptionError(f"--head {head}: the {preset} preset takes {' or '.join(allowed)}")
    return head


@dataclass(frozen=True)
class SegmenterConfig:
    """How the segmenter is trained (both stages).

    Attributes:
        preset: Architecture preset, ``fast`` or ``paper`` (see :mod:`jmlnet_geo.models`).
        head: ``deeplabv3plus`` (fast's default) or ``deeplabv3`` (paper: the only one); see
            :data:`jmlnet_geo.models.segmenter.DEFAULT_HEADS`.
        weights: ``imagenet`` (offline weights of the preset), a torchvision weight name, a
            local weights file, or None (from scratch).
        tile_size: Square training tile side, pixels.
        batch_size: Tiles per step.
        optimizer: ``adamw`` (fast) or ``sgd`` with momentum (paper).
        lr: Peak learning rate.
        momentum: SGD momentum.
        weight_decay: Weight decay.
        poly_power: lr(step) = lr * (1 - step / steps) ** poly_power.
        warmup: Steps of linear warm-up from lr / 100 at the start of each stage (0: none).
        stage1_steps: Steps of stage 1 (CE on ``stage1_proposal``).
        stage2_steps: Steps of stage 2 (``loss`` over ``proposals``, from stage 1's weights).
        stage1_proposal: The proposal stage 1 learns from; ``auto``: the stage-2 proposal whose
            per-box masks agree best with the others (:data:`AUTO`, no truth needed).
        proposals: The proposals stage 2 learns from (Z label maps); ``model`` is the stage-1
            model's own map inside the boxes (self-training, :data:`MODEL_PROPOSAL`).
        loss: Stage 2 loss: ``ce`` (first proposal), ``ma``, ``mm`` or ``bmm``.
        stage2_lr_scale: Stage 2 starts at ``lr * stage2_lr_scale``.
        val_every: Validate every this many steps (when truth is given).
        checkpoint_every: Save a resumable checkpoint every this many steps.
        loader_workers: DataLoader worker processes.
        seed: Seed of tile sampling, flips and initialisation.
        box_tiles: Share of training tiles placed on boxes, classes balanced (0: all random;
            :class:`jmlnet_geo.box_sampler.BoxTiles`).
        box_loss_weight: Weight of the box-consistency loss added to both stages' losses
            (:func:`jmlnet_geo.box_losses.box_consistency_loss`; 0: off; fast: 1, paper: 0).
        box_pairwise_weight: Weight of the pairwise term inside the box-consistency loss
            (BoxInst's 1; 0, the default: its projection and outside terms only). Runs made
            before the option existed had 1.
        box_margin: Growth of the projection term's window beside each box, as a fraction of
            the box's side, where the box's class is scored against 0 (BoxInst: the whole
            image, one instance per map; 0.5, the default; 0: inside the box only, so
            neighbouring boxes of the same class never pull against each other).
        box_skip_neighbours: Leave the pixels inside other boxes of a box's class out of its
            projection window (False, the default: scored against 0 like any pixel beside it).
        box_outside_weight: Weight of the box loss's term that scores the pixels outside every
            box against background (1, the default, as BMM's L-; the CE on a proposal scores
            them too, so 0 leaves them to it alone).
        box_outside_hard: Score only the pixels outside every box that the model calls a
            class (argmax, hard negatives) in that term, over the count of all outside pixels
            (False, the default: every outside pixel).
        rounds: Stage-2 rounds: each round after the first finetunes the previous round's
            model with the ``model`` proposal refreshed from it (1: one stage 2, as the paper).
        drop_doubtful: Share of the boxes, the most doubtful by the audit (``drop_doubtful_by``),
            that both stages ignore (255 in their labels, not background; 0: keep every box;
            :mod:`jmlnet_geo.train.doubtful`). Configs written before it load with 0.
        drop_doubtful_by: Who chooses the boxes the bundle's stages ignore: ``model`` (the
            default since 2026-12-07: chosen again by the audit with the stage-1 model, then
            stage 1 trained again without them) or ``proposals`` (the audit without a model,
            one stage 1 less; runs made before the option chose so).
    """

    preset: str = "fast"
    head: str = DEFAULT_HEADS["fast"]
    weights: str | None = "imagenet"
    tile_size: int = 256
    batch_size: int = 8
    optimizer: str = "adamw"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    warmup: int = 20
    stage1_steps: int = 200
    stage2_steps: int = 100
    stage1_proposal: str = "grabcut"
    proposals: tuple[str, ...] = ("grabcut",)
    loss: str = "ce"
    stage2_lr_scale: float = 0.1
    val_every: int = 100
    checkpoint_every: int = 50
    loader_workers: int = 2
    seed: int = 0
    box_tiles: float = 0.0
    box_loss_weight: float = 1.0
    box_pairwise_weight: float = 0.0
    box_margin: float = 0.5
    box_skip_neighbours: bool = False
    box_outside_weight: float = 1.0
    box_outside_hard: bool = False
    rounds: int = 1
    drop_doubtful: float = 0.0
    drop_doubtful_by: str = "model"


#: ``stage1_proposal`` value that lets the proposals' agreement choose the stage-1 label.
AUTO = "auto"
#: The self-training proposal: a trained stage's map inside the boxes (``<stem>.model.tif``).
MODEL_PROPOSAL = "model"

#: DetCAM thresholds of the paper (Algorithm 1): D_l = D > tau_l, D_h = D > tau_h.
TAU_LOW = 0.15
TAU_HIGH = 0.8
#: What CAMCut starts the box's pixels at or below tau_low as: ``sure`` background (the
#: paper's, the default) or ``probable`` background.
CAMCUT_LOW = ("sure", "probable")
#: Side (pixels) of the windows ``jmlgeo detect`` runs the detector on.
DETECT_WINDOW = 1024


@dataclass(frozen=True)
class DetectorConfig:
    """The Faster R-CNN trained on the boxes (``jmlgeo train-detector``, DetCAM and CAMCut).

    The defaults are the ``fast`` preset on a CPU (a few minutes per 100 steps).

    Attributes:
        preset: ``fast`` (FPN over EfficientNet-Lite0) or ``paper`` (ResNet-50-FPN v2).
        steps: Optimiser steps (linear warm-up, then poly decay).
        batch_size: Tiles per step.
        tile_size: Square training tile side, pixels.
        lr: Peak learning rate.
        optimizer: ``adamw`` or ``sgd``. AdamW trains the from-scratch RoI head much faster
            than SGD in the few hundred steps a CPU affords: on NWPU after 150-200 steps, SGD
            lr 0.01 left the RoI classifier at background for the training boxes (DetCAM all 0
            for 96 % of them); AdamW 5e-4 with half the RoIs positive gave the most informative
            DetCAM of 2e-4 / 5e-4 / 1e-3.
        weights: Initial weights (see :func:`jmlnet_geo.models.detector.build_detector`):
            ``default``, ``imagenet``, a torchvision weight name, a local file, or None.
        rois_per_tile: RoIs sampled per tile for the box head's losses (torchvision: 512; the
            box head's four convolutions over them dominate a CPU step, and a tile holds few
            objects).
        positive_fraction: Share of positive RoIs among them (torchvision: 0.25). Tiles hold few
            objects and the RoI classifier, which DetCAM differentiates, must learn the classes,
            not only the background.
        checkpoint_every: Save a resumable ``last.ckpt`` every this many steps.
        loader_workers: DataLoader worker processes.
        tau_low: D_l = DetCAM > tau_low: the DetCAM proposal and CAMCut's sure background.
        tau_high: D_h = DetCAM > tau_high: CAMCut's sure foreground.
        camcut_low: CAMCut's start for the box's pixels at or below tau_low: ``sure``
            background (the paper) or ``probable`` (GrabCut may give them back).
        box_tiles: Share of the detector's training tiles placed on boxes, classes balanced
            (:class:`jmlnet_geo.box_sampler.BoxTiles`; 0: all random).
    """

    preset: str = "fast"
    steps: int = 500
    batch_size: int = 4
    tile_size: int = 256
    lr: float = 5e-4
    optimizer: str = "adamw"
    weights: str | None = "default"
    rois_per_tile: int = 64
    positive_fraction: float = 0.5
    checkpoint_every: int = 50
    loader_workers: int = 0
    tau_low: float = TAU_LOW
    tau_high: float = TAU_HIGH
    camcut_low: str = CAMCUT_LOW[0]
    box_tiles: float = 0.0


#: The detector settings that change what it learns (with the seed: its fingerprint). The
#: thresholds only change the proposals made from it; checkpoints and workers change nothing.
DETECTOR_TRAINING_KEYS = (
    "preset", "steps", "batch_size", "tile_size", "lr", "optimizer", "weights", "rois_per_tile",
    "positive_fraction",
)  # fmt: skip
#: Detector training settings added later: in a fingerprint only when set (not 0), so the
#: detectors of earlier runs stay reusable.
DETECTOR_OPTIONAL_KEYS = ("box_tiles",)


def detector_training_settings(detector: DetectorConfig, seed: int) -> dict[str, object]:
    """The settings a detector is trained with, for its fingerprint and card (JSON-ready)."""
    values = dataclasses.asdict(detector)
    settings: dict[str, object] = {k: values[k] for k in DETECTOR_TRAINING_KEYS}
    settings |= {k: values[k] for k in DETECTOR_OPTIONAL_KEYS if values[k]}
    settings["seed"] = seed
    return settings


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``jmlgeo train`` needs besides its input files.

    Attributes:
        preset: The preset the defaults came from.
        segmenter: Segmenter settings.
        detector: Detector settings (used only for ``detcam``/``camcut`` proposals).
        class_field: Class column of the box layer.
        masks_fraction: With true masks (``--masks``), the share of scenes trained on them
            (None: all, full supervision; 0 < f < 1: semi supervision, the other scenes on
            proposals). Without masks it must be None or 0 (weak supervision from boxes).
        device: ``auto``, ``cpu`` or ``cuda``.
        devices: Devices (processes) for distributed training, per node.
        num_nodes: Machines in a multi-node run (Lightning's ``num_nodes``; the launcher,
            torchrun or SLURM, gives each its rank: see the README's "Scaling out").
        strategy: Lightning strategy (``auto``, ``ddp``, ...).
        precision: Lightning precision; ``auto``: 16-mixed on CUDA, 32 on CPU.
    """

    preset: str = "fast"
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    class_field: str = "class"
    masks_fraction: float | None = None
    device: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "auto"


_PAPER_SEGMENTER = SegmenterConfig(
    preset="paper",
    head=DEFAULT_HEADS["paper"],
    weights=None,
    tile_size=512,
    batch_size=20,
    optimizer="sgd",
    lr=0.007,
    warmup=0,
    weight_decay=1e-4,
    stage1_steps=50_000,
    stage2_steps=10_000,
    stage1_proposal="camcut",
    proposals=("grabcut", "detcam", "camcut"),
    loss="bmm",
    stage2_lr_scale=1.0,
    val_every=2_000,
    checkpoint_every=1_000,
    loader_workers=8,
    box_loss_weight=0.0,  # the paper has no box-consistency loss
)

_PAPER_DETECTOR = DetectorConfig(preset="paper", steps=20_000, batch_size=8, tile_size=512)


def preset_config(preset: str) -> TrainConfig:
    """The defaults of a preset.

    Raises:
        OptionError: An unknown preset; the message lists the valid ones.
    """
    if preset == "fast":
        return TrainConfig(preset="fast")
    if preset == "paper":
        return TrainConfig(preset="paper", segmenter=_PAPER_SEGMENTER, detector=_PAPER_DETECTOR)
    raise OptionError(f"unknown preset '{preset}'; choose from {', '.join(PRESETS)}")


def override(config: TrainConfig, **segmenter_values: object) -> TrainConfig:
    """A copy of ``config`` with the segmenter values that are not None replaced."""
    changes = {k: v for k, v in segmenter_values.items() if v is not None}
    return dataclasses.replace(config, segmenter=dataclasses.replace(config.segmenter, **changes))


def override_detector(config: TrainConfig, **detector_values: object) -> TrainConfig:
    """A copy of ``config`` with the detector values that are not None replaced."""
    changes = {k: v for k, v in detector_values.items() if v is not None}
    return dataclasses.replace(config, detector=dataclasses.replace(config.detector, **changes))


def config_dict(config: TrainConfig) -> dict:
    """JSON-ready form of a configuration (for the model card and the run's fingerprint)."""
    return dataclasses.asdict(config)
