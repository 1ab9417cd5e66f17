"""Writing outputs so that a crash never leaves a half-written file under the final name.

Every writer goes through :func:`atomic_output`: it writes to a hidden temporary name in the
destination folder and renames it into place only when the writer finished.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Iterator

import geopandas as gpd

from jmlnet_geo.errors import OutputError, display_path

#: Vector formats we write, by file extension (GDAL driver names).
VECTOR_DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON", ".fgb": "FlatGeobuf"}


def check_writable(path: str | os.PathLike[str]) -> None:
    """Raise :class:`OutputError` when ``path`` cannot be created or replaced."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    shown = display_path(path)
    if os.path.isdir(path):
        raise OutputError(f"{shown}: is a folder; give a file name for the output")
    if not os.path.isdir(folder):
        raise OutputError(f"{shown}: folder {display_path(folder)} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{shown}: folder {display_path(folder)} is not writable; choose another")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[str]:
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block succeeds.

    On any exception (Ctrl-C included) the temporary file is removed and ``path`` is untouched.

    Raises:
        OutputError: The destination cannot be written.
    """
    check_writable(path)
    folder, name = os.path.split(os.path.abspath(path))
    stem, suffix = os.path.splitext(name)
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".partial{suffix}", dir=folder)
    os.close(fd)
    os.remove(tmp)  # writers (GDAL) want to create the file themselves
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def check_vector_output(path: str | os.PathLike[str]) -> str:
    """The GDAL driver for a vector output path.

    Raises:
        OutputError: Unknown extension or unwritable destination.
    """
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    driver = VECTOR_DRIVERS.get(suffix)
    if driver is None:
        raise OutputError(
            f"{display_path(path)}: cannot write '{suffix or 'no extension'}'; "
            f"use one of {', '.join(sorted(VECTOR_DRIVERS))}"
        )
    check_writable(path)
    return driver


def write_vector(frame: gpd.GeoDataFrame, path: str | os.PathLike[str], layer: str) -> None:
    """Write a GeoDataFrame atomically; the format follows the extension (.gpkg, .geojson, .fgb).

    Raises:
        OutputError: Unknown extension or unwritable destination.
    """
    driver = check_vector_output(path)
    with atomic_output(path) as tmp, warnings.catch_warnings():
        # Layers for plain images have no CRS on purpose (pixel coordinates).
        warnings.filterwarnings("ignore", message=".*'crs' was not provided.*")
        frame.to_file(tmp, driver=driver, layer=layer if driver == "GPKG" else None)


def output_folder(path: str | os.PathLike[str], what: str = "the outputs") -> str:
    """Create ``path`` (and its parents) when missing and check that it is a writable folder.

    Raises:
        OutputError: ``path`` is a file, cannot be created, or is not writable.
    """
    shown = display_path(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputError(f"{shown}: is a file; give a folder for {what}")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{shown}: cannot create the folder ({err.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"{shown}: folder is not writable; choose another")
    return os.fspath(path)
