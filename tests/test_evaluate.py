import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
import rasterio
from conftest import ORIGIN, REPO, pixel_box, write_boxes, write_scene
from shapely.geometry import Polygon, box

from jmlnet_geo.errors import BoxLayerError, InputFileError, OutputError
from jmlnet_geo.evaluate import (
    EmptyTruthWarning,
    EvaluationError,
    Report,
    confusion_matrix,
    evaluate,
    report_markdown,
    roc_auc,
    save_confusion_png,
    scores,
    truth_raster,
)
from jmlnet_geo.io.raster import open_scene

# 3 classes, one 255 in each raster (different pixels): 7 pixels are counted.
PRED_3 = np.array([[0, 1, 1], [2, 2, 0], [1, 255, 2]], np.uint8)
TRUTH_3 = np.array([[0, 1, 2], [2, 2, 0], [255, 1, 1]], np.uint8)
CONFUSION_3 = np.array([[2, 0, 0], [0, 1, 1], [0, 1, 2]])

# 4 classes: class 2 is predicted but absent from the truth, class 3 absent from both.
PRED_4 = np.array([[0, 2, 1], [1, 0, 0]], np.uint8)
TRUTH_4 = np.array([[0, 0, 1], [1, 1, 0]], np.uint8)
CONFUSION_4 = np.array([[2, 0, 1, 0], [1, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])


def pixel_polygon(*corners, res=0.5):
    """A map polygon from (col, row) corners in the default test grid."""
    return Polygon([(ORIGIN[0] + c * res, ORIGIN[1] - r * res) for c, r in corners])


def class_raster(path, array, **kwargs):
    return write_scene(path, array[None].astype(np.uint8), **kwargs)


def tag(path, **tags):
    with rasterio.open(path, "r+") as ds:
        ds.update_tags(**tags)
    return path


def report_of(confusion, names, prediction="pred.tif"):
    s = scores(confusion)
    return Report(
        prediction=prediction,
        truth="truth.gpkg",
        class_names=tuple(names),
        confusion=np.asarray(confusion, np.int64),
        iou=s["iou"],
        miou=s["miou"],
        pixel_accuracy=s["pixel_accuracy"],
        precision=s["precision"],
        recall=s["recall"],
    )


# --- confusion matrix and scores --------------------------------------------------------------


def test_confusion_matrix_3_classes_by_hand():
    confusion = confusion_matrix(PRED_3, TRUTH_3, 3)
    assert confusion.dtype == np.int64 and confusion.shape == (3, 3)
    np.testing.assert_array_equal(confusion, CONFUSION_3)


def test_scores_3_classes_by_hand():
    s = scores(CONFUSION_3)
    # IoU = TP / (row + col - TP): 2/2, 1/3, 2/4
    np.testing.assert_allclose(s["iou"], [1.0, 1 / 3, 0.5])
    assert s["miou"] == pytest.approx((1 + 1 / 3 + 0.5) / 3)  # 11/18
    assert s["pixel_accuracy"] == pytest.approx(5 / 7)
    np.testing.assert_allclose(s["precision"], [1.0, 0.5, 2 / 3])
    np.testing.assert_allclose(s["recall"], [1.0, 0.5, 2 / 3])
    assert s["present"].tolist() == [True, True, True]


def test_class_absent_from_truth_counts_and_absent_from_both_is_nan():
    confusion = confusion_matrix(PRED_4, TRUTH_4, 4)
    np.testing.assert_array_equal(confusion, CONFUSION_4)
    s = scores(confusion)
    assert s["iou"][:3].tolist() == pytest.approx([2 / 4, 2 / 3, 0.0])
    assert math.isnan(s["iou"][3])
    # mean over the 3 present classes (background included); class 3 is left out
    assert s["miou"] == pytest.approx((0.5 + 2 / 3 + 0.0) / 3)  # 7/18
    assert s["pixel_accuracy"] == pytest.approx(4 / 6)
    assert s["precision"][2] == 0.0 and math.isnan(s["recall"][2])
    assert math.isnan(s["precision"][3]) and math.isnan(s["recall"][3])
    assert s["present"].tolist() == [True, True, True, False]


def test_all_ignore_gives_zeros_and_nan_without_warnings():
    pred = np.full((4, 5), 255, np.uint8)
    truth = np.ones((4, 5), np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        confusion = confusion_matrix(pred, truth, 3)
        s = scores(confusion)
    assert confusion.sum() == 0 and confusion.shape == (3, 3)
    assert np.isnan(s["iou"]).all() and math.isnan(s["miou"])
    assert math.isnan(s["pixel_accuracy"])


def test_confusion_matrix_errors():
    with pytest.raises(EvaluationError, match="class id 3 outside 0..2"):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)
    with pytest.raises(EvaluationError, match="differ in shape"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)), 3)
    # an out-of-range value under 255 in the other raster is not counted
    assert confusion_matrix(np.array([0, 7]), np.array([0, 255]), 2).sum() == 1


