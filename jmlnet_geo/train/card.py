"""The bundle a ``jmlgeo train`` run ends with: the final weights and the model card."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jmlnet_geo.bundle import ModelCard, save_bundle
from jmlnet_geo.config import TrainConfig, config_dict
from jmlnet_geo.io.raster import Scene
from jmlnet_geo.io.vector import SceneBoxes
from jmlnet_geo.model_file import writer_versions
from jmlnet_geo.normalization import Normalization

#: How the input files are fingerprinted (the stage cache's digest; ``b2sum -l 128 FILE``).
DIGEST = "blake2b-128"


@dataclass
class RunRecord:
    """What a run did, beyond its configuration, for the card (format 2).

    Attributes:
        inputs: The run's input files (a ``pipeline.TrainInputs``).
        supervision: ``boxes``, ``semi`` or ``full``.
        mask_scenes: Paths of the scenes trained on true masks.
        stages: The stages' records (:func:`jmlnet_geo.train.stage.stage_summary`), in order.
        stage1_choice: The agreement choice of stage 1 (``Stage1Choice.as_dict``), or None.
        dropped: ``--drop-doubtful``'s summary (fraction, methods, boxes, dropped), or None.
    """

    inputs: Any
    supervision: str
    mask_scenes: set[str]
    stages: list[dict[str, Any]] = field(default_factory=list)
    stage1_choice: dict[str, Any] | None = None
    dropped: dict[str, Any] | None = None


def fingerprints(inputs: Any) -> dict[str, Any]:
    """Content digests of the scenes (in order), box layer, masks and truth (None when absent)."""
    from jmlnet_geo.train.fingerprint import file_digest

    def digest(path: Any) -> str | None:
        return None if path is None else file_digest(path)

    return {
        "algorithm": DIGEST,
        "scenes": [file_digest(p) for p in inputs.scenes],
        "boxes": digest(inputs.boxes),
        "masks": digest(inputs.masks),
        "truth": digest(inputs.truth),
    }


def write_bundle(
    path: Path,
    weights: Path,
    scenes: Sequence[Scene],
    scene_boxes: Sequence[SceneBoxes],
    names: Sequence[str],
    normalization: Normalization,
    config: TrainConfig,
    validation: dict[str, Any],
    record: RunRecord | None = None,
) -> None:
    """Write the bundle of a run: the final stage's weights and the model card.

    Args:
        path: The bundle file.
        weights: The finished stage's ``weights.safetensors``.
        scenes: The training scenes (the first one's bands, resolution and CRS units).
        scene_boxes: Their boxes (boxes per class).
        names: Class names of ids 1..K.
        normalization: Band standardisation of the scenes.
        config: The run's settings (written in full into the card).
        validation: The last validation scores.
        record: What the run did (supervision, stages, fingerprints); None: not recorded.
    """
    from safetensors.torch import load_file

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
        versions=writer_versions(),
        training_data={
            "scenes": [os.path.basename(s.path) for s in scenes],
            "boxes_per_class": counts,
            "pixels": int(sum(s.width * s.height for s in scenes)),
        },
        validation=dict(validation),
        seed=config.segmenter.seed,
    )
    if record is not None:
        truth = record.inputs.truth
        card.supervision = record.supervision
        card.stages = list(record.stages)
        card.stage1_choice = record.stage1_choice
        card.training_data |= {
            "boxes": os.path.basename(record.inputs.boxes),
            "masks": None if record.inputs.masks is None else os.path.basename(record.inputs.masks),
            "mask_scenes": [
                os.path.basename(s.path) for s in scenes if s.path in record.mask_scenes
            ],
            "fingerprints": fingerprints(record.inputs),
        }
        if record.dropped is not None:
            card.training_data["drop_doubtful"] = dict(record.dropped)
        if validation and truth is not None:
            card.validation["truth"] = os.path.basename(truth)
    save_bundle(path, load_file(weights), card)
