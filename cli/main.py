"""Entry point of ``jmlgeo``: the typer app, one-line errors and one-line warnings.

Command modules import the library inside their functions, so ``jmlgeo --help`` loads neither
torch nor cv2 (nor rasterio/geopandas).
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import warnings

import typer
from jmlnet_geo.cli import (
    audit,
    detect,
    doctor,
    evaluate,
    importers,
    info,
    predict,
    progress,
    proposals,
    train,
)

from jmlnet_geo import __version__
from jmlnet_geo.children import tune_malloc
from jmlnet_geo.errors import JmlGeoError

app = typer.Typer(
    name="jmlgeo",
    help="Pixel-accurate maps from bounding boxes (JMLNet) for georeferenced scenes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
app.command(name="info")(info.info)
app.command(name="train")(train.train)
app.command(name="proposals")(proposals.proposals)
app.command(name="train-detector")(detect.train_detector)
app.command(name="detect")(detect.detect)
app.command(name="predict")(predict.predict)
app.command(name="vectorize")(predict.vectorize)
app.command(name="export")(predict.export)
app.command(name="evaluate")(evaluate.evaluate)
app.command(name="doctor")(doctor.doctor)
app.command(name="audit")(audit.audit)
app.add_typer(importers.app, name="import")


def _version(value: bool) -> None:
    if value:
        print(f"jmlgeo {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="Only warnings and errors: no progress, no messages."
    ),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Every warning each time, GDAL's own included."
    ),
) -> None:
    """Pixel-accurate maps from bounding boxes (JMLNet) for georeferenced scenes."""
    if quiet and verbose:
        raise typer.BadParameter("--quiet and --verbose exclude each other")
    level = -1 if quiet else 1 if verbose else 0
    progress.set_verbosity(level)
    if level > 0:
        _WARNINGS.verbose = True
        warnings.filterwarnings("always")


#: rasterio's NotGeoreferencedWarning, once per plain image opened (and again in each worker);
#: our own PlainImageWarning already names those images once. No comma: PYTHONWARNINGS splits
#: on commas, and spawned workers (proposals) read the filter from it.
GDAL_REPEATS = ("Dataset has no geotransform",)


class _WarningSummary:
    """Shows each warning once; at exit, how many repeats were left out."""

    def __init__(self) -> None:
        self.seen: set[tuple[type, str]] = set()
        self.repeats = 0
        self.verbose = False

    def show(self, message, category, filename, lineno, file=None, line=None) -> None:
        key = (category, str(message))
        if key in self.seen and not self.verbose:
            self.repeats += 1
            return
        self.seen.add(key)
        print(f"warning: {message}", file=sys.stderr)

    def summary(self) -> None:
        if self.repeats:
            print(
                f"warning: {self.repeats} repeated warnings not shown again (--verbose shows them)",
                file=sys.stderr,
            )
            self.repeats = 0


_WARNINGS = _WarningSummary()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    _WARNINGS.show(message, category, filename, lineno, file, line)


def _quiet_gdal_repeats() -> None:
    """Ignore GDAL/rasterio warnings that repeat per file, here and in spawned workers."""
    for text in GDAL_REPEATS:
        warnings.filterwarnings("ignore", message=text)
    extra = ",".join(f"ignore:{text}" for text in GDAL_REPEATS)
    current = os.environ.get("PYTHONWARNINGS", "")
    if extra not in current:
        os.environ["PYTHONWARNINGS"] = f"{current},{extra}" if current else extra


def main(argv: list[str] | None = None) -> None:
    """Run ``jmlgeo``; a :class:`JmlGeoError` becomes ``error: <message>`` and exit code 1."""
    warnings.showwarning = _show_warning
    tune_malloc()  # freed buffers reused, not faulted in again per window
    args = sys.argv[1:] if argv is None else argv
    if "--verbose" not in args and "-v" not in args:
        _quiet_gdal_repeats()
    _WARNINGS.__init__()  # (main runs many times in one process in the tests)
    _SIGNALLED.clear()
    previous = _stop_on_sigterm()
    try:
        app(args=argv, prog_name="jmlgeo")
    except JmlGeoError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except _Terminated:
        print("error: interrupted (SIGTERM); no output was left half-written", file=sys.stderr)
        sys.exit(128 + signal.SIGTERM)
    except KeyboardInterrupt:
        print("error: interrupted; no output was left half-written", file=sys.stderr)
        sys.exit(130)
    except OSError as err:  # disk full, permission denied, ...: one line naming the path
        print(f"error: {os_error_line(err)}", file=sys.stderr)
        sys.exit(1)
    except SystemExit as stop:  # click turns Ctrl-C (and our SIGTERM) into a silent exit 130
        if stop.code != 130:
            raise
        which = " (SIGTERM)" if _SIGNALLED else ""
        print(f"error: interrupted{which}; no output was left half-written", file=sys.stderr)
        sys.exit(128 + signal.SIGTERM if _SIGNALLED else 130)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        _WARNINGS.summary()


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every ``finally`` and temporary file is cleaned."""


_SIGNALLED: list[int] = []


def _raise_terminated(signum, frame) -> None:
    _SIGNALLED.append(signum)
    raise _Terminated


def _stop_on_sigterm():
    """Make SIGTERM unwind like Ctrl-C (main thread only); returns the previous handler."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


def os_error_line(err: OSError) -> str:
    """One line for an OSError: the path(s) it names, the system's reason and what to do."""
    from jmlnet_geo.errors import display_path

    reason = err.strerror or (str(err).splitlines() or [type(err).__name__])[0]
    advice = {
        errno.ENOSPC: "free some space or write elsewhere (--out)",
        errno.EDQUOT: "free some space or write elsewhere (--out)",
        errno.EACCES: "check its permissions or write elsewhere (--out)",
        errno.EPERM: "check its permissions or write elsewhere (--out)",
        errno.EROFS: "write elsewhere (--out)",
    }.get(err.errno, "check the path and try again")
    paths = [p for p in (err.filename, err.filename2) if p not in (None, "")]
    where = " -> ".join(display_path(os.fsdecode(p)) for p in paths)
    return f"{where}: {reason}; {advice}" if where else f"{reason}; {advice}"


if __name__ == "__main__":
    main()
