"""The detector file: a trained Faster R-CNN's tensors and its card, and how to load it.

``detector.safetensors`` is a model file (:mod:`jmlnet_geo.model_file`): the model's tensors plus
a JSON :class:`DetectorCard` in the header metadata (preset, classes, bands, normalisation, tile
size, how it was trained). Loading one never unpickles anything; Lightning's ``last.ckpt`` (a
pickle) only serves to resume training (:mod:`jmlnet_geo.train.detector`) and is refused here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from jmlnet_geo.errors import InputFileError, display_path
from jmlnet_geo.io.raster import Scene
from jmlnet_geo.model_file import FileKind, load_weights, read_model_file, save_model_file
from jmlnet_geo.normalization import Normalization

#: File name of the detector inside a training folder.
DETECTOR_FILE = "detector.safetensors"


class DetectorFileError(InputFileError):
    """A detector file is missing, not a jmlgeo detector, or does not fit the data."""


_REFUSED = (
    "not a jmlgeo detector file (detectors are safetensors files written by jmlgeo "
    "train-detector; pickles and checkpoints such as last.ckpt are refused)"
)
#: The detector file as a kind of model file.
DETECTOR = FileKind(
    format="jmlgeo-detector",
    card_key="jmlgeo_detector_card",
    error=DetectorFileError,
    missing=(
        "detector file not found; give the detector.safetensors that jmlgeo train-detector wrote"
    ),
    refused=_REFUSED,
    foreign=_REFUSED,
    unreadable="the detector's card is unreadable",
)


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


def save_detector(path: str | os.PathLike[str], model: nn.Module, card: DetectorCard) -> None:
    """Write a detector's tensors and card to one safetensors file, atomically.

    Args:
        path: The file (``detector.safetensors`` by convention).
        model: The detector (any device; tensors are copied to the CPU).
        card: Its card.
    """
    save_model_file(path, model.state_dict(), asdict(card), DETECTOR)


def read_detector_card(path: str | os.PathLike[str]) -> DetectorCard:
    """Read only the card of a detector file (cheap: no tensor is read).

    Raises:
        DetectorFileError: Missing file, a pickle or checkpoint, or not a jmlgeo detector.
    """
    return read_model_file(path, DETECTOR, DetectorCard, tensors=False)[1]


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

    state, card = read_model_file(path, DETECTOR, DetectorCard)
    model = build_detector(card.preset, card.num_classes, card.in_channels, weights=None)
    described = (
        f"a {card.preset} detector of {card.num_classes} classes and {card.in_channels} bands"
    )
    load_weights(model, state, display_path(path), described, DetectorFileError)
    return model.to(device).eval(), card


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
