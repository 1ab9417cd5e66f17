"""Errors users see.

Every error a user can cause is a :class:`JmlGeoError` whose message is one line: it names the
file and says what to do. The CLI prints that line without a traceback and exits non-zero.
Subclasses also inherit the builtin they refine, so library callers can catch either.
"""

from __future__ import annotations

import os


class JmlGeoError(Exception):
    """Base class of every user-facing error of jmlnet_geo."""


class InputFileError(JmlGeoError, FileNotFoundError):
    """An input file is missing or cannot be read in the format we expect."""


class BoxLayerError(JmlGeoError, ValueError):
    """A box layer cannot be used: no features, wrong geometries, or a missing class field."""


class CRSMismatchError(JmlGeoError, ValueError):
    """Boxes and a scene cannot be put in one coordinate system."""


class NoOverlapError(JmlGeoError, ValueError):
    """No box falls on any scene."""


class OutputError(JmlGeoError, OSError):
    """An output cannot be written where the user asked."""


class OptionError(JmlGeoError, ValueError):
    """An option has a value we do not know (e.g. an unknown method name)."""


class CancelledError(JmlGeoError):
    """The caller asked a long task to stop; nothing was written under a final name."""


def display_path(path: str | os.PathLike[str]) -> str:
    """Return ``path`` as users typed it (relative when under the working directory)."""
    text = os.fspath(path)
    try:
        rel = os.path.relpath(text)
    except ValueError:  # another drive on Windows
        return text
    return text if rel.startswith("..") else rel
