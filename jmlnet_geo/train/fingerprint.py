"""Fingerprints of input files for the stage cache: by content, not by modification time.

A copy of the same scene (``cp`` without ``-p``, a re-synced share, a restored backup) gets a new
modification time but holds the same pixels, so it must not retrain anything; an edited file,
even one whose size and time were kept, must. Files are hashed in full with BLAKE2b (measured
0.78 GiB/s on one core of the development machine, a 2 GiB file in the page cache: seconds for a
multi-gigabyte scene, next to minutes of training), once per process for an unchanged (path,
size, modification time).

A stage's fingerprint (:func:`fingerprint`) is a short hash of the JSON of everything that
changes its result: file stamps, settings, other stages' fingerprints, array digests. The box
layer enters by what it gives the scenes (:func:`boxes_digest`), not by its file's bytes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Sequence

import numpy as np

_CHUNK = 8 << 20  # bytes read at a time


def file_digest(path: str | os.PathLike) -> str:
    """Hex BLAKE2b-128 digest of a file's bytes (memoised per path, size and mtime)."""
    st = os.stat(path)
    return _digest(os.path.abspath(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_stamps(paths: Sequence[str | os.PathLike]) -> list[list]:
    """``[absolute path, size in bytes, content digest]`` per file, for a stage fingerprint."""
    stamps = []
    for p in paths:
        path, st = os.path.abspath(p), os.stat(p)
        stamps.append([path, st.st_size, _digest(path, st.st_size, st.st_mtime_ns)])
    return stamps


def array_digest(array: np.ndarray) -> str:
    """Hex BLAKE2b-128 digest of an array's bytes (C order), dtype and shape, for a fingerprint."""
    data = np.ascontiguousarray(array)
    digest = hashlib.blake2b(f"{data.dtype.str}{data.shape}".encode(), digest_size=16)
    digest.update(data.tobytes())
    return digest.hexdigest()


def boxes_digest(scene_boxes: Sequence) -> list[str]:
    """Digests of what a box layer gives each scene, not of its file's bytes.

    Per :class:`jmlnet_geo.io.vector.SceneBoxes`: its pixel boxes, class ids and feature rows.
    The same features written again (a GeoPackage re-saved, a layer exported anew from QGIS)
    have other bytes and must not retrain anything.
    """
    return [array_digest(np.concatenate([np.asarray(sb.xyxy, np.float64).reshape(-1, 4),
                                         np.asarray(sb.class_ids, np.float64).reshape(-1, 1),
                                         np.asarray(sb.features, np.float64).reshape(-1, 1)],
                                        axis=1))
            for sb in scene_boxes]  # fmt: skip


def fingerprint(*parts: object) -> str:
    """16 hex digits of the SHA-256 of ``parts`` as JSON (keys sorted, unknown types as str)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
