"""Progress for long commands: a rich bar for people, JSON lines for machines (the QGIS plugin).

Library functions take a ``progress(done, total)`` callback; a command opens a
:class:`ProgressDisplay` and hands each stage's callback to the library.

JSON lines go to standard output, one object per line, flushed at once::

    {"event": "stage", "stage": "proposals", "total": 174}
    {"event": "progress", "stage": "proposals", "done": 40, "total": 174, "fraction": 0.2299}
    {"event": "message", "text": "wrote out/scene.grabcut.tif"}
    {"event": "output", "kind": "proposal", "path": "/abs/out/scene.grabcut.tif"}
    {"event": "done"}

``output`` events name every file a command wrote (absolute paths), with its kind: ``proposal``,
``bundle``, ``classes``, ``probabilities``, ``polygons``, ``style``, ``report`` or ``preview``.

Errors are not part of the stream: they go to standard error as ``error: <message>``.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import sys
import time
from collections.abc import Callable, Iterator

import typer


class ProgressMode(enum.StrEnum):
    """How a command shows its progress."""

    bar = "bar"
    json = "json"
    none = "none"


#: The ``--progress`` option shared by long commands.
PROGRESS_OPTION = typer.Option(
    ProgressMode.bar,
    "--progress",
    help="bar: a progress bar; json: JSON lines on standard output (for tools); none.",
    case_sensitive=False,
)


class ProgressDisplay:
    """One display across the stages of a command."""

    #: JSON progress lines are written at most this often (seconds), plus the last one.
    JSON_INTERVAL = 0.25

    def __init__(self, mode: ProgressMode | str = ProgressMode.bar) -> None:
        self.mode = ProgressMode(mode)
        self._console = None

    @contextlib.contextmanager
    def stage(self, name: str, unit: str = "items") -> Iterator[Callable[[int, int], None]]:
        """A ``progress(done, total)`` callback for one stage, shown as ``name``."""
        if self.mode is ProgressMode.json:
            yield self._json_callback(name)
        elif self.mode is ProgressMode.bar and sys.stderr.isatty():
            yield from self._bar(name, unit)
        else:
            yield lambda done, total: None

    def message(self, text: str) -> None:
        """A line for the user (standard error) or a message event (JSON)."""
        if self.mode is ProgressMode.json:
            _emit({"event": "message", "text": text})
        else:
            print(text, file=sys.stderr if self.mode is ProgressMode.none else sys.stdout)

    def output(self, kind: str, path: str | os.PathLike[str]) -> None:
        """Announce a file the command wrote (JSON mode only; the bar mode prints messages)."""
        if self.mode is ProgressMode.json:
            _emit({"event": "output", "kind": kind, "path": os.path.abspath(path)})

    def done(self) -> None:
        """The command finished successfully."""
        if self.mode is ProgressMode.json:
            _emit({"event": "done"})

    def _json_callback(self, name: str) -> Callable[[int, int], None]:
        last = [0.0, -1]

        def report(done: int, total: int) -> None:
            if last[1] < 0:
                _emit({"event": "stage", "stage": name, "total": total})
            now = time.monotonic()
            if done >= total or now - last[0] >= self.JSON_INTERVAL or last[1] < 0:
                fraction = round(done / total, 4) if total else 1.0
                _emit(
                    {
                        "event": "progress",
                        "stage": name,
                        "done": done,
                        "total": total,
                        "fraction": fraction,
                    }
                )
                last[0] = now
            last[1] = done

        return report

    def _bar(self, name: str, unit: str) -> Iterator[Callable[[int, int], None]]:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(unit),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        from rich.console import Console

        with Progress(*columns, console=Console(stderr=True)) as bar:
            task = bar.add_task(name, total=None)

            def report(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            yield report


def _emit(event: dict) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()
