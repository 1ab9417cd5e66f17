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

This module gathers the public names of the pieces, each its own module: :mod:`.executable`
(finding and checking ``jmlgeo``), :mod:`.arguments` (argument lists), :mod:`.events` (the JSON
protocol), :mod:`.process` (the child process) and :mod:`.errors`. None imports QGIS.
"""

from __future__ import annotations

from .arguments import (
    audit_args,
    evaluate_args,
    parse_scores,
    predict_args,
    proposals_args,
    table_html,
    train_args,
)
from .errors import CancelledError, ExecutableNotFoundError, RunError
from .events import (
    EventReader,
    LineFilter,
    LogCallback,
    Output,
    OutputCallback,
    ProgressCallback,
    RunResult,
    event_fraction,
    parse_line,
)
from .executable import (
    EXECUTABLE_NAME,
    EXECUTABLE_VARIABLE,
    SETTING_HINT,
    candidate_dirs,
    check_executable,
    find_executable,
)
from .process import LEAKED_PREFIXES, LEAKED_VARIABLES, clean_environment, run, stop

__all__ = [
    "audit_args",
    "CancelledError",
    "EXECUTABLE_NAME",
    "EXECUTABLE_VARIABLE",
    "EventReader",
    "LineFilter",
    "ExecutableNotFoundError",
    "LEAKED_PREFIXES",
    "LEAKED_VARIABLES",
    "LogCallback",
    "Output",
    "OutputCallback",
    "ProgressCallback",
    "RunError",
    "RunResult",
    "SETTING_HINT",
    "candidate_dirs",
    "check_executable",
    "clean_environment",
    "evaluate_args",
    "event_fraction",
    "find_executable",
    "parse_line",
    "parse_scores",
    "predict_args",
    "proposals_args",
    "run",
    "stop",
    "table_html",
    "train_args",
]
