"""``jmlgeo info``: what is in the scenes and the box layer, or what a bundle's card says."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def info(
    scenes: list[Path] = typer.Argument(
        ..., help="Scenes (GeoTIFF or any GDAL-readable image), or bundles (.safetensors)."
    ),
    boxes: Path | None = typer.Option(None, "--boxes", help="Box layer to count per scene."),
    class_field: str = typer.Option("class", "--class-field", help="Column with the class."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Scenes: CRS, size, resolution, bands, statistics, boxes per class. Bundles: the card."""
    from jmlnet_geo.card import looks_like_bundle
    from jmlnet_geo.info import describe, describe_bundle

    bundles = [p for p in scenes if looks_like_bundle(p)]
    rasters = [p for p in scenes if p not in bundles]
    if boxes is not None and not rasters:
        raise typer.BadParameter("--boxes counts boxes per scene: give scenes too")
    report = describe(rasters, boxes, class_field=class_field) if rasters else {}
    if bundles:
        report["bundles"] = [describe_bundle(p) for p in bundles]
    if as_json:
        print(json.dumps(report, indent=2, default=str))
        return
    for summary in report.get("bundles", []):
        _print_bundle(summary)
    if rasters:
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


def _print_bundle(b: dict) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(highlight=False)
    arch = b["architecture"] or {}
    console.print(
        f"[bold]{escape(b['path'])}[/bold]  jmlgeo bundle (format {b['format_version']}), "
        f"{b['total_parameters'] / 1e6:.2f} M parameters, {b['size_bytes'] / 1e6:.1f} MB"
    )
    console.print(f"  architecture: {_flat(arch) if arch else 'not recorded'}")
    table = Table("id", "class", "colour", "", box=None, padding=(0, 1, 0, 2))
    for c in b["classes"]:
        swatch = f"[on {c['colour']}]    [/]" if c["colour"] else ""
        table.add_row(str(c["id"]), escape(c["name"]), c["colour"] or "-", swatch)
    console.print(table)
    bands, norm = b["bands"], b["normalization"] or {}
    names = bands["names"] or []
    table = Table("band", "name", "mean", "std", box=None, padding=(0, 1, 0, 2))
    for i in range(bands["count"] or 0):
        mean, std = norm.get("mean") or [], norm.get("std") or []
        table.add_row(
            str(i + 1),
            escape(names[i]) if i < len(names) else "-",
            f"{mean[i]:.6g}" if i < len(mean) else "-",
            f"{std[i]:.6g}" if i < len(std) else "-",
        )
    console.print(f"  {bands['count']} band(s), normalisation (raw value - mean) / std:")
    console.print(table)
    res = b["resolution"]
    where = f"{res[0]:.6g} x {res[1]:.6g} {b['crs_units'] or ''}".rstrip() if res else None
    console.print(
        f"  tile {b['tile_size']} px, resolution {where or 'none (plain images, pixel units)'}"
    )
    for key in ("supervision", "stages", "training_data", "validation", "versions", "config"):
        value = b[key]
        label = key.replace("_", " ")
        if value is None:
            console.print(f"  {label}: [dim]not recorded[/dim]")
        elif isinstance(value, list):
            console.print(f"  {label}:")
            for i, item in enumerate(value, start=1):
                console.print(
                    f"    {i}. {escape(_flat(item) if isinstance(item, dict) else str(item))}"
                )
        elif isinstance(value, dict):
            console.print(f"  {label}:")
            for k, v in value.items():
                text = _flat(v) if isinstance(v, dict) else _text(v)
                console.print(f"    {escape(str(k))}: {escape(text)}")
        else:
            console.print(f"  {label}: {escape(str(value))}")
    for key, value in b["other"].items():
        console.print(f"  {escape(key)}: {escape(json.dumps(value, default=str))}")


def _flat(values: dict) -> str:
    """``k v, k v`` for a dict; nested values as compact JSON."""
    return ", ".join(f"{k} {_text(v)}" for k, v in values.items())


def _text(value: object) -> str:
    """A string as it is, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str, separators=(",", ":"))