# --- truth rasterization ----------------------------------------------------------------------


def test_truth_polygons_on_utm_grid_small_painted_over_large(tmp_path):
    pred = class_raster(tmp_path / "pred.tif", np.zeros((20, 30)))
    # the small house comes first in the file: file order would let the field hide it
    truth = write_boxes(
        tmp_path / "truth.gpkg",
        [pixel_box(4, 4, 8, 8), pixel_box(0, 0, 20, 16)],
        ["house", "field"],
    )
    labels = truth_raster(open_scene(pred), truth)
    expected = np.zeros((20, 30), np.uint8)
    expected[0:16, 0:20] = 1  # field (classes sorted: field=1, house=2)
    expected[4:8, 4:8] = 2
    assert labels.dtype == np.uint8 and labels.shape == (20, 30)
    np.testing.assert_array_equal(labels, expected)
    # a path works as well as a scene
    np.testing.assert_array_equal(truth_raster(pred, truth), expected)


def test_truth_keeps_exact_shape_and_pixel_centre_rule(tmp_path):
    pred = class_raster(tmp_path / "pred.tif", np.zeros((12, 12)))
    triangle = pixel_polygon((0, 0), (10.5, 0), (0, 10.5))  # no pixel centre on its edge
    truth = write_boxes(tmp_path / "truth.gpkg", [triangle], ["a"])
    labels = truth_raster(pred, truth)
    rows, cols = np.mgrid[0:12, 0:12]
    # centre (col + .5, row + .5) inside x + y < 10.5  <=>  col + row <= 9
    np.testing.assert_array_equal(labels, ((rows + cols) <= 9).astype(np.uint8))
    # edges at 1.6 and 3.4 px: only the centre 2.5 is inside (1.5 and 3.5 are not)
    truth = write_boxes(tmp_path / "edges.gpkg", [pixel_box(1.6, 0, 3.4, 1)], ["a"])
    assert np.flatnonzero(truth_raster(pred, truth)[0]).tolist() == [2]


def test_truth_in_lonlat_lands_on_utm_grid(tmp_path):
    import geopandas as gpd

    pred = class_raster(tmp_path / "pred.tif", np.zeros((20, 30)))
    geoms = [pixel_box(2, 3, 12, 9), pixel_box(15, 10, 28, 19)]
    utm = write_boxes(tmp_path / "utm.gpkg", geoms, ["a", "b"])
    lonlat = gpd.read_file(utm).to_crs("EPSG:4326")
    lonlat.to_file(tmp_path / "lonlat.gpkg", driver="GPKG")
    expected = truth_raster(pred, utm)
    assert (expected == 1).sum() == 10 * 6 and (expected == 2).sum() == 13 * 9
    np.testing.assert_array_equal(truth_raster(pred, tmp_path / "lonlat.gpkg"), expected)


def test_plain_image_truth_uses_image_column(tmp_path):
    pred = write_scene(tmp_path / "a.png", np.zeros((1, 10, 12), np.uint8), crs=None)
    # pixel coordinates: x = column, y = row (y down)
    truth = write_boxes(
        tmp_path / "truth.gpkg",
        [box(1, 2, 5, 4), box(0, 0, 12, 10)],
        ["ship", "plane"],
        crs=None,
        image=["a.png", "b.png"],
    )
    labels = truth_raster(pred, truth)
    expected = np.zeros((10, 12), np.uint8)
    expected[2:4, 1:5] = 2  # plane=1 (on b.png only), ship=2
    np.testing.assert_array_equal(labels, expected)


