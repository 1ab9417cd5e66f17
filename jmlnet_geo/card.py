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
    "FORMAT_VERSION",
    "validate_card",
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
        InputFileError: Missing file, not a safetensors file, not a jmlgeo bundle, or a card
            :func:`validate_card` refuses; the message names the file.
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
            validate_card(card, version, shown)
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


#: The newest bundle format version this jmlgeo reads (the writer's, :mod:`jmlnet_geo.model_file`).
FORMAT_VERSION = CARD_VERSION
#: Ranges of a card's sizes: a band count, a tile or window side in px, a class count.
MAX_BANDS = 1024
TILE_RANGE = (16, 16384)
MAX_CLASSES = 254  # class ids 1..K in uint8 rasters, 255 is nodata
_CARD_KEYS = ("classes", "bands", "normalization", "tile_size", "architecture")


def validate_card(card: Any, format_version: Any, shown: str) -> None:
    """Check a bundle's card for the ranges and agreements every reader relies on.

    Called where a card is read (:func:`read_card`, :func:`jmlnet_geo.bundle.load_bundle`),
    before any tensor is read or anything is allocated from the card's sizes.

    Args:
        card: The card as the JSON value stored in the bundle (a dict when sound).
        format_version: The header's ``format_version`` (a string; missing: None or "").
        shown: The bundle's path as shown to the user.

    Raises:
        InputFileError: One line naming the bundle and the first absurd or inconsistent field:
            a format version from the future, missing keys, no classes, 0 or too many bands,
            a normalisation whose length differs from the bands or whose std is 0, negative
            or not finite, a tile size or predict window outside 16..16384, a zero or negative
            resolution, an architecture whose class or band count contradicts the card.
    """

    def bad(what: str) -> InputFileError:
        return InputFileError(
            f"{shown}: the bundle's model card is not usable ({what}); retrain it or use the "
            "bundle jmlgeo train wrote"
        )

    version = str(format_version or "1")
    if not version.isdigit():
        raise bad(f"format_version {version!r} is not a number")
    if int(version) > FORMAT_VERSION:
        raise InputFileError(
            f"{shown}: bundle format version {version} is newer than this jmlgeo reads "
            f"({FORMAT_VERSION}); upgrade jmlnet_geo (pip install -U jmlnet-geo)"
        )
    if not isinstance(card, dict):
        raise bad("not a JSON object")
    missing = [k for k in _CARD_KEYS if k not in card]
    if missing:
        raise bad(f"missing {', '.join(missing)}")
    classes = card["classes"]
    if not isinstance(classes, list) or not classes or len(classes) > MAX_CLASSES:
        raise bad(f"classes must be a list of 1..{MAX_CLASSES} names")
    if not all(isinstance(c, str) and c for c in classes):
        raise bad("classes must be non-empty names")
    colours = card.get("colours")
    if colours is not None and (
        not isinstance(colours, list)
        or len(colours) != len(classes)
        or not all(_ints(c, 3, 0, 255) for c in colours)
    ):
        raise bad(f"colours must be {len(classes)} RGB triples of 0..255")
    bands = card["bands"]
    if not _int(bands, 1, MAX_BANDS):
        raise bad(f"bands {bands!r} must be 1..{MAX_BANDS}")
    names = card.get("band_names") or []
    if not isinstance(names, list) or (names and len(names) != bands):
        raise bad(f"band_names must name the {bands} bands")
    norm = card["normalization"]
    if not isinstance(norm, dict) or not {"mean", "std"} <= set(norm):
        raise bad("normalization must hold mean and std")
    for key in ("mean", "std"):
        values = norm[key]
        if not isinstance(values, list) or len(values) != bands:
            raise bad(f"normalization {key} must have one value per band ({bands})")
        if not all(_number(v) for v in values):
            raise bad(f"normalization {key} must be finite numbers")
    if not all(v > 0 for v in norm["std"]):
        raise bad("normalization std must be > 0 (a std of 0 divides by zero)")
    low, high = TILE_RANGE
    if not _int(card["tile_size"], low, high):
        raise bad(f"tile_size {card['tile_size']!r} must be {low}..{high} px")
    resolution = card.get("resolution")
    if resolution is not None and not (
        isinstance(resolution, list)
        and len(resolution) == 2
        and all(_number(r) and r > 0 for r in resolution)
    ):
        raise bad(f"resolution {resolution!r} must be two pixel sizes > 0")
    arch = card["architecture"]
    if not isinstance(arch, dict) or not isinstance(arch.get("preset"), str):
        raise bad("architecture must name its preset")
    if "num_classes" in arch and arch["num_classes"] != len(classes) + 1:
        raise bad(f"architecture num_classes {arch['num_classes']!r} != {len(classes)} classes + 1")
    if "in_channels" in arch and arch["in_channels"] != bands:
        raise bad(f"architecture in_channels {arch['in_channels']!r} != bands {bands}")
    for key in ("predict_window", "predict_overlap"):
        value = card.get(key, arch.get(key))
        if value is not None and not _int(value, 0 if key == "predict_overlap" else low, high):
            raise bad(f"{key} {value!r} must be an integer up to {high} px")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _ints(values: Any, count: int, low: int, high: int) -> bool:
    return (
        isinstance(values, list)
        and len(values) == count
        and all(_int(v, low, high) for v in values)
    )
