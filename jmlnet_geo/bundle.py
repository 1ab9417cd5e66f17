"""The bundle: one safetensors file holding a trained segmenter's weights and its model card.

The bundle is the contract between train, predict, the CLI, the QGIS plugin and ONNX export. It
is a plain safetensors file (a JSON header plus raw tensors), so loading one never unpickles
anything. The model card is JSON in the header's metadata under ``jmlgeo_model_card``:

- ``classes``: class names of ids 1..K; ``colours``: their RGB colours,
- ``bands``: band count and names; ``normalization``: per-band mean and std,
- ``tile_size``, ``resolution`` (pixel size and CRS units of the training scenes),
- ``architecture``: segmenter preset, ``num_classes`` (K + 1), ``in_channels``,
- ``config``: the full training configuration, ``versions``, ``training_data``, ``validation``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from jmlnet_geo.errors import InputFileError, display_path
from jmlnet_geo.io.write import atomic_output

FORMAT = "jmlgeo-bundle"
FORMAT_VERSION = 1
_CARD_KEY = "jmlgeo_model_card"


@dataclass
class ModelCard:
    """What a bundle says about its model (see the module docstring)."""

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
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        _CARD_KEY: json.dumps(asdict(card), sort_keys=True),
    }
    with atomic_output(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)


def load_bundle(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], ModelCard]:
    """Read a bundle without executing anything from the file.

    Returns:
        ``(state_dict, card)`` with CPU tensors.

    Raises:
        InputFileError: Missing file, or not a jmlgeo bundle (e.g. a pickle or a checkpoint).
    """
    from safetensors import SafetensorError, safe_open

    shown = display_path(path)
    if not os.path.isfile(path):
        raise InputFileError(f"{shown}: bundle not found; give the file jmlgeo train wrote")
    try:
        with safe_open(os.fspath(path), framework="pt") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != FORMAT or _CARD_KEY not in metadata:
                raise InputFileError(f"{shown}: a safetensors file but not a jmlgeo bundle")
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a dict
    except (SafetensorError, OSError, ValueError) as err:
        if isinstance(err, InputFileError):
            raise
        raise InputFileError(
            f"{shown}: not a jmlgeo bundle (bundles are safetensors files written by "
            "jmlgeo train; pickles and checkpoints are refused)"
        ) from None
    try:
        card = ModelCard(**json.loads(metadata[_CARD_KEY]))
    except (TypeError, ValueError) as err:
        raise InputFileError(f"{shown}: the bundle's model card is unreadable ({err})") from None
    return state, card


def build_model(card: ModelCard, state_dict: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    """The segmenter of a bundle, weights loaded, in eval mode on the CPU."""
    from jmlnet_geo.models.segmenter import build_segmenter

    arch = card.architecture
    head = arch.get("segmenter", "deeplabv3")
    model = build_segmenter(arch["preset"], card.num_classes, card.bands, weights=None, head=head)
    model.load_state_dict(state_dict)
    return model.eval()
