"""``jmlgeo info``: what is in the scenes and the box layer, before anything is trained."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def info(
    scenes: list[Path] = typer.Argument(..., help="Scenes (GeoTIFF or any GDAL-readable image)."),
    boxes: Path | None = typer.Option(None, "--boxes", help="Box layer to count per scene."),
    class_field: str = typer.Option("class", "--class-field", help="Column with the class."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """CRS, size, resolution, bands, dtype, nodata, band statistics, boxes per class per scene."""
    from jmlnet_geo.info import describe

    report = describe(scenes, boxes, class_field=class_field)
    if as_json:
        print(json.dumps(report, indent=2, default=str))
        return
    _print_report(report)


def _print_report(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for s in report["scenes"]:
        console.print(
            f"[bold]{s['path']}[/bold]  {s['width']} x {s['height']} px, {s['bands']} band(s) "
            f"{s['dtype']}, nodata {s['nodata']}, {s['crs']}, "
            f"resolution {s['resolution'][0]:.6g} x {s['resolution'][1]:.6g}"
        )
        console.print(f"  bounds (left, bottom, right, top): {_fmt(s['bounds'])}")
        table = Table("band", "name", "min", "max", "mean", "std", "valid %", box=None)
        for b in s["statistics"]:
            table.add_row(
                str(b["band"]),
                b["name"],
                f"{b['minimum']:.6g}",
                f"{b['maximum']:.6g}",
                f"{b['mean']:.6g}",
                f"{b['std']:.6g}",
                f"{100 * b['valid_fraction']:.1f}",
            )
        console.print(table)
        if s["statistics"] and s["statistics"][0]["approximate"]:
            console.print("  (statistics approximate: computed on a decimated read)")
    boxes = report["boxes"]
    if boxes is None:
        return
    console.print(
        f"[bold]{boxes['path']}[/bold]  {boxes['features']} features, {boxes['kept']} boxes kept, "
        f"{boxes['dropped_empty']} empty, {boxes['dropped_outside_or_small']} outside every given "
        f"scene or too small; CRS {boxes['crs'] or 'none (pixel coordinates)'}"
    )
    table = Table("scene", "boxes", "clipped", "per class", box=None)
    for row in boxes["per_scene"]:
        counts = ", ".join(f"{c} {n}" for c, n in row["per_class"].items() if n) or "-"
        table.add_row(Path(row["scene"]).name, str(row["boxes"]), str(row["clipped"]), counts)
    console.print(table)


def _fmt(values: list[float]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"
