"""bench/data.py's layer helpers (the benches' train/val subsets of a box layer)."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pytest
import shapely

from bench.data import layer_classes, layer_subset


@pytest.mark.filterwarnings("ignore:.crs. was not provided")  # plain images: pixel boxes
def test_layer_subset_keeps_the_rows_of_the_named_images(tmp_path):
    frame = gpd.GeoDataFrame(
        {
            "class": ["ship", "airplane", "ship", "harbor"],
            "image": ["a.jpg", "b.jpg", "c.jpg", "a.jpg"],
        },
        geometry=[shapely.box(i, 0, i + 1, 1) for i in range(4)],
    )
    layer = tmp_path / "boxes.gpkg"
    frame.to_file(layer, driver="GPKG")
    out = layer_subset(layer, [Path("/data/imgs/a.jpg"), "c.jpg"], tmp_path / "train.gpkg")
    kept = gpd.read_file(out)
    assert list(kept["image"]) == ["a.jpg", "c.jpg", "a.jpg"]
    assert [g.bounds[0] for g in kept.geometry] == [0, 2, 3]
    assert layer_classes(layer) == ("airplane", "harbor", "ship")
    assert layer_classes(out) == ("harbor", "ship")
