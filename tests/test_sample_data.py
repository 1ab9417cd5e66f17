"""The committed sample is exactly what sample_data/make_sample_data.py generates."""

import subprocess
import sys

import geopandas as gpd
import numpy as np
import rasterio
from conftest import REPO

SAMPLE = REPO / "sample_data"


def test_committed_sample_is_reproduced_by_the_script(tmp_path):
    subprocess.run(
        [sys.executable, SAMPLE / "make_sample_data.py", "--out", tmp_path],
        check=True,
        capture_output=True,
    )
    with (
        rasterio.open(SAMPLE / "scene.tif") as ours,
        rasterio.open(tmp_path / "scene.tif") as fresh,
    ):
        assert ours.profile == fresh.profile
        np.testing.assert_array_equal(ours.read(), fresh.read())
    for name in ("boxes.gpkg", "truth.gpkg"):
        ours, fresh = gpd.read_file(SAMPLE / name), gpd.read_file(tmp_path / name)
        assert list(ours["class"]) == list(fresh["class"])
        assert ours.geometry.geom_equals_exact(fresh.geometry, tolerance=1e-6).all()


def test_sample_is_a_small_projected_scene_with_three_classes_and_exact_boxes():
    with rasterio.open(SAMPLE / "scene.tif") as ds:
        assert ds.crs.to_epsg() == 32633 and ds.crs.is_projected and ds.res == (0.5, 0.5)
        assert (ds.width, ds.height, ds.count, ds.nodata) == (1024, 1024, 3, 0)
    truth = gpd.read_file(SAMPLE / "truth.gpkg")
    boxes = gpd.read_file(SAMPLE / "boxes.gpkg")
    counts = truth["class"].value_counts()
    assert set(counts.index) == {"building", "storage_tank", "vehicle"} and counts.min() >= 10
    assert boxes.crs == truth.crs and list(boxes["class"]) == list(truth["class"])
    assert boxes.geometry.geom_equals_exact(truth.geometry.envelope, tolerance=1e-6).all()
    total = sum(p.stat().st_size for p in SAMPLE.iterdir() if p.is_file())
    assert total < 5 * 2**20
