"""Proposals from boxes: BOX, GrabCut and dense CRF rasters on synthetic shapes, and the CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import assert_one_line_error, pixel_box, write_boxes, write_scene

from jmlnet_geo.errors import CancelledError, OptionError
from jmlnet_geo.io.class_raster import class_colours
from jmlnet_geo.io.raster import open_scenes
from jmlnet_geo.io.vector import boxes_for_scenes, read_boxes
from jmlnet_geo.proposals.compose import scene_stretch, write_proposals
from jmlnet_geo.proposals.crop import box_pixels, crop_window, read_crop
from jmlnet_geo.proposals.options import ProposalOptions
from jmlnet_geo.vocabulary import IGNORE


def textured_scene(height=160, width=200, seed=0, bands=3, dtype=np.uint8):
    """Grass-like noise with stripes: a background GrabCut and the CRF must not take for objects."""
    rng = np.random.default_rng(seed)
    cols = np.arange(width)[None, :]
    base = 90 + 20 * np.sin(cols / 5.0) + rng.normal(0, 20, (bands, height, width))
    return base, rng


def add_disc(data, rng, centre, radius, level=210):
    rows, cols = np.mgrid[: data.shape[1], : data.shape[2]]
    disc = (rows + 0.5 - centre[0]) ** 2 + (cols + 0.5 - centre[1]) ** 2 <= radius**2
    data[:, disc] = rng.normal(level, 12, (data.shape[0], disc.sum()))
    return disc


def run(tmp_path, scene_path, boxes_path, methods, **kwargs):
    scenes = open_scenes([scene_path])
    layer = read_boxes(boxes_path)
    scene_boxes = boxes_for_scenes(layer, scenes)
    summaries = write_proposals(
        scene_boxes, layer.classes.names, methods, tmp_path / "out", **kwargs
    )
    return summaries, layer


def read(path):
    with rasterio.open(path) as ds:
        return ds.read(1), ds.profile, ds.tags(), ds


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


@pytest.fixture
def disc_scene(tmp_path):
    data, rng = textured_scene()
    disc = add_disc(data, rng, centre=(80, 100), radius=30)
    path = write_scene(tmp_path / "disc.tif", np.clip(data, 0, 255).astype(np.uint8))
    boxes = write_boxes(tmp_path / "boxes.gpkg", [pixel_box(67, 47, 133, 113)], ["tank"])
    return path, boxes, disc


@pytest.mark.parametrize("method", ["grabcut", "crf"])
def test_disc_is_recovered(tmp_path, disc_scene, method):
    scene, boxes, disc = disc_scene
    summaries, _ = run(tmp_path, scene, boxes, [method])
    classes, *_ = read(summaries[0].methods[method].path)
    assert set(np.unique(classes)) <= {0, 1}
    assert iou(classes == 1, disc) >= 0.85
    assert summaries[0].methods[method].fallbacks == 0


def test_disc_is_recovered_at_a_capped_resolution(tmp_path, disc_scene):
    scene, boxes, disc = disc_scene
    options = ProposalOptions(max_side=48)  # the 132-px crop is processed at 48 px
    summaries, _ = run(tmp_path, scene, boxes, ["grabcut", "crf"], options=options)
    for method in ("grabcut", "crf"):
        classes, *_ = read(summaries[0].methods[method].path)
        assert iou(classes == 1, disc) >= 0.8, method


def test_box_is_the_rectangle_and_output_is_georeferenced_like_the_scene(tmp_path, rgb_scene):
    boxes = write_boxes(
        tmp_path / "b.gpkg", [pixel_box(10, 5, 30.4, 20.6), pixel_box(50, 40, 60, 70)], ["b", "a"]
    )
    summaries, layer = run(tmp_path, rgb_scene, boxes, ["box"])
    classes, profile, tags, _ = read(summaries[0].methods["box"].path)
    expected = np.zeros((80, 100), np.uint8)
    expected[5:21, 10:30] = 2  # pixel centres inside 10..30.4 x 5..20.6
    expected[40:70, 50:60] = 1
    np.testing.assert_array_equal(classes, expected)
    with rasterio.open(rgb_scene) as src:
        assert profile["crs"] == src.crs
        assert profile["transform"] == src.transform
        assert (profile["width"], profile["height"]) == (src.width, src.height)
    assert profile["dtype"] == "uint8" and profile["nodata"] == IGNORE
    assert tags["class_names"] == "a,b" and tags["proposal_method"] == "box"
    with rasterio.open(summaries[0].methods["box"].path) as ds:
        assert ds.colormap(1)[1][:3] == class_colours(2)[0]


def test_small_boxes_are_painted_over_large_ones(tmp_path, rgb_scene):
    boxes = write_boxes(
        tmp_path / "b.gpkg",
        [pixel_box(20, 20, 26, 26), pixel_box(10, 10, 60, 60), pixel_box(40, 40, 50, 50)],
        ["car", "lot", "car"],
    )
    summaries, layer = run(tmp_path, rgb_scene, boxes, ["box"])
    classes, *_ = read(summaries[0].methods["box"].path)
    car, lot = layer.classes.id_of("car"), layer.classes.id_of("lot")
    assert (classes[20:26, 20:26] == car).all()
    assert (classes[40:50, 40:50] == car).all()
    assert (classes[10:20, 10:60] == lot).all()
    assert (classes[60:] == 0).all()


def test_nodata_stays_255(tmp_path):
    data, rng = textured_scene(80, 100)
    data = np.clip(data, 1, 255).astype(np.uint8)
    data[:, :, 70:] = 0  # nodata on the right, cutting through the second box
    scene = write_scene(tmp_path / "nd.tif", data, nodata=0)
    boxes = write_boxes(
        tmp_path / "b.gpkg", [pixel_box(10, 10, 30, 30), pixel_box(60, 20, 90, 40)], ["x", "x"]
    )
    summaries, _ = run(tmp_path, scene, boxes, ["box", "grabcut", "crf"])
    for method in ("box", "grabcut", "crf"):
        classes, *_ = read(summaries[0].methods[method].path)
        assert (classes[:, 70:] == IGNORE).all(), method
        assert (classes[:, :70] != IGNORE).all(), method
    box, *_ = read(summaries[0].methods["box"].path)
    assert (box[20:40, 60:70] == 1).all()


def test_degenerate_masks_fall_back_to_the_box_and_are_counted(tmp_path):
    flat = np.full((3, 80, 100), 120, np.uint8)  # nothing to tell object from background
    scene = write_scene(tmp_path / "flat.tif", flat)
    boxes = write_boxes(tmp_path / "b.gpkg", [pixel_box(20, 20, 50, 50)], ["x"])
    summaries, _ = run(tmp_path, scene, boxes, ["box", "grabcut", "crf"])
    for method in ("grabcut", "crf"):
        m = summaries[0].methods[method]
        classes, *_ = read(m.path)
        inside = classes[20:50, 20:50]
        assert m.fallbacks == 1 and (inside == 1).all(), method
    assert summaries[0].methods["box"].fallbacks == 0


def test_one_and_two_workers_write_identical_files(tmp_path):
    data, rng = textured_scene(200, 240, seed=3)
    geoms = []
    for k, (r, c) in enumerate([(40, 40), (40, 120), (40, 200), (120, 60), (140, 150), (150, 210)]):
        add_disc(data, rng, (r, c), 12 + 2 * k, level=200 - 10 * k)
        half = 14 + 2 * k
        geoms.append(pixel_box(c - half, r - half, c + half, r + half))
    scene = write_scene(tmp_path / "many.tif", np.clip(data, 0, 255).astype(np.uint8))
    boxes = write_boxes(tmp_path / "b.gpkg", geoms, ["a", "b"] * 3)
    methods = ["box", "grabcut", "crf"]
    one, _ = run(tmp_path / "w1", scene, boxes, methods, workers=1)
    two, _ = run(tmp_path / "w2", scene, boxes, methods, workers=2)
    for method in methods:
        a = Path(one[0].methods[method].path).read_bytes()
        b = Path(two[0].methods[method].path).read_bytes()
        assert a == b, method


def test_uint16_multiband_scene_with_chosen_bands(tmp_path):
    data, rng = textured_scene(120, 120, bands=4)
    disc = add_disc(data, rng, (60, 60), 25)
    data = (data * 40).astype(np.uint16)  # 12-bit-like values
    scene = write_scene(tmp_path / "ms.tif", data)
    boxes = write_boxes(tmp_path / "b.gpkg", [pixel_box(33, 33, 87, 87)], ["x"])
    options = ProposalOptions(picture_bands=(3, 2, 1))
    summaries, _ = run(tmp_path, scene, boxes, ["grabcut"], options=options)
    classes, *_ = read(summaries[0].methods["grabcut"].path)
    assert iou(classes == 1, disc) >= 0.85


def test_unknown_method_and_cancel(tmp_path, rgb_scene):
    boxes = write_boxes(tmp_path / "b.gpkg", [pixel_box(10, 10, 30, 30)], ["x"])
    with pytest.raises(OptionError, match="choose from box, crf, grabcut"):
        run(tmp_path, rgb_scene, boxes, ["snake"])
    with pytest.raises(CancelledError):
        run(tmp_path, rgb_scene, boxes, ["box"], should_stop=lambda: True)
    assert not list((tmp_path / "out").glob("*.tif"))


def test_box_pixels_follow_the_pixel_centre_rule():
    assert box_pixels((3.0, 4.0, 10.0, 12.0)) == (3, 4, 10, 12)
    assert box_pixels((3.4, 4.6, 9.6, 12.4)) == (3, 5, 10, 12)
    assert box_pixels((5.2, 5.2, 5.4, 5.4)) == (5, 5, 6, 6)  # never empty


def test_cli_proposals_with_preview_and_json_progress(jmlgeo, tmp_path, disc_scene):
    scene, boxes, disc = disc_scene
    out = tmp_path / "props"
    result = jmlgeo(
        "proposals", scene, "--boxes", boxes, "--out", out, "--methods", "box,grabcut",
        "--preview", "--progress", "json", "--workers", "1",
    )  # fmt: skip
    assert result.code == 0, result.err
    events = [json.loads(line) for line in result.out.splitlines()]
    progress = [e for e in events if e["event"] == "progress"]
    assert progress[-1]["done"] == progress[-1]["total"] == 1
    assert events[-1] == {"event": "done"}
    for method in ("box", "grabcut"):
        assert (out / f"disc.{method}.tif").exists() and (out / f"disc.{method}.png").exists()
    summary = json.loads((out / "proposals.json").read_text())
    assert summary["scenes"][0]["methods"]["grabcut"]["boxes"] == 1
    assert not list(out.glob(".*partial*"))


def test_cli_bad_inputs_are_one_clear_line(jmlgeo, tmp_path, rgb_scene):
    boxes = write_boxes(tmp_path / "b.gpkg", [pixel_box(10, 10, 30, 30)], ["ship"])
    out = tmp_path / "out"
    result = jmlgeo(
        "proposals", rgb_scene, "--boxes", boxes, "--out", out, "--methods", "box,snake"
    )
    assert_one_line_error(result, "snake", "box, crf, grabcut")
    result = jmlgeo(
        "proposals", rgb_scene, "--boxes", boxes, "--out", out, "--classes", "plane,tank"
    )
    assert_one_line_error(result, "ship", "plane, tank")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = jmlgeo("proposals", rgb_scene, "--boxes", boxes, "--out", blocker / "sub")
    assert_one_line_error(result, "a-file")
    result = jmlgeo("proposals", rgb_scene, "--boxes", boxes, "--out", out, "--bands", "1,2,9")
    assert_one_line_error(result, "--bands")
    assert not out.exists() or not any(out.iterdir())


def test_crop_window_is_the_crop_read_crop_reads(tmp_path):
    data = np.random.default_rng(0).integers(0, 255, (3, 80, 100), np.uint8)
    (scene,) = open_scenes([write_scene(tmp_path / "s.tif", data)])
    # margin 0.5 of the larger side 20 = 10 px; min_margin 16 wins; clipped at the left edge
    assert crop_window(scene, (5, 30, 25, 40)) == (0, 14, 41, 56)
    assert crop_window(scene, (40, 30, 80, 40), margin=0.5, min_margin=4) == (20, 10, 100, 60)
    with rasterio.open(scene.path) as ds:
        crop = read_crop(ds, scene, (5, 30, 25, 40), scene_stretch(scene, ProposalOptions()))
    assert crop.picture.shape[:2] == (56 - 14, 41 - 0)
