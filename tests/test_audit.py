"""jmlgeo audit on tiny scenes where the answer is known."""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from conftest import UTM, pixel_box, write_boxes, write_scene

from jmlnet_geo.audit import (
    AuditOptions,
    doubt,
    model_scores,
    proposal_agreement,
    proposal_extent,
    proposal_fill,
)
from jmlnet_geo.audit_missing import (
    Component,
    default_min_pixels,
    drop_fragments,
    drop_misshapen,
    scan_objects,
)


def test_proposal_scores_by_hand():
    full = np.ones((4, 4), bool)
    half = np.zeros((4, 4), bool)
    half[:, :2] = True
    assert proposal_agreement([full, half]) == pytest.approx(0.5)
    assert math.isnan(proposal_agreement([full]))
    assert proposal_fill([full, half]) == pytest.approx(0.75)
    assert proposal_extent([full, half]) == pytest.approx(0.75)


def test_model_scores_and_reasons():
    crop = np.zeros((20, 20), np.uint8)
    crop[5:15, 5:15] = 2  # an object of class 2
    swapped = model_scores(crop, (5, 5, 15, 15), 1)
    assert swapped.class_share == 0 and swapped.other_class == 2 and swapped.other_share == 1
    assert doubt(swapped)[1] == "class?" and doubt(swapped)[0] == pytest.approx(1.0)
    right = model_scores(crop, (5, 5, 15, 15), 2)
    assert right.extent_iou == pytest.approx(1.0) and doubt(right)[0] == pytest.approx(0.0)
    shifted = model_scores(crop, (10, 10, 20, 20), 2)  # half its size off, both ways
    assert shifted.extent_iou == pytest.approx(25 / 175)
    assert doubt(shifted)[1] == "extent?" and doubt(shifted)[0] > 0.8
    empty = model_scores(crop, (0, 0, 4, 4), 2)
    assert doubt(empty) == (1.0, "empty?")


def test_scan_objects_skip_boxed_small_and_unsure_objects():
    classes = np.zeros((30, 30), np.uint8)
    classes[2:8, 2:8] = 1  # boxed
    classes[20:28, 20:28] = 2  # unboxed, confident
    classes[2:4, 20:22] = 1  # unboxed, too small
    classes[12:18, 2:8] = 1  # unboxed, unsure
    probs = np.zeros((3, 30, 30), np.uint8)
    probs[1], probs[2] = 255, 230
    probs[1, 12:18, 2:8] = 100
    found = scan_objects(classes, probs, np.array([[1, 1, 9, 9]]), np.array([1]), 10, 0.5).missing
    assert [(c.box, c.class_id, c.pixels) for c in found] == [((20, 20, 28, 28), 2, 64)]
    assert found[0].score == pytest.approx(230 / 255)
    # without boxes every object is a candidate, and the background (label 0) never is
    bare = scan_objects(classes, None, np.zeros((0, 4)), np.zeros(0), 1, 0.0)
    assert sorted(c.box for c in bare.missing) == [
        (2, 2, 8, 8), (2, 12, 8, 18), (20, 2, 22, 4), (20, 20, 28, 28),
    ]  # fmt: skip
    assert bare.own_pixels.shape == (0,)


def test_scan_objects_one_class_at_a_time_and_not_a_boxs_own_object():
    classes = np.zeros((40, 60), np.uint8)
    classes[2:12, 2:16] = 1  # a plane ...
    classes[5:9, 12:16] = 2  # ... whose tail is predicted as class 2: the same object
    classes[20:30, 2:22] = 1  # a boxed object spilling far out of its box (box 0)
    classes[20:30, 23:28] = 1  # box 1's object ...
    classes[20:30, 30:40] = 1  # ... beside an unboxed one, 3 of its 10 columns in box 1
    classes[10:19, 42:53] = 1  # box 2's object ...
    classes[21:30, 45:55] = 1  # ... and an unboxed one, 8 of its 10 columns in box 2: left out
    boxes = np.array([[2, 20, 8, 30], [22, 18, 33, 32], [42, 10, 53, 35]])
    found = scan_objects(classes, None, boxes, np.array([1, 1, 1]), 10, 0.5).missing
    assert [(c.box, c.class_id, c.pixels) for c in found] == [
        ((2, 2, 16, 12), 1, 124),
        ((30, 20, 40, 30), 1, 100),
    ]  # the tail (12, 5, 16, 9) lies inside the plane's envelope: one object
    # the tail alone is a candidate when a class-1 object must have 400 pixels
    tail = scan_objects(classes, None, boxes, np.array([1, 1, 1]), np.array([0, 400, 10]), 0.5)
    assert [(c.box, c.class_id) for c in tail.missing] == [((12, 5, 16, 9), 2)]


