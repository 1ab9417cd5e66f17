"""The CLI as users meet it: reports, imports, and one clear line for every bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, assert_one_line_error, pixel_box, write_boxes, write_scene
from shapely.geometry import Point, box

SAMPLE = REPO / "sample_data"


def test_help_is_light_and_fast():
    code = (
        "import sys, jmlnet_geo, jmlnet_geo.cli.main as m\n"
        "heavy = [k for k in ('torch', 'cv2', 'rasterio', 'geopandas', 'dask', 'distributed')\n"
        "         if k in sys.modules]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    env = {**os.environ, "COLUMNS": "120"}
    exe = Path(sys.executable).with_name("jmlgeo")
    helped = subprocess.run([exe, "--help"], capture_output=True, text=True, env=env, check=True)
    assert "info" in helped.stdout and "import" in helped.stdout


def test_console_script_exits_non_zero_with_one_line(tmp_path):
    exe = Path(sys.executable).with_name("jmlgeo")
    out = subprocess.run([exe, "info", "nope.tif"], capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stderr.strip() == "error: nope.tif: scene not found; check the path"


def test_jmlgeo_keeps_freed_buffers_for_reuse(jmlgeo, monkeypatch):
    import platform

    import jmlnet_geo.cli.main as cli_main

    from jmlnet_geo.children import tune_malloc

    calls = []
    monkeypatch.setattr(cli_main, "tune_malloc", lambda: calls.append("tuned") or True)
    assert jmlgeo("--version").code == 0
    assert calls == ["tuned"]  # every command, before it runs
    assert tune_malloc() is (platform.libc_ver()[0] == "glibc")  # glibc takes the thresholds


def test_info_on_the_sample(jmlgeo):
    result = jmlgeo("info", SAMPLE / "scene.tif", "--boxes", SAMPLE / "boxes.gpkg", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    (scene,) = report["scenes"]
    assert scene["crs"] == "EPSG:32633" and scene["resolution"] == [0.5, 0.5]
    assert (scene["width"], scene["height"], scene["bands"], scene["dtype"]) == (
        1024,
        1024,
        3,
        "uint8",
    )
    assert scene["nodata"] == 0 and 0.95 < scene["statistics"][0]["valid_fraction"] < 1
    boxes = report["boxes"]
    assert boxes["classes"] == ["building", "storage_tank", "vehicle"]
    assert boxes["kept"] == boxes["features"] == sum(boxes["per_scene"][0]["per_class"].values())
    human = jmlgeo("info", SAMPLE / "scene.tif", "--boxes", SAMPLE / "boxes.gpkg")
    assert "EPSG:32633" in human.out and "storage_tank" in human.out


def test_import_coco_and_dota_via_cli(jmlgeo, tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    write_scene(images / "a.png", np.zeros((3, 20, 20), np.uint8), crs=None)
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 20, "height": 20}],
        "categories": [{"id": 1, "name": "ship"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [1, 1, 5, 5],
                "segmentation": [[1, 1, 6, 1, 6, 6]],
            }
        ],
    }
    (tmp_path / "c.json").write_text(json.dumps(coco))
    result = jmlgeo(
        "import", "coco", "c.json", "--images", images, "--out", "b.gpkg", "--truth", "t.gpkg"
    )
    assert result.code == 0 and "wrote 1 boxes over 1 images" in result.out
    info = jmlgeo("info", images / "a.png", "--boxes", "b.gpkg", "--json")
    assert info.code == 0 and json.loads(info.out)["boxes"]["kept"] == 1
    assert info.err.count("warning:") == 1 and "no georeferencing (a.png)" in info.err
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("gsd:0.5\n1 1 8 2 7 9 0 8 ship 1\n")
    dota = jmlgeo("import", "dota", "labels", "--images", images, "--out", "d.geojson")
    assert dota.code == 0 and "wrote 1 boxes" in dota.out


def _bad_input(case, tmp_path):
    """Arguments to jmlgeo for one bad input, and the fragments its error must hold."""
    scene = write_scene(tmp_path / "scene.tif", np.ones((3, 80, 100), np.uint8))
    boxes = tmp_path / "boxes.gpkg"
    if case == "missing raster":
        return ["info", "gone.tif"], ["gone.tif", "not found"]
    if case == "unreadable raster":
        (tmp_path / "junk.tif").write_bytes(b"\x00" * 100)
        return ["info", "junk.tif"], ["junk.tif", "cannot be read as a raster"]
    if case == "missing box file":
        return ["info", scene, "--boxes", "nothing.gpkg"], ["nothing.gpkg", "box file not found"]
    if case == "class field absent":
        write_boxes(boxes, [pixel_box(1, 1, 9, 9)], ["a"])
        return ["info", scene, "--boxes", boxes, "--class-field", "kind"], [
            "boxes.gpkg",
            "no class field 'kind' (columns: class)",
            "--class-field",
        ]
    if case == "layer without CRS":
        write_boxes(boxes, [pixel_box(1, 1, 9, 9)], ["a"], crs=None)
        return ["info", scene, "--boxes", boxes], [
            "boxes.gpkg",
            "has no CRS",
            "EPSG:32632",
            "ogr2ogr",
        ]
    if case == "no overlap":
        write_boxes(boxes, [box(0, 0, 5, 5)], ["a"])
        return ["info", scene, "--boxes", boxes], [
            "boxes.gpkg",
            "no box falls on any scene",
            "(0, 0, 5, 5)",
            "scene.tif (500000,",
            "EPSG:32632",
        ]
    if case == "empty layer":
        write_boxes(boxes, [], [])
        return ["info", scene, "--boxes", boxes], ["boxes.gpkg", "has no features"]
    if case == "non-polygon geometries":
        write_boxes(boxes, [Point(500_001, 4_999_990)], ["a"])
        return ["info", scene, "--boxes", boxes], ["boxes.gpkg", "need polygons, found 1 Point"]
    if case == "coco images missing":
        (tmp_path / "imgs").mkdir()
        coco = {
            "images": [{"id": 1, "file_name": "x.jpg", "width": 9, "height": 9}],
            "categories": [{"id": 1, "name": "a"}],
            "annotations": [],
        }
        (tmp_path / "c.json").write_text(json.dumps(coco))
        return ["import", "coco", "c.json", "--images", "imgs", "--out", "o.gpkg"], [
            "c.json",
            "1 of 1 images",
            "x.jpg",
            "--images",
        ]
    if case == "unwritable output":
        (tmp_path / "imgs").mkdir()
        (tmp_path / "c.json").write_text(
            json.dumps({"images": [], "categories": [], "annotations": []})
        )
        return ["import", "coco", "c.json", "--images", "imgs", "--out", "no/such/dir/o.gpkg"], [
            "o.gpkg",
            "does not exist",
        ]
    if case == "unknown output format":
        (tmp_path / "imgs").mkdir()
        (tmp_path / "c.json").write_text(
            json.dumps({"images": [], "categories": [], "annotations": []})
        )
        return ["import", "coco", "c.json", "--images", "imgs", "--out", "o.csv"], [
            "o.csv",
            "cannot write '.csv'",
            ".gpkg",
        ]
    if case == "inconsistent coco":
        (tmp_path / "imgs").mkdir()
        coco = {
            "images": [],
            "categories": [{"id": 1, "name": "a"}],
            "annotations": [{"id": 1, "image_id": 5, "category_id": 1, "bbox": [0, 0, 1, 1]}],
        }
        (tmp_path / "c.json").write_text(json.dumps(coco))
        return ["import", "coco", "c.json", "--images", "imgs", "--out", "o.gpkg"], [
            "c.json",
            "unknown image",
        ]
    raise AssertionError(case)


BAD_INPUTS = [
    "missing raster",
    "unreadable raster",
    "missing box file",
    "class field absent",
    "layer without CRS",
    "no overlap",
    "empty layer",
    "non-polygon geometries",
    "coco images missing",
    "unwritable output",
    "unknown output format",
    "inconsistent coco",
]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_clear_line(jmlgeo, tmp_path, case):
    args, fragments = _bad_input(case, tmp_path)
    before = set(os.listdir(tmp_path))
    result = jmlgeo(*args)
    assert_one_line_error(result, *fragments)
    assert set(os.listdir(tmp_path)) == before  # nothing written, not even a partial file


def test_import_isaid_via_cli(jmlgeo, tmp_path):
    from test_importers import write_isaid

    write_isaid(tmp_path / "isaid" / "images")
    result = jmlgeo("import", "isaid", "isaid", "--out", "b.gpkg", "--truth", "t.gpkg")
    assert result.code == 0, result.err
    assert "wrote 3 boxes over 1 images to b.gpkg" in result.out
    assert "small_vehicle: 2" in result.out and "wrote 3 truth polygons to t.gpkg" in result.out
    assert_one_line_error(jmlgeo("import", "isaid", "nope", "--out", "b.gpkg"), "nope")


def _sample_class_rasters(folder):
    """perfect.tif (the sample truth) and shifted.tif (it, 3 px to the right) in ``folder``."""
    import rasterio

    from jmlnet_geo.evaluate import truth_raster
    from jmlnet_geo.io.raster import open_scene

    scene = open_scene(SAMPLE / "scene.tif")
    labels = truth_raster(scene, SAMPLE / "truth.gpkg")
    folder.mkdir(exist_ok=True)
    profile = {"driver": "GTiff", "width": scene.width, "height": scene.height, "count": 1}
    profile.update(dtype="uint8", crs=scene.crs, transform=scene.transform)
    for name, values in (("perfect", labels), ("shifted", np.roll(labels, 3, axis=1))):
        with rasterio.open(folder / f"{name}.tif", "w", **profile) as ds:
            ds.write(values, 1)
    return folder / "perfect.tif", folder / "shifted.tif"


def test_evaluate_pools_several_predictions(jmlgeo, tmp_path):
    perfect, shifted = _sample_class_rasters(tmp_path / "preds")
    truth = SAMPLE / "truth.gpkg"
    singles = []
    for path in (perfect, shifted):
        assert jmlgeo("evaluate", path, "--truth", truth, "--out", f"{path.stem}.json").code == 0
        singles.append(json.loads((tmp_path / f"{path.stem}.json").read_text()))
    result = jmlgeo("evaluate", perfect, shifted, "--truth", truth, "--out", "r.json")
    assert result.code == 0, result.err
    pooled = json.loads((tmp_path / "r.json").read_text())
    confusion = np.array(singles[0]["confusion"]) + np.array(singles[1]["confusion"])
    assert pooled["confusion"] == confusion.tolist()
    assert [s["confusion"] for s in pooled["scenes"]] == [s["confusion"] for s in singles]
    assert "| perfect.tif | 100.0 | 100.0 | 100.0 | 100.0 | 100.0 |" in result.out
    assert "| shifted.tif |" in result.out and "| pooled |" in result.out
    miou = float(result.out.strip().splitlines()[-1].split()[1])
    assert miou == pytest.approx(100 * pooled["miou"], abs=0.005)
    assert 100 * singles[1]["miou"] < miou < 100


def test_evaluate_takes_a_folder(jmlgeo, tmp_path):
    perfect, shifted = _sample_class_rasters(tmp_path / "preds")
    truth = SAMPLE / "truth.gpkg"
    files = jmlgeo("evaluate", perfect, shifted, "--truth", truth)
    folder = jmlgeo("evaluate", "preds", "--truth", truth, "--out", "r.json")
    assert folder.code == 0, folder.err
    assert folder.out == files.out
    assert len(json.loads((tmp_path / "r.json").read_text())["scenes"]) == 2
    (tmp_path / "empty").mkdir()
    assert_one_line_error(jmlgeo("evaluate", "empty", "--truth", truth), "empty", "no .tif")


def test_evaluate_truth_against_itself_and_a_shifted_copy(jmlgeo, tmp_path):
    import rasterio

    from jmlnet_geo.evaluate import truth_raster
    from jmlnet_geo.io.raster import open_scene

    scene = open_scene(SAMPLE / "scene.tif")
    labels = truth_raster(scene, SAMPLE / "truth.gpkg")
    profile = {
        "driver": "GTiff",
        "width": scene.width,
        "height": scene.height,
        "count": 1,
        "dtype": "uint8",
        "crs": scene.crs,
        "transform": scene.transform,
    }
    with rasterio.open(tmp_path / "perfect.tif", "w", **profile) as ds:
        ds.write(labels, 1)
    result = jmlgeo(
        "evaluate",
        "perfect.tif",
        "--truth",
        SAMPLE / "truth.gpkg",
        "--out",
        "r.json",
        "--png",
        "c.png",
    )
    assert result.code == 0, result.err
    assert "mIoU 100.00" in result.out and "| building | storage_tank | vehicle |" in result.out
    assert json.loads((tmp_path / "r.json").read_text())["miou"] == 1.0
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    with rasterio.open(tmp_path / "shifted.tif", "w", **profile) as ds:
        ds.write(np.roll(labels, 3, axis=1), 1)
    shifted = jmlgeo("evaluate", "shifted.tif", "--truth", SAMPLE / "truth.gpkg")
    miou = float(shifted.out.strip().splitlines()[-1].split()[1])
    assert 20 < miou < 95  # vehicles are ~4 px wide: a 3 px shift hurts them most
    missing = jmlgeo("evaluate", "perfect.tif", "--truth", "nope.gpkg")
    assert_one_line_error(missing, "nope.gpkg")