def test_no_truth_polygon_on_scene_warns_and_gives_background(tmp_path):
    pred = write_scene(tmp_path / "c.png", np.zeros((1, 6, 7), np.uint8), crs=None)
    truth = write_boxes(
        tmp_path / "truth.gpkg", [box(1, 2, 5, 4)], ["ship"], crs=None, image=["a.png"]
    )
    with pytest.warns(EmptyTruthWarning, match="no truth polygon for c.png"):
        labels = truth_raster(pred, truth)
    assert labels.shape == (6, 7) and not labels.any()


def test_truth_raster_on_same_grid_and_other_grid(tmp_path):
    pred = class_raster(tmp_path / "pred.tif", np.zeros((8, 9)))
    data = np.arange(72).reshape(8, 9) % 3
    data[0, 0] = 7  # nodata below -> 255
    same = class_raster(tmp_path / "truth.tif", data, nodata=7)
    labels = truth_raster(pred, same)
    assert labels[0, 0] == 255
    np.testing.assert_array_equal(labels.ravel()[1:], data.ravel()[1:])
    shifted = class_raster(tmp_path / "shifted.tif", data, res=1.0)
    with pytest.raises(EvaluationError, match="shifted.tif: grid 9x8 .* differs from pred.tif"):
        truth_raster(pred, shifted)
    smaller = class_raster(tmp_path / "smaller.tif", data[:4])
    with pytest.raises(EvaluationError, match="gdalwarp"):
        truth_raster(pred, smaller)


def test_truth_errors(tmp_path):
    pred = class_raster(tmp_path / "pred.tif", np.zeros((8, 9)))
    with pytest.raises(InputFileError, match="missing.gpkg: truth file not found"):
        truth_raster(pred, tmp_path / "missing.gpkg")
    truth = write_boxes(tmp_path / "truth.gpkg", [pixel_box(1, 1, 4, 4)], ["a"])
    with pytest.raises(BoxLayerError, match="no class field 'kind'"):
        truth_raster(pred, truth, class_field="kind")
    floats = write_scene(tmp_path / "prob.tif", np.zeros((1, 8, 9), np.float32))
    with pytest.raises(EvaluationError, match="prob.tif: holds float32 values"):
        truth_raster(pred, floats)


# --- evaluate ---------------------------------------------------------------------------------


def test_evaluate_polygons_against_prediction(tmp_path):
    truth = write_boxes(
        tmp_path / "truth.gpkg",
        [pixel_box(0, 0, 10, 10), pixel_box(2, 2, 4, 4)],
        ["field", "house"],
    )
    pred = np.zeros((10, 12), np.uint8)
    pred[0:10, 0:10] = 1  # the whole field, house pixels included
    pred[0, 10:12] = 255  # nodata: not counted
    path = class_raster(tmp_path / "pred.tif", pred)
    report = evaluate(path, truth)
    assert report.class_names == ("background", "field", "house")
    # truth: 18 background (20 - 2 ignored), 96 field, 4 house; the house is predicted field
    np.testing.assert_array_equal(report.confusion, [[18, 0, 0], [0, 96, 0], [0, 4, 0]])
    assert report.pixels == 118
    np.testing.assert_allclose(report.iou, [1.0, 96 / 100, 0.0])
    assert report.miou == pytest.approx((1 + 0.96 + 0) / 3)
    assert report.pixel_accuracy == pytest.approx(114 / 118)
    data = report.as_dict()
    assert data["classes"] == ["background", "field", "house"] and data["pixels"] == 118


