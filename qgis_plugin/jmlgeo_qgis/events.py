"""The JSON progress protocol: stdout/stderr lines of ``jmlgeo`` to callbacks and a result."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .errors import RunError

ProgressCallback = Callable[[float, str], None]
LogCallback = Callable[[str, str], None]
OutputCallback = Callable[[str, str], None]


@dataclass(frozen=True)
class Output:
    """One file the command wrote, as announced by an ``output`` event."""

    kind: str
    path: str


@dataclass
class RunResult:
    """What a successful run announced."""

    returncode: int
    outputs: list[Output] = field(default_factory=list)
    text: list[str] = field(default_factory=list)  # stdout lines that were not JSON events
    done: bool = False

    def paths(self, kind: str) -> list[str]:
        """The announced files of one kind, in order."""
        return [o.path for o in self.outputs if o.kind == kind]

    def path(self, kind: str) -> str | None:
        """The first announced file of one kind, or None."""
        found = self.paths(kind)
        return found[0] if found else None


def parse_line(line: str) -> dict | None:
    """The event of one stdout line, or None when the line is not a JSON event (plain text)."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        event = json.loads(text)
    except ValueError:
        return None
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        return None
    return event


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def event_fraction(event: Mapping[str, object]) -> float | None:
    """A progress event's fraction in [0, 1] (from ``fraction``, else ``done / total``)."""
    fraction = _number(event.get("fraction"))
    if fraction is None:
        done, total = _number(event.get("done")), _number(event.get("total"))
        if done is None or not total:
            return None
        fraction = done / total
    if fraction != fraction:  # NaN
        return None
    return min(1.0, max(0.0, fraction))


class EventReader:
    """Turns the child's stdout and stderr lines into callbacks and a :class:`RunResult`.

    Args:
        on_progress: ``(fraction in [0, 1], stage name)``.
        on_log: ``(text, level)`` with level ``info`` (messages, stages), ``warning``, ``error``
            or ``console`` (other output of the command, e.g. a traceback or a table).
        on_output: ``(kind, absolute path)`` for every file the command announces.
    """

    def __init__(
        self,
        on_progress: ProgressCallback | None = None,
        on_log: LogCallback | None = None,
        on_output: OutputCallback | None = None,
    ) -> None:
        self.on_progress = on_progress or (lambda fraction, stage: None)
        self.on_log = on_log or (lambda text, level: None)
        self.on_output = on_output or (lambda kind, path: None)
        self.result = RunResult(returncode=0)
        self.stage = ""
        self.errors: list[str] = []
        self.stderr: list[str] = []

    def stdout_line(self, line: str) -> None:
        """Handle one line of standard output."""
        event = parse_line(line)
        if event is None:
            text = line.rstrip("\r\n")
            if text.strip():
                self.result.text.append(text)
                self.on_log(text, "console")
            return
        kind = event["event"]
        if kind == "stage":
            self.stage = str(event.get("stage", ""))
            # Progress first: a display that logs the stage name with it can drop the line.
            self.on_progress(0.0, self.stage)
            self.on_log(f"{self.stage}…", "info")
        elif kind == "progress":
            if "stage" in event:
                self.stage = str(event["stage"])
            fraction = event_fraction(event)
            if fraction is not None:
                self.on_progress(fraction, self.stage)
        elif kind == "message":
            self.on_log(str(event.get("text", "")), "info")
        elif kind == "output":
            out_kind, path = event.get("kind"), event.get("path")
            if isinstance(out_kind, str) and isinstance(path, str) and path:
                self.result.outputs.append(Output(out_kind, path))
                self.on_output(out_kind, path)
        elif kind == "done":
            self.result.done = True
            self.on_progress(1.0, self.stage)
        # Unknown events are ignored: newer commands may say more than this plugin knows.

    def stderr_line(self, line: str) -> None:
        """Handle one line of standard error."""
        text = line.rstrip("\r\n")
        if not text.strip():
            return
        self.stderr.append(text)
        del self.stderr[:-200]
        if text.startswith("error: "):
            self.errors.append(text[len("error: ") :])
            self.on_log(text[len("error: ") :], "error")
        elif text.startswith("warning: "):
            self.on_log(text[len("warning: ") :], "warning")
        else:
            self.on_log(text, "console")

    def failure(self, returncode: int) -> RunError:
        """The error for a non-zero exit: the ``error:`` line verbatim, else the stderr tail."""
        stderr = "\n".join(self.stderr)
        if self.errors:
            return RunError("\n".join(self.errors), returncode, stderr)
        tail = "\n".join(self.stderr[-15:])
        if returncode < 0:
            name = _signal_name(-returncode)
            message = f"jmlgeo was stopped by signal {name}"
        else:
            message = f"jmlgeo failed with exit code {returncode}"
        return RunError(f"{message}:\n{tail}" if tail else message, returncode, stderr)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


class LineFilter:
    """Drops log lines that say again what was just said.

    A line is dropped when it equals the previous one (ignoring case, spaces and a trailing
    ellipsis, so a stage's "predict scene.tif…" after the progress text "predict scene.tif"), and
    a warning when the same warning was already shown.
    """

    def __init__(self) -> None:
        self.last: str | None = None
        self.warnings: set[str] = set()
        self.dropped = 0

    @staticmethod
    def key(text: str) -> str:
        """What two lines share when they say the same thing."""
        return " ".join(text.strip().rstrip("….").split()).casefold()

    def fresh(self, text: str, level: str = "info") -> bool:
        """Whether to show ``text``; remembers it."""
        key = self.key(text)
        repeated = key == self.last or (level == "warning" and key in self.warnings)
        self.last = key
        if level == "warning":
            self.warnings.add(key)
        if repeated:
            self.dropped += 1
        return not repeated
