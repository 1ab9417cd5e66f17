"""Running ``jmlgeo`` as a child process: a clean environment, pipes, cancel, exit status."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from .errors import CancelledError, ExecutableNotFoundError
from .events import EventReader, LogCallback, OutputCallback, ProgressCallback, RunResult
from .executable import SETTING_HINT

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
