"""A bundle's model card and tensor shapes, read from the safetensors header alone.

For what describes a bundle without running it (``jmlgeo info BUNDLE``, the STAC model item):
no tensor is read and neither torch nor the model is imported, so it is instant on any size of
bundle. For the weights, use :func:`jmlnet_geo.bundle.load_bundle`.

The card is returned as the JSON dict the bundle holds (every key the writer put there), with
the same checks as :func:`~jmlnet_geo.bundle.load_bundle`: the file must be a safetensors file
whose metadata says ``format: jmlgeo-bundle``, of a format version this jmlgeo reads
(:data:`CARD_VERSION`: 1, the first bundles, or 2, which adds what the run did), and hold a card
that passes :func:`check_card` (schema ``jmlnet_geo/schemas/jmlgeo-card.json`` and cross-field
rules).

Format versions: 1 (up to issue 25): classes, colours, bands, band_names, normalization,
tile_size, resolution, crs_units, architecture, config, versions, training_data, validation.
2 adds ``supervision`` (``boxes``, ``semi``, ``full``), ``stages`` (what each training stage
did), ``stage1_choice`` (the proposal agreement table, when computed), ``seed``,
``predict_window`` / ``predict_overlap`` (recommended tiling; None: planned at predict time),
and in ``training_data`` the scenes on masks and the input files' fingerprints. A version-1
card reads as a version-2 one with those fields absent.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from jmlnet_geo.errors import InputFileError, display_path

__all__ = [
    "CARD_KEY",
    "CARD_VERSION",
    "FORMAT",
    "BundleHeader",
    "check_card",
    "check_format_version",
    "looks_like_bundle",
    "read_card",
]

#: Metadata keys of a bundle (the same as :mod:`jmlnet_geo.bundle` writes; a test checks it).
FORMAT = "jmlgeo-bundle"
CARD_KEY = "jmlgeo_model_card"
#: The bundle format version this jmlgeo writes; it reads 1..CARD_VERSION.
CARD_VERSION = 2
_SCHEMA = "jmlgeo-card.json"

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
            version = check_format_version(metadata.get("format_version"), CARD_VERSION, shown)
            try:
                card = json.loads(metadata[CARD_KEY])
            except ValueError as err:
                raise InputFileError(
                    f"{shown}: the bundle's model card is unreadable ({err})"
                ) from None
            if not isinstance(card, dict):
                raise InputFileError(f"{shown}: the bundle's model card is not a JSON object")
            check_card(card, shown, version)
            tensors = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as err:
        if isinstance(err, InputFileError):
            raise
        raise InputFileError(
            f"{shown}: not a jmlgeo bundle (bundles are safetensors files written by "
            "jmlgeo train; pickles and checkpoints are refused)"
        ) from None
    return BundleHeader(
        path=os.fspath(path),
        card=card,
        format_version=str(metadata.get("format_version", "")),
        tensors=tensors,
        size_bytes=os.path.getsize(path),
    )


def check_format_version(
    text: str | None, newest: int, shown: str, error: type[InputFileError] = InputFileError
) -> int:
    """A model file's ``format_version`` (1 when not written), checked to be one that is read.

    Args:
        text: The header's ``format_version`` value.
        newest: The newest version this jmlgeo reads (versions 1..newest are read).
        shown: The file, as shown in messages.
        error: The exception class to raise.

    Raises:
        InputFileError: ``error``: a version newer than ``newest``, or not a positive integer.
    """
    text = "1" if text is None else text
    try:
        version = int(text)
    except ValueError:
        version = 0
    if version > newest:
        raise error(
            f"{shown}: format version {text} is newer than this jmlgeo reads (1 to {newest}); "
            "upgrade jmlnet_geo to use it"
        )
    if version < 1:
        raise error(
            f"{shown}: unknown format version {text!r} (this jmlgeo reads 1 to {newest}); "
            "retrain it with jmlgeo train"
        )
    return version


@functools.lru_cache(maxsize=1)
def _schema() -> dict[str, Any]:
    folder = importlib.resources.files("jmlnet_geo.schemas")
    return json.loads(folder.joinpath(_SCHEMA).read_text(encoding="utf-8"))


def check_card(card: dict[str, Any], shown: str, version: int = CARD_VERSION) -> None:
    """Check a card against its schema and cross-field rules, before anything is allocated.

    Args:
        card: The card's JSON dict.
        shown: The bundle, as shown in messages.
        version: Its format version (1 and 2 share the schema; 2's fields are optional).

    Raises:
        InputFileError: The first rule broken, one line naming ``shown`` and the field.
    """
    from jsonschema import Draft7Validator
    from jsonschema.exceptions import best_match

    def fail(where: str, what: str) -> None:
        raise InputFileError(
            f"{shown}: model card (format {version}) {where}: {what}; the file is damaged or "
            "was edited: retrain it with jmlgeo train"
        )

    error = best_match(Draft7Validator(_schema()).iter_errors(card))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "top level"
        message = error.message if len(error.message) <= 100 else error.message[:97] + "..."
        fail(where, message)
    bands, norm, arch = card["bands"], card["normalization"], card["architecture"]
    for key in ("mean", "std"):
        values = norm[key]
        if len(values) != bands:
            fail(f"normalization.{key}", f"{len(values)} value(s) for {bands} band(s)")
        if not all(math.isfinite(v) for v in values):
            fail(f"normalization.{key}", "not every value is finite")
    if card["band_names"] and len(card["band_names"]) != bands:
        fail("band_names", f"{len(card['band_names'])} name(s) for {bands} band(s)")
    if arch["in_channels"] != bands:
        fail("architecture.in_channels", f"{arch['in_channels']} for {bands} band(s)")
    if arch["num_classes"] != len(card["classes"]) + 1:
        fail("architecture.num_classes", f"{arch['num_classes']} for {len(card['classes'])} "
             "class(es) and background")  # fmt: skip
    if card["colours"] and len(card["colours"]) != len(card["classes"]):
        fail("colours", f"{len(card['colours'])} colour(s) for {len(card['classes'])} class(es)")
    window, overlap = card.get("predict_window"), card.get("predict_overlap")
    if window is not None and overlap is not None and overlap >= window:
        fail("predict_overlap", f"{overlap} is not smaller than predict_window {window}")


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