def test_evaluate_takes_class_order_from_raster_tag(tmp_path):
    truth = write_boxes(
        tmp_path / "truth.gpkg", [pixel_box(0, 0, 4, 4), pixel_box(6, 0, 10, 4)], ["a", "b"]
    )
    pred = np.zeros((4, 10), np.uint8)
    pred[:, 0:4] = 2  # the model card says b=1, a=2
    pred[:, 6:10] = 1
    path = tag(class_raster(tmp_path / "pred.tif", pred), class_names="b, a")
    report = evaluate(path, truth)
    assert report.class_names == ("background", "b", "a")
    assert report.miou == pytest.approx(1.0)
    # explicit names win over the tag (a leading background is tolerated)
    report = evaluate(path, truth, class_names=["background", "a", "b"])
    assert report.class_names == ("background", "a", "b")
    assert report.iou.tolist() == pytest.approx([1.0, 0.0, 0.0])


def test_evaluate_truth_raster_names_classes_when_untagged(tmp_path):
    path = class_raster(tmp_path / "pred.tif", PRED_3)
    truth = class_raster(tmp_path / "truth.tif", TRUTH_3)
    report = evaluate(path, truth)
    assert report.class_names == ("background", "class 1", "class 2")
    np.testing.assert_array_equal(report.confusion, CONFUSION_3)
    assert report.miou == pytest.approx(11 / 18)


