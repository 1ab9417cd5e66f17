"""``jmlgeo audit``: which boxes to fix first (class?, extent?, empty?) and the missing ones."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from jmlnet_geo.cli.progress import PROGRESS_OPTION, ProgressDisplay, ProgressMode


def audit(
    scenes: list[Path] = typer.Argument(..., help="Scenes (GeoTIFF or any GDAL-readable image)."),
    boxes: Path = typer.Option(..., "--boxes", help="Box layer (.gpkg, .geojson, .shp, .fgb)."),
    out: Path = typer.Option(..., "--out", help="Output GeoPackage (layers boxes, missing)."),
    model: Path | None = typer.Option(None, "--model", help="A model bundle (.safetensors)."),
    predictions: Path | None = typer.Option(
        None, "--predictions", help="Folder of jmlgeo predict --probabilities outputs."
    ),
    run: Path | None = typer.Option(
        None, "--run", help="Reuse the proposal rasters of a jmlgeo train/proposals folder."
    ),
    proposals: str | None = typer.Option(
        None, "--proposals", help="Proposal methods, a,b (default: cached ones, or crf,grabcut)."
    ),
    class_field: str = typer.Option("class", "--class-field", help="Column with the class."),
    classes: str | None = typer.Option(None, "--classes", help="Fixed class order, a,b,c."),
    min_pixels: int | None = typer.Option(
        None,
        "--min-pixels",
        min=1,
        help="missing: smallest object, pixels (default: per class, from its boxes).",
    ),
    min_score: float = typer.Option(
        0.5, "--min-score", help="missing: smallest mean class probability.", min=0.0, max=1.0
    ),
    device: str = typer.Option("auto", "--device", help="Model device: auto, cpu or cuda."),
    workers: int = typer.Option(0, "--workers", min=0, help="Proposal processes (0: all)."),
    progress: ProgressMode = PROGRESS_OPTION,
) -> None:
    """Score every box (doubt 0-1, a reason), most doubtful first; with a model, missing boxes."""
    from jmlnet_geo.audit import AuditOptions
    from jmlnet_geo.audit_layers import write_audit
    from jmlnet_geo.audit_run import AuditInputs, run_audit
    from jmlnet_geo.io.write import check_writable

    check_writable(out)
    display = ProgressDisplay(progress)
    inputs = AuditInputs(
        scenes=tuple(scenes), boxes=boxes, class_field=class_field,
        classes=tuple(c.strip() for c in classes.split(",")) if classes else None,
        model=model, predictions=predictions, run=run,
        methods=tuple(m.strip().lower() for m in proposals.split(",") if m.strip())
        if proposals else None,
    )  # fmt: skip
    options = AuditOptions(min_pixels=min_pixels, min_score=min_score)
    result = run_audit(
        inputs, options, workers=workers or os.cpu_count() or 1, device=device,
        stage_progress=display.stage, message=display.message,
    )  # fmt: skip
    write_audit(result.boxes, result.missing, out)
    scored = result.boxes["doubt"].notna().sum()
    doubtful = int((result.boxes["doubt"] >= 0.5).sum())
    display.message(f"{out}: {scored} boxes scored, {doubtful} with doubt >= 0.5")
    if result.missing is not None:
        display.message(f"{out}: {len(result.missing)} missing-box candidates")
    display.output("audit", out)
    display.done()
