"""``jmlgeo import coco|dota|isaid``: a data set's boxes (and truth) as layers for plain images."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    help="Import boxes from data set formats (COCO instances, DOTA labelTxt, iSAID masks).",
    no_args_is_help=True,
)


def _report(summary, out: Path, truth: Path | None = None) -> None:
    from rich.console import Console

    console = Console()
    console.print(f"wrote {summary.boxes} boxes over {summary.images} images to {out}")
    for name, count in sorted(summary.per_class.items()):
        console.print(f"  {name}: {count}")
    if truth is not None:
        console.print(f"wrote {summary.truth} truth polygons to {truth}")


@app.command()
def coco(
    instances: Path = typer.Argument(..., help="COCO instances JSON."),
    images: Path = typer.Option(..., "--images", help="Folder holding the images."),
    out: Path = typer.Option(..., "--out", help="Box layer to write (.gpkg, .geojson, .fgb)."),
    truth: Path | None = typer.Option(
        None, "--truth", help="Also write the segmentations as a truth polygon layer."
    ),
) -> None:
    """COCO bbox -> boxes, segmentation polygons/RLE -> truth polygons (pixel coordinates)."""
    from jmlnet_geo.io.importers import import_coco

    _report(import_coco(instances, images, out, truth), out, truth)


@app.command()
def dota(
    labels: Path = typer.Argument(..., help="DOTA labelTxt folder (or one .txt file)."),
    images: Path = typer.Option(..., "--images", help="Folder holding the images."),
    out: Path = typer.Option(..., "--out", help="Box layer to write (.gpkg, .geojson, .fgb)."),
) -> None:
    """DOTA oriented quadrilaterals -> their envelopes as boxes; 'difficult' kept as a column."""
    from jmlnet_geo.io.importers import import_dota

    _report(import_dota(labels, images, out), out)


@app.command()
def isaid(
    folder: Path = typer.Argument(..., help="Folder with NAME.png and its iSAID mask PNGs."),
    out: Path = typer.Option(..., "--out", help="Box layer to write (.gpkg, .geojson, .fgb)."),
    truth: Path | None = typer.Option(
        None, "--truth", help="Also write the semantic masks as a truth polygon layer."
    ),
) -> None:
    """Instance masks -> the tight box of each instance; semantic masks -> truth polygons."""
    from jmlnet_geo.io.isaid import import_isaid

    _report(import_isaid(folder, out, truth), out, truth)