def test_pieces_smaller_than_a_quarter_of_the_models_objects_are_dropped():
    classes = np.zeros((30, 60), np.uint8)
    classes[2:12, 2:12] = 1  # box 0's object, 100 px, spilling past its box
    classes[2:10, 20:30] = 1  # box 1's object, 80 px
    classes[20:24, 40:48] = 2  # box 2's object (class 2), 32 px
    boxes = np.array([[2, 2, 8, 12], [20, 2, 30, 10], [40, 20, 48, 24], [50, 20, 58, 28]])
    own = scan_objects(classes, None, boxes, np.array([1, 1, 2, 2]), 1, 0.0).own_pixels
    assert own.tolist() == [100, 80, 32, 0]  # box 3 holds nothing of its class
    piece, whole = Component((0, 0, 4, 5), 1, 0.9, 20), Component((0, 0, 9, 9), 1, 0.9, 23)
    small = Component((0, 0, 2, 4), 2, 0.9, 7)  # class 2's median is 32: 7 < 8
    kept = drop_fragments([[piece, whole], [small]], [np.array([1, 1]), np.array([2, 2])],
                          [own[:2], own[2:]], 0.25)  # fmt: skip
    assert kept == [[whole], []]  # class 1's median is 90: a quarter is 22.5
    # a class with no predicted object in its boxes keeps its candidates
    assert drop_fragments([[small]], [np.array([2])], [np.array([0])], 0.25) == [[small]]


def test_candidates_shaped_like_no_box_of_their_class_are_dropped():
    # class 1: ten boxes from 20 x 40 (aspect 0.5) to 40 x 20 (aspect 2), over two scenes
    widths = np.array([20, 24, 28, 30, 32, 34, 36, 38, 40, 40])
    heights = np.array([40, 30, 30, 30, 30, 30, 30, 25, 25, 20])
    boxes = np.stack([np.zeros(10), np.zeros(10), widths, heights], 1).astype(int)
    # class 2: three square boxes, too few to say what it never looks like
    few = np.array([[0, 0, 10, 10]] * 3)
    square = Component((5, 5, 35, 35), 1, 0.9, 500)
    strip = Component((0, 0, 100, 30), 1, 0.9, 900)  # aspect 3.3 > 2 x 1.1
    wide = Component((0, 0, 43, 20), 1, 0.9, 500)  # aspect 2.15 <= 2.2: the slack keeps it
    tall = Component((0, 0, 20, 45), 1, 0.9, 500)  # aspect 0.44 < 0.5 / 1.1
    odd = Component((0, 0, 50, 5), 2, 0.9, 200)
    kept = drop_misshapen([[square, strip, wide], [tall, odd]],
                          [boxes[:6], np.concatenate([boxes[6:], few])],
                          [np.ones(6, int), np.array([1, 1, 1, 1, 2, 2, 2])], 1.1)  # fmt: skip
    assert kept == [[square, wide], [odd]]
    # slack 1.5 keeps the tall one (0.44 >= 0.33), not the strip (3.3 > 3)
    kept = drop_misshapen([[strip, tall]], [boxes], [np.ones(10, int)], 1.5)
    assert kept == [[tall]]


@pytest.mark.parametrize(
    "bad", [{"aspect_slack": 0.9}, {"min_score": 1.5}, {"min_pixels": 0}, {"empty_share": 0}]
)
def test_audit_options_out_of_range_are_refused(bad):
    from jmlnet_geo.errors import OptionError

    with pytest.raises(OptionError):
        AuditOptions(**bad).check()
    AuditOptions().check()  # the defaults pass


def test_default_min_pixels_per_class_by_hand():
    boxes = np.array([[0, 0, 10, 10]] * 3 + [[0, 0, 40, 40]] * 2)  # class 1: 100 px, 2: 1600 px
    floors = default_min_pixels(boxes, np.array([1, 1, 1, 2, 2]))
    assert floors.tolist() == [25, 25, 400]  # index 0: every box (5th percentile 100)
    assert default_min_pixels(np.array([[0, 0, 2, 2]])).tolist() == [4, 4]  # at least 4


