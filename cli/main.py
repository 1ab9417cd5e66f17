"""Entry point of ``jmlgeo``: the typer app, one-line errors and one-line warnings.

Command modules import the library inside their functions, so ``jmlgeo --help`` loads neither
torch nor cv2 (nor rasterio/geopandas).
"""

from __future__ import annotations

import sys
import warnings

import typer
from jmlnet_geo.cli import detect, evaluate, importers, info, predict, proposals, train

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
) -> None:
    """Pixel-accurate maps from bounding boxes (JMLNet) for georeferenced scenes."""


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    """Run ``jmlgeo``; a :class:`JmlGeoError` becomes ``error: <message>`` and exit code 1."""
    warnings.showwarning = _show_warning
    try:
        app(args=argv, prog_name="jmlgeo")
    except JmlGeoError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted; no output was left half-written", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
