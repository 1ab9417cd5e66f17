"""Checks of a ``jmlgeo train`` configuration, and which scenes train on true masks."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from jmlnet_geo.config import AUTO, LOSS_NAMES, MODEL_PROPOSAL, TrainConfig, check_head
from jmlnet_geo.errors import InputFileError, OptionError, display_path
from jmlnet_geo.io.raster import BandStats, Scene, band_statistics
from jmlnet_geo.proposals.options import CLASSIC_METHODS, DETECTOR_METHODS
from jmlnet_geo.train.doubtful import BY as DROP_BY
from jmlnet_geo.train.doubtful import check_fraction
from jmlnet_geo.train.optim import check_optimizer

#: The name of true masks among the proposals (``--masks``).
MASK = "mask"


def check_config(config: TrainConfig) -> list[str]:
    """The proposal methods the run needs (true masks left out).

    Raises:
        OptionError: Unknown proposal, head, optimiser or loss names; bad DetCAM thresholds or
            detector steps (when a detector method is used); a masks fraction outside 0..1; a
            weight decay or box-loss weight that is negative or not finite.
    """
    seg = config.segmenter
    known = (*CLASSIC_METHODS, *DETECTOR_METHODS, MASK, MODEL_PROPOSAL)
    if seg.stage1_proposal == MODEL_PROPOSAL:
        raise OptionError(
            "--stage1-proposal model: stage 1 has no model to learn from yet; name a proposal "
            f"or {AUTO} (the model proposal is for stage 2)"
        )
    if seg.rounds < 1 or (seg.rounds > 1 and MODEL_PROPOSAL not in seg.proposals):
        raise OptionError(
            f"--rounds {seg.rounds}: give 1 or more; more than 1 refreshes the model proposal, "
            "so add model to --proposals"
        )
    wanted = [*([] if seg.stage1_proposal == AUTO else [seg.stage1_proposal]), *seg.proposals]
    unknown = [p for p in wanted if p not in known]
    if unknown:
        names = ", ".join(p for p in known if p != MASK)
        raise OptionError(f"unknown proposal '{unknown[0]}'; choose from {names} (stage 1: {AUTO})")
    check_head(seg.preset, seg.head)
    check_optimizer(seg.optimizer)
    if seg.loss not in LOSS_NAMES:
        raise OptionError(f"unknown loss '{seg.loss}'; choose from {', '.join(LOSS_NAMES)}")
    if any(p in DETECTOR_METHODS for p in wanted):
        from jmlnet_geo.proposals.detcam import check_thresholds

        check_thresholds(config.detector.tau_low, config.detector.tau_high)
        if config.detector.steps <= 0:
            raise OptionError(f"--detector-steps {config.detector.steps}: give at least 1")
    for flag, value, low in (
        ("--lr", seg.lr, 0.0),
        ("--detector-lr", config.detector.lr, 0.0),
        ("stage2_lr_scale", seg.stage2_lr_scale, 0.0),
    ):
        if not (math.isfinite(value) and value > low and value < 10.0):
            raise OptionError(f"{flag} {value}: give a finite learning rate in (0, 10)")
    for flag, value in (
        ("weight_decay", seg.weight_decay),
        ("--box-loss-weight", seg.box_loss_weight),
        ("--box-pairwise-weight", seg.box_pairwise_weight),
        ("--box-margin", seg.box_margin),
        ("--box-outside-weight", seg.box_outside_weight),
    ):
        if not (math.isfinite(value) and value >= 0):
            raise OptionError(f"{flag} {value}: give a finite value >= 0")
    check_fraction(seg.drop_doubtful)
    if seg.drop_doubtful_by not in DROP_BY:
        raise OptionError(
            f"--drop-doubtful-by {seg.drop_doubtful_by}: give one of {', '.join(DROP_BY)}"
        )
    fraction = config.masks_fraction
    if fraction is not None and not 0.0 <= fraction <= 1.0:
        raise OptionError(f"--masks-fraction {fraction:g}: give a value in 0..1")
    return [m for m in dict.fromkeys(wanted) if m not in (MASK, MODEL_PROPOSAL)]


def mask_scenes(scenes: Sequence[Scene], config: TrainConfig, have_masks: bool) -> set[str]:
    """Scenes trained on true masks: a seeded ``masks_fraction`` of them (all when None or 1).

    Returns:
        The paths of those scenes (empty without masks).

    Raises:
        OptionError: A fraction above 0 without masks; masks with a fraction of 0 (no scene
            would use them: validation masks go to ``--truth``); a fraction that rounds to no
            scene.
    """
    fraction = config.masks_fraction
    if not have_masks:
        if fraction:
            raise OptionError(
                f"--masks-fraction {fraction:g} needs --masks (the true masks to train on)"
            )
        return set()
    if fraction is None:
        fraction = 1.0
    if fraction == 0:
        raise OptionError(
            "--masks-fraction 0 with --masks: no scene would train on the masks; to validate "
            "on them give them as --truth instead of --masks"
        )
    count = round(fraction * len(scenes))
    if count == 0:
        raise OptionError(
            f"--masks-fraction {fraction:g} of {len(scenes)} scene(s) rounds to no scene; "
            "give more scenes (masks are mixed in per scene) or a larger fraction"
        )
    order = np.random.default_rng(config.segmenter.seed).permutation(len(scenes))
    return {scenes[i].path for i in sorted(order[:count])}


def supervision(masked: set[str], scenes: Sequence[Scene]) -> str:
    """``boxes`` (no scene on masks), ``full`` (every scene) or ``semi`` (some)."""
    if not masked:
        return "boxes"
    return "full" if len(masked) == len(scenes) else "semi"


def stage_labels(proposals: Sequence[str], scenes: Sequence[Scene], masked: set[str]) -> list[str]:
    """What a stage actually learns from: its proposals, then ``mask`` (each once).

    A proposal counts when some scene is not on masks; ``mask`` when some scene is.
    """
    used = [p for p in proposals if any(s.path not in masked for s in scenes)]
    return list(dict.fromkeys([*used, *([MASK] if masked else [])]))


def scenes_with_pixels(scenes: Sequence[Scene]) -> tuple[list[Scene], list[list[BandStats]]]:
    """The scenes that have valid pixels, with their band statistics; the others skipped.

    A scene whose every pixel is nodata, masked or not finite (NaN is nodata) would train a
    model on nothing (a loss of 0.0 at every step). With other scenes usable it is skipped with
    a warning naming it; alone (or all such) it is refused. Large scenes are judged on a
    decimated read (:func:`jmlnet_geo.io.raster.band_statistics`).

    Raises:
        InputFileError: No scene has a valid pixel; names them and what to check.
    """
    stats = [band_statistics(scene) for scene in scenes]
    empty = [i for i, st in enumerate(stats) if max(b.valid_fraction for b in st) == 0.0]
    if not empty:
        return list(scenes), stats
    names = ", ".join(display_path(scenes[i].path) for i in empty)
    nodata = {scenes[i].nodata for i in empty}
    declared = f" (nodata {', '.join(map(str, nodata))})" if nodata != {None} else ""
    if len(empty) == len(scenes):
        raise InputFileError(
            f"{names}: no valid pixel{declared}, every one is nodata, masked or NaN; nothing to "
            "train on: check the nodata value (gdal_edit.py -a_nodata / -unsetnodata) or the scene"
        )
    warnings.warn(
        f"{names}: no valid pixel{declared}, every one is nodata, masked or NaN; skipped",
        stacklevel=2,
    )
    keep = [i for i in range(len(scenes)) if i not in empty]
    return [scenes[i] for i in keep], [stats[i] for i in keep]
