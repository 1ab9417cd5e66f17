"""``jmlgeo evaluate``: score a class raster (proposal or prediction) against the truth."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def evaluate(
    prediction: Path = typer.Argument(..., help="Class raster: 0 background, 1..K, 255 ignore."),
    truth: Path = typer.Option(..., "--truth", help="Truth polygons (.gpkg, ...) or class raster."),
    class_field: str = typer.Option("class", "--class-field", help="Class column of the truth."),
    out: Path | None = typer.Option(None, "--out", help="Write the report as JSON here."),
    png: Path | None = typer.Option(None, "--png", help="Write the confusion matrix as PNG here."),
) -> None:
    """Confusion matrix, per-class IoU, mIoU (background included) and pixel accuracy."""
    from jmlnet_geo.evaluate import evaluate as run
    from jmlnet_geo.evaluate import report_markdown, save_confusion_png
    from jmlnet_geo.io.write import atomic_output

    report = run(prediction, truth, class_field=class_field)
    print(report_markdown(report))
    print(f"mIoU {100 * report.miou:.2f}  pixel accuracy {100 * report.pixel_accuracy:.2f}")
    if out is not None:
        with atomic_output(out) as tmp, open(tmp, "w", encoding="utf-8") as f:
            json.dump(report.as_dict(), f, indent=2)
    if png is not None:
        save_confusion_png(report, png)
