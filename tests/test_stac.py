"""STAC out (model item, prediction items) and in (STAC Item scenes), validated offline."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from conftest import assert_one_line_error, write_scene
from pystac.extensions.classification import ClassificationExtension
from pystac.extensions.mlm import MLMExtension
from rio_stac import create_stac_item
from test_predict import CLASSES, make_bundle, scene_data

from jmlnet_geo import stac
from jmlnet_geo.card import read_card
from jmlnet_geo.schemas import MLM_SCHEMA, StacValidationError, validate

COLOURS = ["FF0000", "0000FF"]  # make_bundle's colours


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("stac") / "model.safetensors")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Validation must never reach out: any connection attempt fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _values(classes):
    return [(c.value, c.name, c.color_hint) for c in classes]


def test_model_item_validates_offline_and_round_trips_the_card(tmp_path, bundle):
    out = stac.write_model_item(bundle, tmp_path / "model.json", onnx=bundle)  # any file as onnx
    document = json.loads(out.read_text())
    assert MLM_SCHEMA in validate(document)
    item = pystac.Item.from_file(str(out))
    ext = MLMExtension.ext(item)
    assert ext.tasks == ["semantic-segmentation"] and ext.framework == "PyTorch"
    assert ext.architecture == "DeepLabV3+ (EfficientNet-Lite0)"
    assert ext.total_parameters == read_card(bundle).total_parameters > 1_000_000
    expected = [(0, "background", "000000")] + [
        (i, n, c) for i, (n, c) in enumerate(zip(CLASSES, COLOURS, strict=True), start=1)
    ]
    assert _values(ext.output[0].classes) == expected
    scene_input = document["properties"]["mlm:input"][0]
    assert scene_input["bands"] == ["b0", "b1", "b2"]
    assert scene_input["input"]["shape"] == [-1, 3, 64, 64]
    assert scene_input["value_scaling"] == [{"type": "z-score", "mean": 100.0, "stddev": 40.0}] * 3
    assert "mlm:pretrained_source" not in document["properties"]  # the card does not say
    assert Path(item.assets["model"].get_absolute_href()) == Path(bundle).resolve()
    assert set(item.assets) == {"model", "onnx"}
    assert all("mlm:model" in a.roles for a in item.assets.values())


def test_validation_reports_the_first_error_and_missing_schemas(tmp_path, bundle):
    document = stac.model_item(bundle, tmp_path / "m.json").to_dict(include_self_link=False)
    document = json.loads(json.dumps(document))
    del document["properties"]["mlm:input"]
    with pytest.raises(StacValidationError, match="mlm:input"):
        validate(document, "m.json")
    document["stac_extensions"].append("https://example.org/unknown/v1.0.0/schema.json")
    with pytest.raises(StacValidationError, match="not available offline"):
        validate({**document, "stac_extensions": document["stac_extensions"][-1:]}, "m.json")


def test_cli_export_stac_and_predict_stac_link_up(jmlgeo, tmp_path, bundle):
    local = Path(shutil.copy(bundle, tmp_path / "model.safetensors"))
    result = jmlgeo("export", local, "--stac", tmp_path / "model.json")
    assert result.code == 0, result.err
    scene = write_scene(tmp_path / "scene.tif", scene_data(70, 90))
    out = tmp_path / "out"
    args = ("predict", local, scene, "--out", out, "--polygons", "--stac", "--loader-workers", "0")
    result = jmlgeo(*args)
    assert result.code == 0, result.err
    path = out / "scene.item.json"
    validate(json.loads(path.read_text()))
    item = pystac.Item.from_file(str(path))
    classes = ClassificationExtension.ext(item.assets["classes"]).classes
    assert _values(classes)[:3] == [
        (0, "background", "000000"),
        (1, "car", "FF0000"),
        (2, "roof", "0000FF"),
    ]
    assert (classes[-1].value, classes[-1].nodata) == (255, True)
    assert Path(item.assets["polygons"].get_absolute_href()) == out / "scene.polygons.gpkg"
    link = item.get_links("derived_from")[0]
    assert Path(link.get_absolute_href()) == tmp_path / "model.json"
    west, south, east, north = item.bbox  # UTM 32N near 9 E, 45 N
    assert 8.99 < west < east < 9.01 and 45.1 < south < north < 45.2
    assert item.geometry["type"] == "Polygon" and "proj:shape" in item.properties


def test_cli_failures_are_one_line(jmlgeo, tmp_path, bundle):
    assert_one_line_error(jmlgeo("export", bundle), "--stac")
    scene = write_scene(tmp_path / "scene.tif", scene_data(40, 40))
    out = tmp_path / "out"
    assert_one_line_error(
        jmlgeo("predict", bundle, scene, "--out", out, "--stac", "--model-item", "gone.json"),
        "gone.json",
        "jmlgeo export",
    )
    two = write_scene(tmp_path / "two.tif", scene_data(40, 40, bands=2))
    item = create_stac_item(str(two), id="two", asset_name="image", with_raster=True)
    item.save_object(dest_href=str(tmp_path / "two.json"), include_self_link=False)
    assert_one_line_error(jmlgeo("predict", bundle, tmp_path / "two.json", "--out", out),
                          "two.json", "3 bands", "--asset")  # fmt: skip
    assert_one_line_error(
        jmlgeo("predict", bundle, tmp_path / "two.json", "--out", out, "--asset", "rgb"),
        "two.json",
        "no asset 'rgb'",
    )
    (tmp_path / "junk.json").write_text("{}")
    assert_one_line_error(jmlgeo("predict", bundle, "junk.json", "--out", out), "junk.json")


def test_prediction_from_a_stac_item_equals_the_cog_it_points_to(jmlgeo, tmp_path, bundle):
    (tmp_path / "data").mkdir()
    scene = write_scene(tmp_path / "data" / "scene.tif", scene_data(70, 90, seed=3))
    item = create_stac_item(str(scene), id="scene", asset_name="image", with_raster=True)
    item.add_asset(
        "thumbnail", pystac.Asset("thumb.png", media_type="image/png", roles=["thumbnail"])
    )
    item.set_self_href(str(tmp_path / "catalog" / "scene.json"))
    item.make_asset_hrefs_relative()
    item.save_object(include_self_link=False)
    assert not Path(item.assets["image"].href).is_absolute()
    for source, out in ((tmp_path / "catalog" / "scene.json", "a"), (scene, "b")):
        result = jmlgeo("predict", bundle, source, "--out", tmp_path / out, "--loader-workers", "0")
        assert result.code == 0, result.err
    with (
        rasterio.open(tmp_path / "a" / "scene.classes.tif") as a,
        rasterio.open(tmp_path / "b" / "scene.classes.tif") as b,
    ):
        assert np.array_equal(a.read(), b.read()) and a.transform == b.transform


def test_plain_image_prediction_item_has_null_geometry_and_says_why(tmp_path, bundle):
    from jmlnet_geo.predict import PredictOptions, Predictor

    image = write_scene(tmp_path / "image.png", scene_data(40, 50), crs=None)
    with pytest.warns(UserWarning):
        result = Predictor(bundle).predict(
            image, tmp_path / "out", PredictOptions(loader_workers=0)
        )
    path = stac.write_prediction_item(result.classes, bundle)
    document = json.loads(path.read_text())
    validate(document)
    assert document["geometry"] is None and "bbox" not in document
    assert "without georeferencing" in document["properties"]["description"]
