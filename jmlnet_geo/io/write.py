"""Writing outputs so that a crash never leaves a half-written file under the final name.

Every writer goes through :func:`atomic_output`: it writes to a hidden temporary name in the
destination folder and renames it into place only when the writer finished, with the mode the
user's umask gives (0644 usually). Temporary names carry the process id, so a later run removes
what a killed one left (:func:`remove_stale_partials`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence

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
    fd, tmp = tempfile.mkstemp(prefix=partial_prefix(stem), suffix=f".partial{suffix}", dir=folder)
    os.close(fd)
    os.remove(tmp)  # writers (GDAL) want to create the file themselves
    try:
        yield tmp
        if os.path.isfile(tmp):  # some writers (mkstemp, safetensors) create files 0600
            os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` atomically; an OSError (disk full) names ``path``."""
    with atomic_output(path) as tmp:
        try:
            with open(tmp, "wb") as file:
                file.write(data)
        except OSError as err:
            raise OSError(err.errno, err.strerror, os.fspath(path)) from err


def save_safetensors(
    path: str | os.PathLike[str], tensors: dict, metadata: dict[str, str] | None = None
) -> None:
    """``safetensors.torch.save_file`` to ``path``, atomically.

    safetensors reports a full disk as ``SafetensorError('... (os error 28)')``; it becomes an
    OSError naming ``path``, which the CLI shows as one line.
    """
    from safetensors.torch import save_file

    with atomic_output(path) as tmp:
        try:
            save_file(tensors, tmp, metadata=metadata)
        except Exception as err:
            found = re.search(r"os error (\d+)", str(err))
            if isinstance(err, OSError) or found is None:
                raise
            code = int(found.group(1))
            raise OSError(code, os.strerror(code), os.fspath(path)) from err


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: Temporary names of ours carry the writing process's id: ``.<stem>.jmlgeo-<pid>-...``.
_PARTIAL = re.compile(r"\.jmlgeo-(\d+)-")


def partial_prefix(stem: str) -> str:
    """Prefix of a temporary file or folder of this process for an output named ``stem``."""
    return f".{stem}.jmlgeo-{os.getpid()}-"


def remove_stale_partials(folder: str | os.PathLike[str], stem: str) -> list[str]:
    """Remove temporary outputs for ``stem`` left in ``folder`` by killed jmlgeo processes.

    Only names :func:`partial_prefix` made (``.<stem>[.<more>].jmlgeo-<pid>-...``) are touched,
    and only when process ``pid`` no longer runs on this machine; files of other programs and
    of runs still going are kept.

    Returns:
        The paths removed.
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _PARTIAL.search(entry.name)
        if not entry.name.startswith(f".{stem}.") or match is None:
            continue
        if _alive(int(match.group(1))):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.remove(entry.path)
            removed.append(entry.path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:  # a process that died and was not reaped yet (a zombie) answers kill(pid, 0) too
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


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


def write_vectors(items: Sequence[tuple[gpd.GeoDataFrame, str | os.PathLike[str], str]]) -> None:
    """Write several layers all or none: each to a temporary name, renamed only when all are.

    Args:
        items: ``(frame, path, layer)`` per output, as :func:`write_vector` takes them.

    Raises:
        OutputError: An unknown extension or unwritable destination (before anything is written).
    """
    drivers = [check_vector_output(path) for _, path, _ in items]
    with contextlib.ExitStack() as stack, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*'crs' was not provided.*")
        for (frame, path, layer), driver in zip(items, drivers, strict=True):
            tmp = stack.enter_context(atomic_output(path))
            frame.to_file(tmp, driver=driver, layer=layer if driver == "GPKG" else None)


def check_distinct_stems(
    paths: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str]
) -> None:
    """Refuse inputs whose outputs would share a name in ``out`` (``a/x.tif`` and ``b/x.tif``).

    Raises:
        OptionError: Two inputs with the same file stem; the message names both.
    """
    from jmlnet_geo.errors import OptionError

    seen: dict[str, str] = {}
    for path in paths:
        stem = os.path.splitext(os.path.basename(os.fspath(path)))[0]
        if stem in seen and os.path.abspath(seen[stem]) != os.path.abspath(path):
            raise OptionError(
                f"{display_path(seen[stem])} and {display_path(path)}: both would write "
                f"{stem}.* in {display_path(out)}; rename one or predict them into separate --out"
            )
        seen[stem] = os.fspath(path)
