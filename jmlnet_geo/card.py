"""A bundle's model card and tensor shapes, read from the safetensors header alone.

For what describes a bundle without running it (``jmlgeo info BUNDLE``, the STAC model item):
no tensor is read and neither torch nor the model is imported, so it is instant on any size of
bundle. For the weights, use :func:`jmlnet_geo.bundle.load_bundle`.

The card is returned as the JSON dict the bundle holds (every key the writer put there, including
keys that a newer jmlgeo added and this one does not know), with the same checks as
:func:`~jmlnet_geo.bundle.load_bundle`: the file must be a safetensors file whose metadata says
``format: jmlgeo-bundle`` and holds the card.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from jmlnet_geo.errors import InputFileError, display_path

__all__ = ["CARD_KEY", "FORMAT", "BundleHeader", "looks_like_bundle", "read_card"]

#: Metadata keys of a bundle (the same as :mod:`jmlnet_geo.bundle` writes; a test checks it).
FORMAT = "jmlgeo-bundle"
CARD_KEY = "jmlgeo_model_card"

#: Tensor names that end like this are buffers (batch-norm statistics), not parameters.
_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


@dataclass(frozen=True)
class BundleHeader:
    """What the header of a bundle says.

    Attributes:
        path: The bundle file.
        card: The model card, as the JSON dict stored in the bundle.
        format_version: The bundle format version written in the metadata (a string).
        tensors: Tensor name -> shape.
        size_bytes: Size of the file.
    """

    path: str
    card: dict[str, Any]
    format_version: str
    tensors: dict[str, tuple[int, ...]] = field(default_factory=dict)
    size_bytes: int = 0

    @property
    def total_parameters(self) -> int:
        """Number of trainable values (tensors other than batch-norm buffers)."""
        return sum(
            math.prod(shape)
            for name, shape in self.tensors.items()
            if not name.endswith(_BUFFER_SUFFIXES)
        )


def read_card(path: str | os.PathLike[str]) -> BundleHeader:
    """Read a bundle's card and tensor shapes without loading the weights.

    Args:
        path: The bundle (``.safetensors``) written by ``jmlgeo train``.

    Returns:
        The header.

    Raises:
        InputFileError: Missing file, not a safetensors file, or not a jmlgeo bundle; the
            message names the file.
    """
    from safetensors import SafetensorError, safe_open

    shown = display_path(path)
    if not os.path.isfile(path):
        raise InputFileError(f"{shown}: bundle not found; give the file jmlgeo train wrote")
    try:
        with safe_open(os.fspath(path), framework="numpy") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != FORMAT or CARD_KEY not in metadata:
                raise InputFileError(f"{shown}: a safetensors file but not a jmlgeo bundle")
            tensors = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as err:
        if isinstance(err, InputFileError):
            raise
        raise InputFileError(
            f"{shown}: not a jmlgeo bundle (bundles are safetensors files written by "
            "jmlgeo train; pickles and checkpoints are refused)"
        ) from None
    try:
        card = json.loads(metadata[CARD_KEY])
    except ValueError as err:
        raise InputFileError(f"{shown}: the bundle's model card is unreadable ({err})") from None
    if not isinstance(card, dict):
        raise InputFileError(f"{shown}: the bundle's model card is not a JSON object")
    return BundleHeader(
        path=os.fspath(path),
        card=card,
        format_version=str(metadata.get("format_version", "")),
        tensors=tensors,
        size_bytes=os.path.getsize(path),
    )


def looks_like_bundle(path: str | os.PathLike[str]) -> bool:
    """True for a ``.safetensors`` name or a file that starts like a safetensors header.

    Only the name and the first 9 bytes are looked at: a scene never starts that way, so
    ``jmlgeo info`` can tell bundles from scenes before opening either.
    """
    if os.fspath(path).lower().endswith(".safetensors"):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 30
