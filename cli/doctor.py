"""``jmlgeo doctor``: versions, device and extras, to paste into a bug report."""

from __future__ import annotations

import json

import typer


def doctor(
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Versions of python, torch, torchvision, torchgeo, rasterio, GDAL, ...; device; extras."""
    from jmlnet_geo.doctor import format_report, report

    values = report()
    print(json.dumps(values, indent=2) if as_json else format_report(values))
