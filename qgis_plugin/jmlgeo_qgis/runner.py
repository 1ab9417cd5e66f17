"""Run the ``jmlgeo`` command line for the plugin: arguments, executable, environment, progress.

Pure Python with no QGIS import, so it is tested without QGIS. The plugin never imports torch or
``jmlnet_geo``: QGIS's Python has neither, and two GDAL builds in one process break. Instead it
starts ``jmlgeo ... --progress json`` as a child process (an argument list, never a shell) and
reads the JSON lines the command writes on standard output::

    {"event": "stage", "stage": "proposals", "total": 174}
    {"event": "progress", "stage": "proposals", "done": 40, "total": 174, "fraction": 0.2299}
    {"event": "message", "text": "wrote out/scene.grabcut.tif"}
    {"event": "output", "kind": "proposal", "path": "/abs/out/scene.grabcut.tif"}
    {"event": "done"}

Errors come on standard error as one line ``error: <message>`` with a non-zero exit code; that
message is what :class:`RunError` says, word for word.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: The command's name; on Windows its launcher is ``jmlgeo.exe``.
EXECUTABLE_NAME = "jmlgeo"

#: An environment variable that names the executable (after the plugin setting, before PATH).
EXECUTABLE_VARIABLE = "JMLGEO_EXECUTABLE"

#: Where the plugin setting lives, for messages.
SETTING_HINT = "Settings > Options > Processing > Providers > JMLNet (jmlgeo) > jmlgeo executable"

#: Variables QGIS sets for its own Python, PROJ and GDAL; the child must not inherit them, or the
#: venv's Python would import QGIS's packages and its rasterio would read QGIS's PROJ/GDAL data.
LEAKED_VARIABLES = frozenset(
    {
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONSTARTUP",
        "PYTHONUSERBASE",
        "PYTHONEXECUTABLE",
        "PROJ_LIB",
        "PROJ_DATA",
        "PROJ_NETWORK",
        "GDAL_DATA",
        "GDAL_DRIVER_PATH",
        "GDAL_FILENAME_IS_UTF8",
        "LD_LIBRARY_PATH",
        "LD_PRELOAD",
        "DYLD_LIBRARY_PATH",
        "DYLD_FALLBACK_LIBRARY_PATH",
        "DYLD_FRAMEWORK_PATH",
        "DYLD_INSERT_LIBRARIES",
    }
)
LEAKED_PREFIXES = ("QGIS_",)

ProgressCallback = Callable[[float, str], None]
LogCallback = Callable[[str, str], None]
OutputCallback = Callable[[str, str], None]


class RunError(Exception):
    """``jmlgeo`` failed; ``str(error)`` is the command's own message, word for word."""

    def __init__(self, message: str, returncode: int | None = None, stderr: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.returncode = returncode
        self.stderr = stderr


class ExecutableNotFoundError(RunError):
    """No ``jmlgeo`` executable: the message says where we looked and what to do."""


class CancelledError(RunError):
    """The user cancelled; the child process (and its children) were stopped."""


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


# --- finding the executable -----------------------------------------------------------------


def _names() -> tuple[str, ...]:
    if os.name == "nt":
        return (EXECUTABLE_NAME + ".exe", EXECUTABLE_NAME + ".cmd", EXECUTABLE_NAME)
    return (EXECUTABLE_NAME,)


def _bin_dirs(venv: Path) -> tuple[Path, ...]:
    return (venv / "Scripts", venv / "bin") if os.name == "nt" else (venv / "bin",)


def candidate_dirs(home: str | os.PathLike[str] | None = None) -> list[Path]:
    """Folders searched after PATH: common virtual environments and user install places.

    ``~/.venv``, ``~/jmlgeo/.venv``, ``~/jmlnet_geo/.venv``, ``~/jmlnet-geo/.venv``,
    ``~/.local/bin`` (pip --user, pipx), and the ``.venv`` of the repository this plugin lives in
    (when it is used from a checkout, e.g. through a symbolic link).
    """
    base = Path(home) if home is not None else Path.home()
    venvs = [base / ".venv", base / "jmlgeo" / ".venv"]
    venvs += [base / "jmlnet_geo" / ".venv", base / "jmlnet-geo" / ".venv"]
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").is_file():
        venvs.append(repo / ".venv")
    dirs = [d for v in venvs for d in _bin_dirs(v)]
    dirs.append(base / ".local" / "bin")
    return dirs


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _executable_in(path: Path) -> Path | None:
    """``path`` itself when it is an executable file; for a folder, a jmlgeo in it or its venv."""
    if _is_executable(path):
        return path
    if path.is_dir():
        for folder in (path, *_bin_dirs(path)):
            for name in _names():
                if _is_executable(folder / name):
                    return folder / name
    return None


def find_executable(
    configured: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    home: str | os.PathLike[str] | None = None,
    places: Sequence[str | os.PathLike[str]] | None = None,
) -> str:
    """The ``jmlgeo`` to run: the setting, else ``$JMLGEO_EXECUTABLE``, PATH, common venvs.

    Args:
        configured: The plugin setting: the executable, or a venv / folder that holds it. Empty
            or None means auto-detect.
        environ: Environment to read PATH and ``JMLGEO_EXECUTABLE`` from (default: os.environ).
        home: Home folder for the common places (default: the user's).
        places: Folders to search after PATH (default: :func:`candidate_dirs` of ``home``).

    Raises:
        ExecutableNotFoundError: With a message that says where it looked and what to do.
    """
    environ = os.environ if environ is None else environ
    chosen = (("setting", configured), (EXECUTABLE_VARIABLE, environ.get(EXECUTABLE_VARIABLE)))
    for source, value in chosen:
        if value is None or not str(value).strip():
            continue
        path = Path(os.path.expanduser(str(value).strip()))
        found = _executable_in(path)
        if found is None:
            where = f"The plugin setting ({SETTING_HINT})" if source == "setting" else source
            raise ExecutableNotFoundError(
                f"{where} names {path}, which is not a jmlgeo executable (or a venv holding one);"
                " point it at .../.venv/bin/jmlgeo, or leave it empty to auto-detect."
            )
        return str(found)
    for name in _names():
        on_path = shutil.which(name, path=environ.get("PATH", os.defpath))
        if on_path:
            return on_path
    places = candidate_dirs(home) if places is None else [Path(p) for p in places]
    for folder in places:
        found = _executable_in(folder)
        if found is not None:
            return str(found)
    looked = ", ".join(str(p) for p in places)
    raise ExecutableNotFoundError(
        "jmlgeo was not found: install jmlnet-geo (in its repository `make demo` creates "
        f".venv/bin/jmlgeo), then set its path in {SETTING_HINT} or in ${EXECUTABLE_VARIABLE}. "
        f"Looked on PATH and in: {looked}."
    )


def clean_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of the environment without the variables QGIS sets for its own Python and GDAL.

    Drops :data:`LEAKED_VARIABLES` and every ``QGIS_*`` variable; sets ``PYTHONUNBUFFERED`` and
    ``PYTHONIOENCODING`` so progress arrives line by line in UTF-8.
    """
    source = os.environ if environ is None else environ
    env = {}
    for key, value in source.items():
        upper = key.upper()
        if upper in LEAKED_VARIABLES or upper.startswith(LEAKED_PREFIXES):
            continue
        env[key] = value
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


# --- argument lists -------------------------------------------------------------------------


def _path(value: str | os.PathLike[str]) -> str:
    # Absolute paths never start with "-", so no file name is taken for an option.
    return os.path.abspath(os.fspath(value))


def _option(args: list[str], name: str, value: object) -> None:
    """Append ``--name value`` (None: nothing; True: the flag alone; False: nothing)."""
    if value is None or value is False:
        return
    if value is True:
        args.append(name)
        return
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    args += [name, str(value)]


def predict_args(
    bundle: str | os.PathLike[str],
    scenes: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    polygons: bool = False,
    probabilities: bool = False,
    tile: int | None = None,
    overlap: int | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    min_area: float | None = None,
    simplify: float | None = None,
) -> list[str]:
    """``predict BUNDLE SCENE... --out DIR [...] --progress json``."""
    args = ["predict", _path(bundle), *(_path(s) for s in scenes), "--out", _path(out)]
    _option(args, "--polygons", polygons)
    _option(args, "--probabilities", probabilities)
    _option(args, "--tile", tile)
    _option(args, "--overlap", overlap)
    _option(args, "--batch-size", batch_size)
    _option(args, "--device", device)
    _option(args, "--min-area", min_area)
    _option(args, "--simplify", simplify)
    return [*args, "--progress", "json"]


def train_args(
    scenes: Sequence[str | os.PathLike[str]],
    boxes: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    class_field: str = "class",
    preset: str | None = None,
    classes: Sequence[str] | None = None,
    proposals: Sequence[str] | None = None,
    loss: str | None = None,
    stage1_steps: int | None = None,
    stage2_steps: int | None = None,
    batch_size: int | None = None,
    tile_size: int | None = None,
    device: str | None = None,
    workers: int | None = None,
    loader_workers: int | None = None,
    resume: bool = False,
    force: bool = False,
) -> list[str]:
    """``train SCENE... --boxes BOXES --class-field F --out RUN_DIR [...] --progress json``."""
    args = ["train", *(_path(s) for s in scenes), "--boxes", _path(boxes)]
    args += ["--class-field", class_field, "--out", _path(out)]
    _option(args, "--preset", preset)
    _option(args, "--classes", list(classes) if classes else None)
    _option(args, "--proposals", list(proposals) if proposals else None)
    _option(args, "--loss", loss)
    _option(args, "--stage1-steps", stage1_steps)
    _option(args, "--stage2-steps", stage2_steps)
    _option(args, "--batch-size", batch_size)
    _option(args, "--tile-size", tile_size)
    _option(args, "--device", device)
    _option(args, "--workers", workers)
    _option(args, "--loader-workers", loader_workers)
    _option(args, "--resume", resume)
    _option(args, "--force", force)
    return [*args, "--progress", "json"]


def proposals_args(
    scenes: Sequence[str | os.PathLike[str]],
    boxes: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    methods: Sequence[str] = ("box", "crf", "grabcut"),
    class_field: str = "class",
    classes: Sequence[str] | None = None,
    workers: int | None = None,
    preview: bool = False,
) -> list[str]:
    """``proposals SCENE... --boxes BOXES --class-field F --out DIR --methods M [...]``."""
    args = ["proposals", *(_path(s) for s in scenes), "--boxes", _path(boxes)]
    args += ["--class-field", class_field, "--out", _path(out)]
    args += ["--methods", ",".join(methods)]
    _option(args, "--classes", list(classes) if classes else None)
    _option(args, "--workers", workers)
    _option(args, "--preview", preview)
    return [*args, "--progress", "json"]


def evaluate_args(
    prediction: str | os.PathLike[str],
    truth: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    class_field: str = "class",
) -> list[str]:
    """``evaluate PREDICTION --truth TRUTH --class-field F [--out report.json]`` (no progress)."""
    args = ["evaluate", _path(prediction), "--truth", _path(truth), "--class-field", class_field]
    if out is not None:
        args += ["--out", _path(out)]
    return args


_SCORES = re.compile(r"mIoU\s+(?P<miou>[0-9.]+)\s+pixel accuracy\s+(?P<acc>[0-9.]+)")


def parse_scores(lines: Iterable[str]) -> tuple[float, float] | None:
    """(mIoU, pixel accuracy) in percent from ``jmlgeo evaluate``'s last line, or None."""
    for line in reversed(list(lines)):
        match = _SCORES.search(line)
        if match:
            return float(match["miou"]), float(match["acc"])
    return None


# --- the JSON progress protocol -------------------------------------------------------------


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
            self.on_log(f"{self.stage}…", "info")
            self.on_progress(0.0, self.stage)
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


# --- running --------------------------------------------------------------------------------


def _pump(stream, name: str, lines: queue.Queue) -> None:
    """Read one pipe line by line (bytes, decoded leniently) until it closes."""
    try:
        for raw in iter(stream.readline, b""):
            lines.put((name, raw.decode("utf-8", errors="replace")))
    except (OSError, ValueError):
        pass
    finally:
        lines.put((name, None))


def _popen_options() -> dict:
    if os.name == "nt":
        flags = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
        return {"creationflags": flags}
    # Its own session and process group: cancelling stops the command's workers too.
    return {"start_new_session": True}


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def stop(process: subprocess.Popen, grace: float = 5.0) -> None:
    """Terminate the child and its process group; kill whatever is left after ``grace`` s."""
    if os.name == "nt":
        subprocess.run(
            ["taskkill", "/T", "/F", "/PID", str(process.pid)],
            capture_output=True,
            creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
            check=False,
        )
        if process.poll() is None:
            process.kill()
        process.wait()
        return
    _signal_group(process, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)
    # The leader may be gone while workers that ignore SIGTERM are not: kill the group.
    _signal_group(process, signal.SIGKILL)
    process.wait()


def run(
    executable: str | os.PathLike[str],
    args: Sequence[str],
    *,
    on_progress: ProgressCallback | None = None,
    on_log: LogCallback | None = None,
    on_output: OutputCallback | None = None,
    is_canceled: Callable[[], bool] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    grace: float = 5.0,
    poll_interval: float = 0.1,
) -> RunResult:
    """Run ``executable args...`` (no shell) with a clean environment; callbacks on this thread.

    Args:
        executable: The ``jmlgeo`` executable (see :func:`find_executable`).
        args: Its arguments (see :func:`predict_args` and the other builders).
        on_progress: ``(fraction, stage)`` for each progress event.
        on_log: ``(text, level)``, see :class:`EventReader`.
        on_output: ``(kind, path)`` for each announced output file.
        is_canceled: Polled every ``poll_interval`` seconds; when it returns True the child's
            process group is terminated, then killed after ``grace`` seconds.
        cwd: Working folder of the child.
        environ: Environment to clean and pass on (default: os.environ).
        grace: Seconds between terminate and kill when cancelling.
        poll_interval: Seconds between cancel checks while the child is quiet.

    Returns:
        The announced outputs and the plain-text output of a successful run.

    Raises:
        ExecutableNotFoundError: The executable cannot be started.
        CancelledError: ``is_canceled`` returned True; the child is gone.
        RunError: The command failed; its message is the command's ``error:`` line.
    """
    reader = EventReader(on_progress, on_log, on_output)
    command = [os.fspath(executable), *args]
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=clean_environment(environ),
            **_popen_options(),
        )
    except OSError as err:
        raise ExecutableNotFoundError(
            f"cannot start {command[0]}: {err.strerror or err}; check the jmlgeo executable in "
            f"{SETTING_HINT}"
        ) from err
    lines: queue.Queue = queue.Queue()
    for name, stream in (("stdout", process.stdout), ("stderr", process.stderr)):
        threading.Thread(target=_pump, args=(stream, name, lines), daemon=True).start()
    handlers = {"stdout": reader.stdout_line, "stderr": reader.stderr_line}
    open_streams, cancelled, exited_at = 2, False, None
    try:
        while open_streams:
            if not cancelled and is_canceled is not None and is_canceled():
                cancelled = True
                stop(process, grace)
            try:
                name, line = lines.get(timeout=poll_interval)
            except queue.Empty:
                if process.poll() is not None:
                    exited_at = exited_at or time.monotonic()
                    # A grandchild that left the group may hold the pipes open: do not wait.
                    if time.monotonic() - exited_at > max(grace, 2.0):
                        break
                continue
            if line is None:
                open_streams -= 1
            else:
                handlers[name](line)
    except BaseException:
        if process.poll() is None:
            stop(process, grace)
        raise
    if not open_streams:  # both pipes at their end (else a reader thread may still hold one)
        process.stdout.close()
        process.stderr.close()
    returncode = process.wait()
    if cancelled:
        raise CancelledError("cancelled: jmlgeo was stopped", returncode, "\n".join(reader.stderr))
    if returncode != 0:
        raise reader.failure(returncode)
    reader.result.returncode = returncode
    return reader.result


__all__ = [
    "CancelledError",
    "EventReader",
    "ExecutableNotFoundError",
    "Output",
    "RunError",
    "RunResult",
    "clean_environment",
    "evaluate_args",
    "find_executable",
    "parse_line",
    "parse_scores",
    "predict_args",
    "proposals_args",
    "run",
    "stop",
    "train_args",
]
