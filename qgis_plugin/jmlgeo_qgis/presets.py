"""What the Train dialog says about the presets: their values, the losses, a duration estimate.

The plugin cannot import ``jmlnet_geo`` (see :mod:`.runner`), so the presets' values are copied
here; ``tests/test_qgis_runner.py`` checks them against ``jmlnet_geo.config``. Pure Python.
"""

from __future__ import annotations

#: Each preset's segmenter values the dialog shows as defaults.
PRESET_DEFAULTS: dict[str, dict[str, object]] = {
    "fast": {
        "stage1_steps": 200,
        "stage2_steps": 100,
        "batch_size": 8,
        "tile_size": 256,
        "proposals": ("grabcut",),
        "loss": "ce",
    },
    "paper": {
        "stage1_steps": 50_000,
        "stage2_steps": 10_000,
        "batch_size": 20,
        "tile_size": 512,
        "proposals": ("grabcut", "detcam", "camcut"),
        "loss": "bmm",
    },
}

#: Proposal methods ``jmlgeo train --proposals`` accepts (detcam/camcut train a detector first).
PROPOSALS = ("box", "crf", "grabcut", "detcam", "camcut")

#: One line of help per stage-2 loss (paper, section 3).
LOSS_HELP = {
    "ce": "cross-entropy against one proposal (the stage-1 loss; the fast preset's stage 2)",
    "ma": "multi-label average: the mean of the cross-entropies over all proposals",
    "mm": "multi-label minimum: per pixel, the lowest cross-entropy over the proposals",
    "bmm": "box-wise MM: MM inside boxes, background outside (the paper's best; its preset's)",
}

#: Seconds per training step and per pixel of a tile in a batch, measured on the sample: the
#: fast preset on 2 CPU cores ran 300 steps of 8 x 256² tiles in about 9.5 min (README).
_SECONDS_PER_PIXEL = {"cpu": 3.6e-6, "cuda": 1.2e-7}
_PRESET_COST = {"fast": 1.0, "paper": 4.0}  # ResNet-50 and DeepLab v3 against EfficientNet-Lite0
_SECONDS_PER_BOX = {"box": 0.001, "crf": 0.05, "grabcut": 0.05, "detcam": 0.05, "camcut": 0.08}
_DETECTOR_STEP = {"cpu": 3.0, "cuda": 0.15}  # seconds; detcam/camcut train the detector first
_DETECTOR_STEPS = {"fast": 300, "paper": 20_000}


def preset_value(preset: str, name: str) -> object:
    """A preset's value (the fast preset's for an unknown preset)."""
    return PRESET_DEFAULTS.get(preset, PRESET_DEFAULTS["fast"])[name]


def defaults_label(name: str) -> str:
    """``fast 200, paper 50000``: each preset's value of ``name``, for a parameter's label."""
    values = []
    for preset, defaults in PRESET_DEFAULTS.items():
        value = defaults[name]
        shown = ",".join(value) if isinstance(value, tuple) else str(value)
        values.append(f"{preset} {shown}")
    return ", ".join(values)


def estimate_seconds(
    preset: str,
    boxes: int,
    device: str = "cpu",
    *,
    stage1_steps: int | None = None,
    stage2_steps: int | None = None,
    batch_size: int | None = None,
    tile_size: int | None = None,
    proposals: tuple[str, ...] | list[str] | None = None,
) -> float:
    """A rough duration of ``jmlgeo train``: proposals per box, then the steps of both stages.

    ``device`` "auto" counts as a CPU (the safe side). Within a factor of two or three on the
    machines measured; the point is minutes against hours.
    """
    kind = "cuda" if device == "cuda" else "cpu"
    steps = (stage1_steps if stage1_steps is not None else preset_value(preset, "stage1_steps")) + (
        stage2_steps if stage2_steps is not None else preset_value(preset, "stage2_steps")
    )
    batch = batch_size or preset_value(preset, "batch_size")
    tile = tile_size or preset_value(preset, "tile_size")
    methods = tuple(proposals or preset_value(preset, "proposals"))
    per_step = _SECONDS_PER_PIXEL[kind] * _PRESET_COST.get(preset, 1.0) * batch * tile * tile
    seconds = steps * per_step
    seconds += max(boxes, 0) * sum(_SECONDS_PER_BOX.get(m, 0.05) for m in {"grabcut", *methods})
    if {"detcam", "camcut"} & set(methods):
        seconds += _DETECTOR_STEPS.get(preset, 300) * _DETECTOR_STEP[kind]
    return seconds + 20.0  # start-up: imports, reading, writing the bundle


def format_duration(seconds: float) -> str:
    """``about 12 min``, ``about 3 h 20 min``, ``under a minute``."""
    if seconds < 60:
        return "under a minute"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"about {minutes} min"
    hours, rest = divmod(minutes, 60)
    if hours >= 48:
        return f"about {round(hours / 24)} days"
    return f"about {hours} h {rest} min" if rest else f"about {hours} h"


__all__ = [
    "LOSS_HELP",
    "PRESET_DEFAULTS",
    "PROPOSALS",
    "defaults_label",
    "estimate_seconds",
    "format_duration",
    "preset_value",
]
