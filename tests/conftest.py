"""Shared fixtures: tiny rasters in a real projected CRS, box layers, the CLI, and shared data."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from shapely.geometry import box

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
UTM = "EPSG:32632"  # UTM 32N: the scenes below sit near its central meridian (9 E)
ORIGIN = (500_000.0, 5_000_000.0)


def write_scene(
    path: Path,
    data: np.ndarray,
    crs: str | None = UTM,
    transform: Affine | None = None,
    nodata: float | None = None,
    res: float = 0.5,
) -> Path:
    """Write a (bands, rows, cols) array as a GeoTIFF (or PNG when crs is None and path is .png)."""
    count, height, width = data.shape
    profile = {"count": count, "height": height, "width": width, "dtype": data.dtype.name}
    if path.suffix.lower() == ".png":
        profile["driver"] = "PNG"
    else:
        profile.update(
            driver="GTiff",
            crs=crs,
            transform=transform or Affine(res, 0, ORIGIN[0], 0, -res, ORIGIN[1]),
            nodata=nodata,
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PNG: no georeferencing on purpose
        with rasterio.open(path, "w", **profile) as ds:
            ds.write(data)
    return path


def pixel_box(col0: float, row0: float, col1: float, row1: float, res: float = 0.5):
    """A map-coordinate box of a pixel rectangle in the default test scene grid."""
    return box(
        ORIGIN[0] + col0 * res,
        ORIGIN[1] - row1 * res,
        ORIGIN[0] + col1 * res,
        ORIGIN[1] - row0 * res,
    )


def write_boxes(path: Path, geometries, classes, crs: str | None = UTM, **columns) -> Path:
    frame = gpd.GeoDataFrame({"class": classes, **columns}, geometry=list(geometries), crs=crs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame.to_file(path, driver="GPKG")
    return path


@pytest.fixture
def rgb_scene(tmp_path: Path) -> Path:
    """A 3-band uint8 100 x 80 UTM scene at 0.5 m with a gradient."""
    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, (3, 80, 100), dtype=np.uint8)
    return write_scene(tmp_path / "scene.tif", data)


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def jmlgeo(capsys, monkeypatch):
    """Run ``jmlgeo`` in-process; returns exit code, stdout and stderr."""
    from jmlnet_geo.cli.main import main

    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # restored afterwards
    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: object) -> CliResult:
        capsys.readouterr()
        code = 0
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            try:
                main([str(a) for a in args])
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else 1
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def assert_one_line_error(result: CliResult, *fragments: str) -> str:
    """The CLI failed with one 'error: ...' line containing every fragment."""
    assert result.code != 0, result
    errors = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.err
    assert "Traceback" not in result.err
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def needs_shared_data(*parts: str) -> Path:
    """Path under ../shared/data, or skip the test when it is absent (a user's clone)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared/data is only beside the developers' checkout)")
    return path


@pytest.fixture(autouse=True)
def _in_tmp_cwd(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
