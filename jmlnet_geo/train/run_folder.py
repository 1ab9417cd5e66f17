"""Run folders: ``run.json`` with one fingerprint and state per stage, and the rules for reuse.

One scheme for every training folder. ``run.json`` holds ``{"stages": {name: {"fingerprint": ...,
"done": bool, ...}}}``; a stage is *finished* when done with the fingerprint of its inputs now
(:func:`jmlnet_geo.train.fingerprint.fingerprint`), *interrupted* when started with it and not
done. :class:`RunState` is the file; :class:`RunFolder` adds the ``jmlgeo train`` rules (refuse a
folder of another run unless resuming or forcing; DDP children wait for rank 0).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from jmlnet_geo.errors import JmlGeoError, OutputError, display_path
from jmlnet_geo.io.write import atomic_output, output_folder

#: Name of the state file in a run folder.
STATE_FILE = "run.json"


class RunFolderError(JmlGeoError, ValueError):
    """The run folder holds another run, or an interrupted one, and no --resume/--force."""


def is_primary_process() -> bool:
    """False in the extra processes of distributed training (they must not write)."""
    for variable in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"):
        if int(os.environ.get(variable, "0") or 0) != 0:
            return False
    return True


def read_state(path: Path) -> dict[str, Any]:
    """The content of a ``run.json``.

    Raises:
        RunFolderError: The file is not the JSON ``jmlgeo train`` writes; the message says how
            to start over.
    """
    try:
        state = json.loads(Path(path).read_bytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        state = err
    if not isinstance(state, dict) or not isinstance(state.get("stages"), dict):
        raise RunFolderError(
            f"{display_path(path)}: corrupt run state ({str(state)[:60]}); pass --force to "
            "start the run over (or delete the folder)"
        )
    return state


class RunState:
    """The ``run.json`` of a folder: a fingerprint and state per stage (read when created).

    Attributes:
        path: The folder.
        state: ``{"stages": {name: entry}}`` as last read or written.
    """

    def __init__(self, path: Path) -> None:
        """Read ``path/run.json`` when it exists (an empty state otherwise)."""
        self.path = Path(path)
        self.state: dict[str, Any] = {"stages": {}}
        if (self.path / STATE_FILE).exists():
            self.state = read_state(self.path / STATE_FILE)

    def entry(self, stage: str) -> dict[str, Any]:
        """The recorded entry of ``stage`` (empty when none)."""
        return self.state["stages"].get(stage, {})

    def finished(self, stage: str, fp: str) -> bool:
        """Whether ``run.json`` on disk (re-read) records ``stage`` done with this fingerprint."""
        state_file = self.path / STATE_FILE
        if state_file.exists():
            self.state = read_state(state_file)
        entry = self.entry(stage)
        return entry.get("fingerprint") == fp and bool(entry.get("done"))

    def interrupted(self, stage: str, fp: str) -> bool:
        """Whether ``stage`` was started with this fingerprint and did not finish."""
        entry = self.entry(stage)
        return entry.get("fingerprint") == fp and not entry.get("done")

    def start(self, stage: str, fp: str, **extra: Any) -> None:
        """Record that ``stage`` starts with this fingerprint (what a later resume compares)."""
        self._record(stage, {"fingerprint": fp, "done": False, **extra})

    def finish(self, stage: str, fp: str, **extra: Any) -> None:
        """Record a finished stage."""
        self._record(stage, {"fingerprint": fp, "done": True, **extra})

    def _record(self, stage: str, entry: dict[str, Any]) -> None:
        self.state["stages"][stage] = entry
        with atomic_output(self.path / STATE_FILE) as tmp:
            Path(tmp).write_text(json.dumps(self.state, indent=2))


class RunFolder(RunState):
    """A ``jmlgeo train`` run folder: its ``run.json`` and the rules for reuse, resume, refusal.

    Attributes:
        path: The folder.
        resume: Reuse finished stages whose fingerprint matches; continue interrupted ones.
        reused: Names of the stages reused so far.
        primary: False in a DDP child process (which never writes).
    """

    def __init__(self, path: Path, resume: bool, force: bool) -> None:
        """Open (create) the folder; remove a previous run when ``force``.

        Raises:
            OutputError: ``path`` is a file or cannot be written.
            RunFolderError: ``path`` is not empty and holds no ``run.json``.
        """
        self.path, self.resume, self.reused = path, resume, []
        state_file = path / STATE_FILE
        if path.exists() and not path.is_dir():
            raise OutputError(f"{display_path(path)}: is a file; give a folder for the run")
        if state_file.exists() and force and is_primary_process():
            shutil.rmtree(path)
        elif path.exists() and any(path.iterdir()) and not state_file.exists():
            raise RunFolderError(
                f"{display_path(path)}: not empty and not a jmlgeo run folder; give a new folder"
            )
        output_folder(path, "the run")
        super().__init__(path)
        self.primary = is_primary_process()

    def wait_for(self, stage: str, fp: str, timeout: float = 3600.0) -> None:
        """Block (a DDP child) until rank 0 records ``stage`` as done."""
        deadline = time.monotonic() + timeout
        while not self.finished(stage, fp):
            if time.monotonic() > deadline:
                raise RunFolderError(f"{display_path(self.path)}: rank 0 never finished {stage}")
            time.sleep(0.5)

    def reusable(self, stage: str, fp: str) -> bool:
        """Whether ``stage`` finished with this fingerprint; a mismatch fails unless resuming.

        In a DDP child, waits until rank 0 finished the stage and returns True.
        """
        if not self.primary:
            self.wait_for(stage, fp)
            return True
        entry = self.state["stages"].get(stage)
        if entry is None:
            return False
        if entry.get("fingerprint") == fp:
            if entry.get("done"):
                self.reused.append(stage)
                return True
            return False  # started with these settings and interrupted: the stage may resume
        if not self.resume:
            raise RunFolderError(
                f"{display_path(self.path)}: holds a run with other inputs or settings "
                f"(stage {stage} differs); pass --resume to reuse what still matches, "
                "--force to start over, or another --out"
            )
        self.state["stages"].pop(stage)
        return False
