"""Entry point of ``jmlgeo``: the typer app, one-line errors and one-line warnings.

Command modules import the library inside their functions, so ``jmlgeo --help`` loads neither
torch nor cv2 (nor rasterio/geopandas).
"""

from __future__ import annotations

import os
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
    args = sys.argv[1:] if argv is None else argv
    if "--verbose" not in args and "-v" not in args:
        _quiet_gdal_repeats()
    _WARNINGS.__init__()  # (main runs many times in one process in the tests)
    try:
        app(args=argv, prog_name="jmlgeo")
    except JmlGeoError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted; no output was left half-written", file=sys.stderr)
        sys.exit(130)
    finally:
        _WARNINGS.summary()


if __name__ == "__main__":
    main()
