"""The bundle: one safetensors file holding a trained segmenter's weights and its model card.

The bundle is the contract between train, predict, the CLI, the QGIS plugin and ONNX export. It
is a model file (:mod:`jmlnet_geo.model_file`): a plain safetensors file (a JSON header plus raw
tensors), so loading one never unpickles anything. The model card is JSON in the header's
metadata under ``jmlgeo_model_card``:

- ``classes``: class names of ids 1..K; ``colours``: their RGB colours,
- ``bands``: band count and names; ``normalization``: per-band mean and std,
- ``tile_size``, ``resolution`` (pixel size and CRS units of the training scenes),
- ``architecture``: segmenter preset, ``num_classes`` (K + 1), ``in_channels``,
- ``config``: the full training configuration, ``versions``, ``training_data``, ``validation``,
- format 2 (:data:`jmlnet_geo.card.CARD_VERSION`): what the run did: ``supervision``,
  ``stages``, ``stage1_choice``, ``seed``, ``predict_window`` / ``predict_overlap``.

Format-1 bundles load (the new fields take their defaults); a newer or unknown format version,
or a card out of its schema (:func:`jmlnet_geo.card.check_card`), is a one-line error naming
the file, raised before any tensor is read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from jmlnet_geo.card import CARD_VERSION, check_card, validate_card
from jmlnet_geo.errors import InputFileError
from jmlnet_geo.model_file import FileKind, load_weights, read_model_file, save_model_file


def check_bundle_card(card: dict[str, Any], shown: str, version: int) -> None:
    """Check a card against its schema (:func:`check_card`) and ranges (:func:`validate_card`)."""
    check_card(card, shown, version)
    validate_card(card, version, shown)


#: The bundle as a kind of model file (:mod:`jmlnet_geo.model_file`).
BUNDLE = FileKind(
    format="jmlgeo-bundle",
    card_key="jmlgeo_model_card",
    error=InputFileError,
    missing="bundle not found; give the file jmlgeo train wrote",
    refused=(
        "not a jmlgeo bundle (bundles are safetensors files written by jmlgeo train; pickles "
        "and checkpoints are refused)"
    ),
    foreign="a safetensors file but not a jmlgeo bundle",
    unreadable="the bundle's model card is unreadable",
    version=CARD_VERSION,
    check=check_bundle_card,
)


@dataclass
class ModelCard:
    """What a bundle says about its model (see the module docstring).

    Format-2 attributes (None or empty in a format-1 card):
        supervision: ``boxes`` (weak), ``semi`` (some scenes on true masks) or ``full``.
        stages: One dict per training stage, in order: ``name``, ``labels`` (proposal names
            and/or ``mask``: what it actually learnt from), ``loss``, ``steps`` (run),
            ``wall_time_s``, ``final_loss``, ``device``, ``threads``, ``lr``, ``validation``,
            ``reused`` (a finished stage of an earlier run, its record from ``run.json``).
        stage1_choice: ``{"proposal", "by_agreement", "agreement": [...]}`` when stage 1's
            proposal was chosen by agreement (``--stage1-proposal auto``).
        seed: The run's seed.
        predict_window: Recommended prediction window, px (None: planned by ``predict``).
        predict_overlap: Recommended overlap, px (None: planned by ``predict``).
    """

    classes: list[str]
    colours: list[list[int]]
    bands: int
    band_names: list[str]
    normalization: dict[str, list[float]]
    tile_size: int
    resolution: list[float] | None
    crs_units: str | None
    architecture: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    training_data: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    supervision: str | None = None
    stages: list[dict[str, Any]] = field(default_factory=list)
    stage1_choice: dict[str, Any] | None = None
    seed: int | None = None
    predict_window: int | None = None
    predict_overlap: int | None = None

    @property
    def num_classes(self) -> int:
        """K + 1: background and the classes."""
        return len(self.classes) + 1


def save_bundle(
    path: str | os.PathLike[str], state_dict: Mapping[str, torch.Tensor], card: ModelCard
) -> None:
    """Write weights and card to one safetensors file, atomically.

    Args:
        path: The bundle file (``.safetensors`` by convention; any name works).
        state_dict: The segmenter's weights (``model.state_dict()``).
        card: Its model card.
    """
    save_model_file(path, state_dict, asdict(card), BUNDLE)


def load_bundle(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], ModelCard]:
    """Read a bundle without executing anything from the file.

    Returns:
        ``(state_dict, card)`` with CPU tensors.

    Raises:
        InputFileError: Missing file, not a jmlgeo bundle (e.g. a pickle or a checkpoint), or
            a card :func:`jmlnet_geo.card.validate_card` refuses (checked before the tensors).
    """
    return read_model_file(path, BUNDLE, ModelCard)


def build_model(card: ModelCard, state_dict: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    """The segmenter of a bundle, weights loaded, in eval mode on the CPU.

    Raises:
        InputFileError: The tensors do not fit the card's architecture.
    """
    from jmlnet_geo.models.segmenter import build_segmenter

    arch = card.architecture
    head = arch.get("segmenter", "deeplabv3")
    model = build_segmenter(arch["preset"], card.num_classes, card.bands, weights=None, head=head)
    described = f"a {arch['preset']} {head} of {card.num_classes} classes and {card.bands} bands"
    return load_weights(model, state_dict, "the bundle", described).eval()


def untrained_bundle(
    path: str | os.PathLike[str],
    classes: list[str],
    colours: list[list[int]],
    normalization: dict[str, list[float]],
    tile_size: int,
    resolution: float | None = None,
    band_names: list[str] | None = None,
    preset: str = "fast",
    seed: int = 0,
) -> ModelCard:
    """Write a bundle of a randomly initialised segmenter (no pretrained weights, no training).

    For tests and benchmarks of prediction, whose cost and memory do not depend on the weights.

    Args:
        path: The bundle file to write.
        classes: Class names of ids 1..K.
        colours: Their RGB colours (K lists of 3 ints).
        normalization: ``{"mean": [...], "std": [...]}``, one value per band (gives the band
            count).
        tile_size: The card's tile side in pixels.
        resolution: Pixel size in metres (square pixels), or None for plain images.
        band_names: One per band (default ``b0``, ``b1``, ...).
        preset: Segmenter preset (``deeplabv3plus`` head).
        seed: torch seed of the initialisation.

    Returns:
        The card written.
    """
    from jmlnet_geo.models.segmenter import build_segmenter

    bands = len(normalization["mean"])
    torch.manual_seed(seed)
    model = build_segmenter(preset, len(classes) + 1, bands, weights=None, head="deeplabv3plus")
    card = ModelCard(
        classes=list(classes),
        colours=[list(c) for c in colours],
        bands=bands,
        band_names=list(band_names or [f"b{i}" for i in range(bands)]),
        normalization={k: list(v) for k, v in normalization.items()},
        tile_size=tile_size,
        resolution=None if resolution is None else [resolution, resolution],
        crs_units=None if resolution is None else "metre",
        architecture={
            "segmenter": "deeplabv3plus",
            "preset": preset,
            "num_classes": len(classes) + 1,
            "in_channels": bands,
        },
    )
    save_bundle(path, model.state_dict(), card)
    return card