def test_evaluate_errors(tmp_path):
    truth = write_boxes(tmp_path / "truth.gpkg", [pixel_box(0, 0, 4, 4)], ["a"])
    beyond = class_raster(tmp_path / "beyond.tif", np.full((4, 4), 3))
    with pytest.raises(EvaluationError, match=r"beyond.tif: holds class id 3 but only ids 0..1"):
        evaluate(beyond, truth)
    empty = class_raster(tmp_path / "empty.tif", np.full((4, 4), 255))
    with pytest.raises(EvaluationError, match="empty.tif: no pixel to compare with truth.gpkg"):
        evaluate(empty, truth)
    rgb = write_scene(tmp_path / "rgb.tif", np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(EvaluationError, match="rgb.tif: has 3 bands; pass a one-band class"):
        evaluate(rgb, truth)
    with pytest.raises(InputFileError, match="nope.tif: scene not found"):
        evaluate(tmp_path / "nope.tif", truth)
    ok = tag(class_raster(tmp_path / "ok.tif", np.zeros((4, 4))), class_names="b")
    with pytest.raises(BoxLayerError, match="classes a are not among the expected"):
        evaluate(ok, truth)


def test_evaluate_streams_in_strips(tmp_path, monkeypatch):
    import jmlnet_geo.evaluate.scoring as ev

    truth = write_boxes(
        tmp_path / "truth.gpkg", [pixel_box(0, 0, 10, 13), pixel_box(3, 5, 6, 11)], ["x", "y"]
    )
    pred = np.zeros((17, 11), np.uint8)
    pred[2:15, 1:9] = 1
    pred[5:9, 3:6] = 2
    path = class_raster(tmp_path / "pred.tif", pred)
    whole = evaluate(path, truth)
    monkeypatch.setattr(ev, "STRIP_PIXELS", 11 * 3)  # strips of 3 rows; the last one 2
    assert len(ev._strips(open_scene(path))) == 6
    np.testing.assert_array_equal(evaluate(path, truth).confusion, whole.confusion)
    labels = truth_raster(path, truth)
    np.testing.assert_array_equal(whole.confusion, confusion_matrix(pred, labels, 3))


# --- many scenes ------------------------------------------------------------------------------


def test_score_scenes_pools_scenes_and_scores_boxes(tmp_path):
    from jmlnet_geo.evaluate import TruthCache, box_ious, score_scenes

    truth = write_boxes(
        tmp_path / "truth.gpkg",
        [pixel_box(0, 0, 10, 10), pixel_box(2, 2, 4, 4)],
        ["field", "house"],
    )
    first = np.zeros((10, 12), np.uint8)
    first[0:10, 0:10] = 1
    first[0, 10:12] = 255
    second = first.copy()
    second[2:4, 2:4] = 2
    paths = [class_raster(tmp_path / "a.tif", first), class_raster(tmp_path / "b.tif", second)]
    one = [evaluate(p, truth) for p in paths]
    boxes = [(np.array([[0, 0, 10, 10], [2, 2, 4, 4]]), np.array([1, 2]))] * 2
    result = score_scenes(paths, truth, boxes=boxes)
    for scene, single in zip(result.scenes, one, strict=True):
        np.testing.assert_array_equal(scene.confusion, single.confusion)
    np.testing.assert_array_equal(result.pooled.confusion, one[0].confusion + one[1].confusion)
    assert result.pooled.class_names == ("background", "field", "house")
    assert result.pooled.prediction == "2 class rasters" and result.pooled.truth == str(truth)
    # a: the field box predicts 100 field pixels for 96 true ones, the house none; b: exact
    np.testing.assert_allclose(result.box_ious[0], [0.96, 0.0])
    np.testing.assert_allclose(result.box_ious[1], [1.0, 1.0])
    assert (result.box_inter, result.box_union) == (96 + 0 + 96 + 4, 100 + 4 + 96 + 4)
    assert result.mean_box_iou == pytest.approx((0.96 + 0 + 1 + 1) / 4)
    assert result.unlabelled == 4 and result.total_pixels == 240
    plain = score_scenes(paths, [truth, truth], class_names=["field", "house"])
    np.testing.assert_array_equal(plain.pooled.confusion, result.pooled.confusion)
    assert [len(v) for v in plain.box_ious] == [0, 0] and plain.unlabelled == 4
    cached = score_scenes(paths, TruthCache(truth, classes=["field", "house"]))
    np.testing.assert_array_equal(cached.pooled.confusion, result.pooled.confusion)
    iou, inter, union = box_ious(first, truth_raster(paths[0], truth), *boxes[0])
    assert inter.tolist() == [96, 0] and union.tolist() == [100, 4]
    with pytest.raises(EvaluationError, match="2 class rasters but 1 truth files"):
        score_scenes(paths, [truth])
    with pytest.raises(EvaluationError, match="no class raster"):
        score_scenes([], truth)


# --- outputs ----------------------------------------------------------------------------------


def test_report_markdown_table():
    report = report_of(CONFUSION_3, ["background", "car", "tree"])
    assert report_markdown(report) == (
        "|  | background | car | tree | mIoU |\n"
        "|---|---:|---:|---:|---:|\n"
        "| pred.tif | 100.0 | 33.3 | 50.0 | 61.1 |\n"
    )
    report = report_of(CONFUSION_4, ["background", "a", "b|c", "d"], prediction="/x/p.tif")
    assert report_markdown(report, label="Weak") == (
        "|  | background | a | b\\|c | d | mIoU |\n"
        "|---|---:|---:|---:|---:|---:|\n"
        "| Weak | 50.0 | 66.7 | 0.0 | n/a | 38.9 |\n"
    )


def test_confusion_png_is_written_atomically(tmp_path):
    report = report_of(CONFUSION_4, ["background", "a", "b", "d"])
    target = tmp_path / "confusion.png"
    save_confusion_png(report, target)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["confusion.png"]
    with pytest.raises(OutputError, match="confusion.jpg: the confusion matrix is a PNG"):
        save_confusion_png(report, tmp_path / "confusion.jpg")
    with pytest.raises(OutputError, match="does not exist"):
        save_confusion_png(report, tmp_path / "no" / "c.png")


def test_module_imports_neither_torch_nor_cv2_nor_matplotlib():
    code = (
        "import sys, jmlnet_geo.evaluate; "
        "print(sorted(m for m in ('torch', 'cv2', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "[]"


def test_roc_auc_counts_pairs_with_ties_half():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 5, 300).astype(float)  # many ties
    positive = rng.random(300) < values / 8
    pos, neg = values[positive], values[~positive]
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert roc_auc(values, positive) == pytest.approx(pairs / (len(pos) * len(neg)), abs=1e-12)
    assert roc_auc([0.1, 0.2, 0.9], [False, False, True]) == 1.0
    assert roc_auc([0.9, 0.2], [False, True]) == 0.0
    assert math.isnan(roc_auc([0.1, 0.2], [True, True]))