def _scene_with_objects(tmp_path):
    """Dark 120 x 120 UTM scene with three bright squares: A (20..40), B (70..90), C (20..40 x 80..100)."""
    data = np.random.default_rng(0).integers(20, 60, (3, 120, 120)).astype(np.uint8)
    data[:, 20:40, 20:40] = 220
    data[:, 70:90, 70:90] = 200
    data[:, 80:100, 20:40] = 210
    return write_scene(tmp_path / "scene.tif", data)


def _prediction(folder, scene, classes):
    """A hand-made prediction (as jmlgeo predict --probabilities writes) on the scene's grid."""
    folder.mkdir()
    with rasterio.open(scene) as src:
        profile = src.profile | {"count": 1, "dtype": "uint8", "nodata": 255}
    cls = np.zeros((120, 120), np.uint8)
    cls[20:40, 20:40] = 2  # A: the model says "ship" (class 2)
    cls[70:90, 70:90] = 1  # B: plane
    cls[80:100, 20:40] = 1  # C: plane, never boxed
    with rasterio.open(folder / "scene.classes.tif", "w", **profile) as ds:
        ds.write(cls, 1)
        ds.update_tags(class_names=",".join(classes))
    probs = np.stack([(cls == k) * 240 + 10 for k in range(3)]).astype(np.uint8)
    with rasterio.open(folder / "scene.probabilities.tif", "w", **profile | {"count": 3}) as ds:
        ds.write(probs)


def test_audit_ranks_the_wrong_class_first_finds_the_missing_box_keeps_crs(jmlgeo, tmp_path):
    scene = _scene_with_objects(tmp_path)
    _prediction(tmp_path / "pred", scene, ["plane", "ship"])
    boxes = write_boxes(
        tmp_path / "boxes.gpkg",
        [pixel_box(70, 70, 90, 90), pixel_box(20, 20, 40, 40), pixel_box(80, 80, 100, 100)],
        ["plane", "plane", "plane"],  # the second is a ship; the third moved off B
        note=["ok", "swapped", "moved"],
    )
    out = tmp_path / "audit.gpkg"
    result = jmlgeo("audit", scene, "--boxes", boxes, "--predictions", tmp_path / "pred",
                    "--proposals", "grabcut,crf", "--out", out, "--workers", "1")  # fmt: skip
    assert result.code == 0, result.err
    audited = gpd.read_file(out, layer="boxes")
    assert audited.crs == UTM and len(audited) == 3
    # one class only: no look-alike of another class, sizes alike (the appearance opinion)
    assert audited["appearance"].tolist() == [0.0, 0.0, 0.0]
    assert audited["size_ratio"].between(0.99, 1.01).all()
    assert audited["note"].iloc[0] == "swapped" and audited["reason"].iloc[0] == "class?"
    assert audited["other_class"].iloc[0] == "ship"
    assert list(audited["doubt"]) == sorted(audited["doubt"], reverse=True)
    by_note = audited.set_index("note")
    # the model's share of the box is low for the moved box (GrabCut/CRF fill its box: see
    # the issue note, the proposals' fill does not separate it on this scene)
    assert by_note.loc["moved", "class_share"] < by_note.loc["ok", "class_share"] - 0.5
    assert by_note.loc["moved", "reason"] == "extent?"
    assert by_note.loc["moved", "doubt"] > by_note.loc["ok", "doubt"]
    missing = gpd.read_file(out, layer="missing")
    assert missing.crs == UTM and list(missing["class"]) == ["plane"]
    assert missing.geometry.iloc[0].equals(pixel_box(20, 80, 40, 100))


def test_audit_errors_are_one_line(jmlgeo, tmp_path):
    from conftest import assert_one_line_error

    scene = _scene_with_objects(tmp_path)
    boxes = write_boxes(tmp_path / "b.gpkg", [pixel_box(20, 20, 40, 40)], ["plane"])
    assert_one_line_error(
        jmlgeo("audit", scene, "--boxes", boxes, "--run", tmp_path, "--out", tmp_path / "a.gpkg"),
        "no proposal rasters",
    )
    assert_one_line_error(
        jmlgeo(
            "audit",
            scene,
            "--boxes",
            boxes,
            "--predictions",
            tmp_path,
            "--out",
            tmp_path / "a.gpkg",
            "--proposals",
            "box",
        ),  # fmt: skip
        "scene.classes.tif",
        "jmlgeo predict",
    )
    assert not (tmp_path / "a.gpkg").exists()
