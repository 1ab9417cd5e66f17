"""The model file format: one safetensors file holding a model's tensors and a JSON card.

Both trained products use it: the segmenter bundle (:mod:`jmlnet_geo.bundle`) and the detector
file (:mod:`jmlnet_geo.detector_file`). A file is a plain safetensors file (a JSON header plus
raw tensors); its header metadata holds ``format`` (which product), ``format_version`` (the
kind's :attr:`FileKind.version`: files of versions 1..version are read, a newer or unknown one
is a one-line error) and the card as JSON under the kind's card key. The card is checked (the
kind's ``check``) before any tensor is read. Reading one never unpickles anything: pickles and
Lightning checkpoints are refused with a one-line error.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from jmlnet_geo import __version__
from jmlnet_geo.errors import InputFileError, JmlGeoError, display_path
from jmlnet_geo.io.write import save_safetensors

#: Format version of a kind that does not say otherwise (the detector file).
FORMAT_VERSION = 1

__all__ = ["FORMAT_VERSION", "FileKind", "load_weights", "read_model_file", "save_model_file"]
__all__ += ["code_commit", "writer_versions"]

Card = TypeVar("Card")


@dataclass(frozen=True)
class FileKind:
    """One kind of model file and the words its errors use.

    Attributes:
        format: The header's ``format`` value, e.g. ``jmlgeo-bundle``.
        card_key: Header metadata key of the JSON card.
        error: Exception class raised for a bad file (an :class:`InputFileError`).
        missing: Message (after the path) for a missing file.
        refused: Message for a file that is not this kind (a pickle, a checkpoint, ...).
        foreign: Message for a readable safetensors file without this kind's card.
        unreadable: Message for a card that is not valid JSON of the card's fields.
        version: The format version written; files of versions 1..version are read.
        check: ``check(card, shown, version)`` raises ``error`` (one line naming ``shown``)
            for a card out of its schema; called before any tensor is read.
    """

    format: str
    card_key: str
    error: type[InputFileError]
    missing: str
    refused: str
    foreign: str
    unreadable: str
    version: int = FORMAT_VERSION
    check: Callable[[dict[str, Any], str, int], None] | None = None


def save_model_file(
    path: str | os.PathLike[str],
    state_dict: Mapping[str, torch.Tensor],
    card: Mapping[str, Any],
    kind: FileKind,
) -> None:
    """Write tensors and a card to one safetensors file, atomically.

    Args:
        path: The file (any name; ``.safetensors`` by convention).
        state_dict: Name -> tensor (any device and dtype; copied to the CPU, contiguous).
        card: The card as a JSON-ready dict (``dataclasses.asdict`` of the kind's card).
        kind: Which product the file is.
    """
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    metadata = {
        "format": kind.format,
        "format_version": str(kind.version),
        kind.card_key: json.dumps(dict(card), sort_keys=True),
    }
    save_safetensors(path, tensors, metadata)


def read_model_file(
    path: str | os.PathLike[str], kind: FileKind, card_type: type[Card], tensors: bool = True
) -> tuple[dict[str, torch.Tensor], Card]:
    """Read a model file without executing anything from it.

    Args:
        path: The file.
        kind: Which product it must be.
        card_type: The card's dataclass, built from the card's JSON fields.
        tensors: Read the tensors too (False: only the card, cheap).

    Returns:
        ``(state_dict, card)``: CPU tensors (empty when ``tensors`` is False) and the card.

    Raises:
        InputFileError: ``kind.error``: missing file, a pickle or checkpoint, another kind of
            file, or an unreadable card.
    """
    from safetensors import SafetensorError, safe_open

    shown = display_path(path)
    if not os.path.isfile(path):
        raise kind.error(f"{shown}: {kind.missing}")
    try:
        with safe_open(os.fspath(path), framework="pt") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != kind.format or kind.card_key not in metadata:
                raise kind.error(f"{shown}: {kind.foreign}")
            fields = read_card_fields(metadata, kind, shown)
            card = card_type(**fields)
            state = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, TypeError) as err:
        if isinstance(err, JmlGeoError):
            raise
        if isinstance(err, TypeError):  # fields the card type does not have
            raise kind.error(f"{shown}: {kind.unreadable} ({err})") from None
        raise kind.error(f"{shown}: {kind.refused}") from None
    return state, card


def read_card_fields(metadata: Mapping[str, str], kind: FileKind, shown: str) -> dict[str, Any]:
    """The card of a file's header metadata as a JSON dict: version and schema checked.

    Raises:
        InputFileError: ``kind.error``: an unreadable version, card JSON or card schema.
    """
    from jmlnet_geo.card import check_format_version

    version = check_format_version(metadata.get("format_version"), kind.version, shown, kind.error)
    try:
        card = json.loads(metadata[kind.card_key])
    except ValueError as err:
        raise kind.error(f"{shown}: {kind.unreadable} ({err})") from None
    if not isinstance(card, dict):
        raise kind.error(f"{shown}: {kind.unreadable} (not a JSON object)")
    if kind.check is not None:
        kind.check(card, shown, version)
    return card


def load_weights(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: str,
    architecture: str,
    error: type[InputFileError] = InputFileError,
) -> nn.Module:
    """Load a state dict into a model, strictly; a mismatch is a one-line error.

    Args:
        model: The freshly built model.
        state_dict: Its tensors (from a model file or a stage's weights).
        source: What the tensors came from, as shown to the user (a path or "the bundle").
        architecture: What the model is, e.g. "a fast detector of 2 classes and 3 bands".
        error: The exception class to raise.

    Returns:
        ``model``, weights loaded.

    Raises:
        InputFileError: ``error``: missing, unexpected or mis-shaped tensors.
    """
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise error(
            f"{source}: its tensors do not fit {architecture} ({first}); retrain it"
        ) from None
    return model


def writer_versions() -> dict[str, str | None]:
    """Versions of the packages that write a model file (for its card).

    python, torch, torchvision, torchgeo, rasterio and its GDAL, lightning, jmlnet_geo, and
    ``jmlnet_geo_commit``: the git commit of the jmlnet_geo checkout (``+dirty`` with local
    changes), None when it is not a git checkout (an installed wheel) or git is absent.
    """
    from importlib import metadata

    import rasterio
    import torchvision

    def installed(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {
        "jmlnet_geo": __version__,
        "jmlnet_geo_commit": code_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "torchgeo": installed("torchgeo"),
        "lightning": installed("lightning"),
        "rasterio": rasterio.__version__,
        "gdal": rasterio.__gdal_version__,
    }


def code_commit() -> str | None:
    """The commit of the checkout this package runs from (``+dirty`` when edited), or None."""
    import subprocess

    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(
            ["git", "-C", here, "rev-parse", "--show-toplevel", "HEAD"],
            capture_output=True, text=True, timeout=5,
        )  # fmt: skip
        lines = commit.stdout.split()
        # a git repository that merely contains an installed copy is not jmlnet_geo's own
        if commit.returncode != 0 or len(lines) != 2:
            return None
        if os.path.realpath(os.path.join(lines[0], "jmlnet_geo")) != os.path.realpath(here):
            return None
        dirty = subprocess.run(
            ["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return lines[1] + ("+dirty" if dirty.stdout.strip() else "")
