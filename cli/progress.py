"""Progress for long commands: a rich bar for people, JSON lines for machines (the QGIS plugin).

Library functions take a ``progress(done, total)`` callback; a command opens a
:class:`ProgressDisplay` and hands each stage's callback to the library. In ``bar`` mode outside
a terminal (a log file, CI) a stage prints a plain line every 10 % or 30 s instead of a bar.

JSON lines go to standard output, one object per line, flushed at once::

    {"event": "stage", "stage": "proposals", "total": 174}
    {"event": "progress", "stage": "proposals", "done": 40, "total": 174, "fraction": 0.2299}
    {"event": "progress", "stage": "stage1", "done": 20, "total": 200, "fraction": 0.1, "loss": 1}
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

#: -1 with ``--quiet`` (no progress, no messages; warnings and errors only), 1 with
#: ``--verbose`` (every warning, each time), 0 otherwise. Set by ``jmlgeo``'s root options.
VERBOSITY = 0

#: Outside a terminal, a progress line at least this often (seconds), besides every 10 %.
LINE_INTERVAL = 30.0


def set_verbosity(level: int) -> None:
    """Set :data:`VERBOSITY` (the root callback does, before the command runs)."""
    global VERBOSITY
    VERBOSITY = level


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
    def stage(self, name: str, unit: str = "items") -> Iterator[Callable[..., None]]:
        """A ``progress(done, total, loss=None)`` callback for one stage, shown as ``name``.

        ``loss`` (optional keyword, a float) is shown by every mode: in the bar's description,
        in plain lines, as ``"loss"`` in JSON progress events.
        """
        if self.mode is ProgressMode.json:
            yield self._json_callback(name)
        elif self.mode is ProgressMode.bar and VERBOSITY >= 0 and sys.stderr.isatty():
            yield from self._bar(name, unit)
        elif self.mode is ProgressMode.bar and VERBOSITY >= 0:
            yield self._line_callback(name, unit)
        else:
            yield lambda done, total, **info: None

    def message(self, text: str) -> None:
        """A line for the user (standard error) or a message event (JSON); none with --quiet."""
        if self.mode is ProgressMode.json:
            _emit({"event": "message", "text": text})
        elif VERBOSITY >= 0:
            print(text, file=sys.stderr if self.mode is ProgressMode.none else sys.stdout)

    def output(self, kind: str, path: str | os.PathLike[str]) -> None:
        """Announce a file the command wrote (JSON mode only; the bar mode prints messages)."""
        if self.mode is ProgressMode.json:
            _emit({"event": "output", "kind": kind, "path": os.path.abspath(path)})

    def done(self) -> None:
        """The command finished successfully."""
        if self.mode is ProgressMode.json:
            _emit({"event": "done"})

    def _line_callback(self, name: str, unit: str) -> Callable[..., None]:
        """Outside a terminal (a log file, CI, a pipe): a line every 10 % or every 30 s.

        ``stage1: 40/200 steps (20 %), loss 0.5312, 1m20s elapsed, about 5m20s left``. The
        callback takes an optional ``loss=`` keyword from stages that know it.
        """
        start = time.monotonic()
        state = {"time": start, "tenth": -1, "done": False}

        def report(done: int, total: int, **info: object) -> None:
            if state["done"]:
                return
            now = time.monotonic()
            tenth = int(10 * done / total) if total else 10
            finished = bool(total) and done >= total
            if not finished and tenth <= state["tenth"] and now - state["time"] < LINE_INTERVAL:
                return
            state.update(time=now, tenth=tenth, done=finished)
            parts = [f"{name}: {done}/{total} {unit}" if total else f"{name}: {done} {unit}"]
            if total:
                parts[0] += f" ({100 * done // total} %)"
            loss = info.get("loss")
            if isinstance(loss, (int, float)):
                parts.append(f"loss {loss:.4f}")
            elapsed = now - start
            parts.append(f"{_duration(elapsed)} elapsed")
            if total and 0 < done < total:
                parts.append(f"about {_duration(elapsed * (total - done) / done)} left")
            print(", ".join(parts), file=sys.stderr, flush=True)

        return report

    def _json_callback(self, name: str) -> Callable[..., None]:
        last = [0.0, -1]

        def report(done: int, total: int, **info: object) -> None:
            if last[1] < 0:
                _emit({"event": "stage", "stage": name, "total": total})
            now = time.monotonic()
            if done >= total or now - last[0] >= self.JSON_INTERVAL or last[1] < 0:
                fraction = round(done / total, 4) if total else 1.0
                event = {
                    "event": "progress",
                    "stage": name,
                    "done": done,
                    "total": total,
                    "fraction": fraction,
                }
                loss = info.get("loss")
                if isinstance(loss, (int, float)):
                    event["loss"] = round(float(loss), 5)
                _emit(event)
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

            def report(done: int, total: int, **info: object) -> None:
                loss = info.get("loss")
                shown = f"{name} (loss {loss:.4f})" if isinstance(loss, (int, float)) else name
                bar.update(task, completed=done, total=total, description=shown)

            yield report


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _emit(event: dict) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()
