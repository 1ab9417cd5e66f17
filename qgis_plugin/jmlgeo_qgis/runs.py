"""Where runs go: a persistent runs folder with one sub-folder per run, named for people.

QGIS deletes its temporary folder when it closes, and a model that took an hour to train must
not go with it. A run the user does not place gets ``<runs folder>/<kind>-<scenes>-<time>``
(``train-scene-20240131-154200``); *Resume* takes the newest such folder of the same kind and
scenes. Pure Python with no QGIS import (the folder itself comes from :mod:`.settings`).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from pathlib import Path

#: The runs folder when neither the setting nor a saved project says otherwise.
DEFAULT_RUNS_FOLDER = "~/jmlgeo-runs"

#: The runs folder's name beside a saved project file.
PROJECT_RUNS_FOLDER = "jmlgeo-runs"

#: Values of a folder destination that mean "not chosen": a new folder in the runs folder.
UNCHOSEN = frozenset({"", "TEMPORARY_OUTPUT"})

_TIME = "%Y%m%d-%H%M%S"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_STAMP = re.compile(r"\d{8}-\d{6}(-\d+)?")


def slug(text: str, limit: int = 40) -> str:
    """``text`` as a file-name part: letters, digits, ``.``, ``_``, ``-``; at most ``limit``."""
    cleaned = _UNSAFE.sub("-", text).strip("-.") or "run"
    return cleaned[:limit].rstrip("-.")


def scenes_label(scenes: Sequence[str | os.PathLike[str]]) -> str:
    """The first scene's name, and how many more: ``scene``, ``a+2``."""
    if not scenes:
        return "run"
    first = slug(Path(os.fspath(scenes[0])).stem)
    return first if len(scenes) == 1 else f"{first}+{len(scenes) - 1}"


def run_prefix(kind: str, scenes: Sequence[str | os.PathLike[str]]) -> str:
    """The start of the folder names of a kind of run over these scenes (``train-scene-``)."""
    return f"{slug(kind)}-{scenes_label(scenes)}-"


def new_run_folder(
    base: str | os.PathLike[str],
    kind: str,
    scenes: Sequence[str | os.PathLike[str]],
    when: float | None = None,
) -> Path:
    """A folder name in ``base`` for a new run, not yet taken (not created here)."""
    stamp = time.strftime(_TIME, time.localtime(time.time() if when is None else when))
    folder = Path(base) / f"{run_prefix(kind, scenes)}{stamp}"
    candidate, n = folder, 2
    while candidate.exists():
        candidate, n = folder.with_name(f"{folder.name}-{n}"), n + 1
    return candidate


def latest_run_folder(
    base: str | os.PathLike[str], kind: str, scenes: Sequence[str | os.PathLike[str]]
) -> Path | None:
    """The newest run folder in ``base`` of this kind over these scenes, or None."""
    prefix = run_prefix(kind, scenes)
    try:
        found = [
            p
            for p in Path(base).iterdir()
            if p.name.startswith(prefix) and _STAMP.fullmatch(p.name[len(prefix) :]) and p.is_dir()
        ]
    except OSError:
        return None
    return max(found, key=lambda p: (p.stat().st_mtime, p.name), default=None)


def is_unchosen(value: object) -> bool:
    """Whether a folder destination's value means "not chosen" (empty or temporary)."""
    return value is None or str(value).strip() in UNCHOSEN


def resolve_run_folder(
    chosen: object,
    base: str | os.PathLike[str],
    kind: str,
    scenes: Sequence[str | os.PathLike[str]],
    *,
    resume: bool = False,
    when: float | None = None,
) -> Path:
    """The folder of a run: the one chosen, else a new one (or, to resume, the last) in ``base``.

    ``chosen`` equal to ``base`` counts as not chosen: the dialog shows the runs folder as the
    default, and each run still gets its own folder inside it. ``base`` is created here.
    """
    base = Path(os.path.expanduser(os.fspath(base)))
    if not is_unchosen(chosen):
        path = Path(os.path.expanduser(str(chosen).strip()))
        if path.resolve() != base.resolve():
            return path
    base.mkdir(parents=True, exist_ok=True)
    if resume:
        latest = latest_run_folder(base, kind, scenes)
        if latest is not None:
            return latest
    return new_run_folder(base, kind, scenes, when)


def bundle_name(bundle: str | os.PathLike[str]) -> str:
    """What to call a bundle in layer names: its run folder for ``model.safetensors``."""
    path = Path(os.fspath(bundle))
    if path.stem == "model" and path.parent.name:
        return path.parent.name
    return path.stem


__all__ = [
    "DEFAULT_RUNS_FOLDER",
    "PROJECT_RUNS_FOLDER",
    "bundle_name",
    "is_unchosen",
    "latest_run_folder",
    "new_run_folder",
    "resolve_run_folder",
    "run_prefix",
    "scenes_label",
    "slug",
]
