"""The detector: training (Lightning), its safetensors file, resume, jmlgeo detect, and mAP."""

import csv
import math

import geopandas as gpd
import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, pixel_box, write_boxes, write_scene

from jmlnet_geo.detection import Detections, detect_scene
from jmlnet_geo.detection import window_starts as _starts
from jmlnet_geo.detector_file import (
    DetectorFileError,
    load_detector,
    read_detector_card,
    save_detector,
)
from jmlnet_geo.errors import JmlGeoError
from jmlnet_geo.io.raster import open_scenes
from jmlnet_geo.io.vector import boxes_for_scenes, read_boxes
from jmlnet_geo.normalization import scene_normalization
from jmlnet_geo.train.detector import average_precision, mean_average_precision, train_detector

torch.set_num_threads(1)  # the test machine is shared: no thread oversubscription


def square_scene(path, bands=3):
    """160 x 160 noise with bright squares (roof) and dark discs (pond)."""
    rng = np.random.default_rng(1)
    data = rng.normal(110, 15, (bands, 160, 160))
    geometries, classes = [], []
    for r, c, side in ((20, 20, 30), (90, 30, 24), (30, 100, 36)):
        data[:, r : r + side, c : c + side] = 230
        geometries.append(pixel_box(c, r, c + side, r + side))
        classes.append("roof")
    rows, cols = np.mgrid[:160, :160]
    data[:, (rows - 120) ** 2 + (cols - 115) ** 2 <= 15**2] = 25
    geometries.append(pixel_box(100, 105, 130, 135))
    classes.append("pond")
    return write_scene(path, np.clip(data, 0, 255).astype(np.uint8)), geometries, classes


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``jmlgeo train-detector`` for 2 steps (checkpoint every step) on the square scene."""
    from jmlnet_geo.cli.main import main

    folder = tmp_path_factory.mktemp("detector")
    scene, geometries, classes = square_scene(folder / "squares.tif")
    boxes = write_boxes(folder / "boxes.gpkg", geometries, classes)
    out = folder / "run"
    args = [
        "train-detector", scene, "--boxes", boxes, "--out", out, "--steps", "2",
        "--batch-size", "2", "--tile-size", "128", "--device", "cpu", "--progress", "none",
    ]  # fmt: skip
    try:
        main([str(a) for a in args])
    except SystemExit as stop:
        assert not stop.code
    return {"scene": scene, "boxes": boxes, "out": out, "detector": out / "detector.safetensors"}


def test_training_writes_the_detector_checkpoint_and_finite_losses(trained):
    out = trained["out"]
    assert (out / "last.ckpt").exists() and trained["detector"].exists()
    with open(out / "logs" / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train_loss")]
    assert [int(r["step"]) for r in rows] == [0, 1]
    for r in rows:
        for key in ("train_loss", "loss_classifier", "loss_box_reg", "loss_objectness"):
            assert math.isfinite(float(r[key])), key
    card = read_detector_card(trained["detector"])
    assert (card.preset, card.classes, card.in_channels, card.tile_size) == (
        "fast",
        ["pond", "roof"],
        3,
        128,
    )
    assert len(card.normalization["mean"]) == 3 and min(card.normalization["std"]) > 0
    assert card.training["steps"] == 2 and math.isfinite(card.training["final_loss"])
    assert card.training["frozen_stem"] and "EfficientNet-Lite0" in card.training["weights_used"]


def test_resume_reuses_a_finished_detector_and_finishes_an_interrupted_one(trained, tmp_path):
    scenes = open_scenes([trained["scene"]])
    layer = read_boxes(trained["boxes"])
    scene_boxes = boxes_for_scenes(layer, scenes)
    settings = dict(steps=2, batch_size=2, tile_size=128, device="cpu", resume=True)
    notes = []
    path = train_detector(
        scene_boxes, layer.classes.names, scene_normalization(scenes), trained["out"],
        message=notes.append, **settings,
    )  # fmt: skip
    assert path == trained["detector"] and any("reusing" in n for n in notes)
    # an interrupted run: last.ckpt (step 2) but no detector file -> finished from the checkpoint
    folder = tmp_path / "copy"
    folder.mkdir()
    for name in ("last.ckpt", "run.json"):
        (folder / name).write_bytes((trained["out"] / name).read_bytes())
    finished = train_detector(
        scene_boxes, layer.classes.names, scene_normalization(scenes), folder, **settings
    )
    a, _ = load_detector(trained["detector"])
    b, _ = load_detector(finished)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


def test_detector_file_round_trip_is_bit_exact(trained, tmp_path):
    model, card = load_detector(trained["detector"])
    assert not model.training
    save_detector(tmp_path / "again.safetensors", model, card)
    again, card2 = load_detector(tmp_path / "again.safetensors")
    assert card2 == card
    state, state2 = model.state_dict(), again.state_dict()
    assert list(state) == list(state2)
    assert all(torch.equal(state[k], state2[k]) for k in state)
    image = [torch.randn(3, 96, 96, generator=torch.Generator().manual_seed(0))]
    with torch.no_grad():
        features, features2 = model.backbone(image[0][None]), again.backbone(image[0][None])
    assert all(torch.equal(features[k], features2[k]) for k in features)


def test_pickles_checkpoints_and_foreign_files_are_refused(trained, tmp_path):
    from safetensors.torch import save_file

    model, _ = load_detector(trained["detector"])
    torch.save(model.state_dict(), tmp_path / "detector.pt")
    torch.save(model.state_dict(), tmp_path / "sneaky.safetensors")  # a pickle in disguise
    save_file({"w": torch.zeros(2)}, tmp_path / "plain.safetensors")  # no detector card
    for name in ("detector.pt", "sneaky.safetensors", "plain.safetensors"):
        with pytest.raises(DetectorFileError, match="pickles and checkpoints.*refused"):
            load_detector(tmp_path / name)
    with pytest.raises(DetectorFileError, match="refused"):
        load_detector(trained["out"] / "last.ckpt")
    with pytest.raises(DetectorFileError, match="detector file not found"):
        read_detector_card(tmp_path / "missing.safetensors")


def test_jmlgeo_detect_writes_boxes_in_the_scene_crs(jmlgeo, trained, tmp_path):
    out = tmp_path / "pred.gpkg"
    result = jmlgeo(
        "detect", trained["detector"], trained["scene"], "--out", out, "--score", "0",
        "--truth", trained["boxes"], "--device", "cpu",
    )  # fmt: skip
    assert result.code == 0, result.err
    frame = gpd.read_file(out)
    assert frame.crs.to_epsg() == 32632
    assert {"class", "class_id", "score", "image"} <= set(frame.columns)
    assert frame["class"].isin(["pond", "roof"]).all()
    assert ((frame["score"] >= 0) & (frame["score"] <= 1)).all()
    if len(frame):
        left, bottom, right, top = frame.total_bounds
        assert left >= 500_000 and right <= 500_080 and bottom >= 4_999_920 and top <= 5_000_000
    assert "mAP@0.5" in result.out and "| roof | 3 |" in result.out


def test_detect_scene_stitches_overlapping_windows(trained):
    model, card = load_detector(trained["detector"])
    model.rpn._post_nms_top_n["testing"] = 20  # an untrained RPN: keep the box head cheap
    (scene,) = open_scenes([trained["scene"]])
    found = detect_scene(model, card, scene, window=96, overlap=32)
    assert found.xyxy.shape == (len(found), 4) and found.scores.dtype == np.float32
    assert (found.xyxy >= -1).all() and (found.xyxy <= 161).all()
    assert _starts(160, 96, 32) == [0, 64] and _starts(300, 96, 32) == [0, 64, 128, 192, 204]
    assert _starts(80, 96, 32) == [0]


def test_jmlgeo_detect_bad_inputs_are_one_clear_line(jmlgeo, trained, tmp_path):
    scene = trained["scene"]
    result = jmlgeo("detect", tmp_path / "none.safetensors", scene, "--out", tmp_path / "p.gpkg")
    assert_one_line_error(result, "none.safetensors", "detector file not found")
    torch.save({"w": torch.zeros(1)}, tmp_path / "w.pth")
    result = jmlgeo("detect", tmp_path / "w.pth", scene, "--out", tmp_path / "p.gpkg")
    assert_one_line_error(result, "w.pth", "refused")
    two = write_scene(tmp_path / "two.tif", np.zeros((2, 40, 40), np.uint8))
    result = jmlgeo("detect", trained["detector"], two, "--out", tmp_path / "p.gpkg")
    assert_one_line_error(result, "two.tif", "2 band", "trained on 3")
    other = write_boxes(tmp_path / "other.gpkg", [pixel_box(1, 1, 9, 9)], ["ship"])
    result = jmlgeo(
        "detect", trained["detector"], scene, "--out", tmp_path / "p.gpkg", "--truth", other
    )
    assert_one_line_error(result, "other.gpkg", "ship")
    result = jmlgeo("detect", trained["detector"], scene, "--out", tmp_path / "p.txt")
    assert_one_line_error(result, "p.txt", ".gpkg")
    assert not (tmp_path / "p.gpkg").exists()


def test_mean_average_precision_matches_a_hand_computation():
    a = Detections(
        np.array([[0, 0, 10, 10], [0, 0, 10, 10]], float), np.array([1, 1]), np.array([0.9, 0.8])
    )
    b = Detections(
        np.array([[50, 50, 60, 60], [0, 0, 10, 10], [40, 40, 50, 55], [5, 5, 9, 9]], float),
        np.array([1, 1, 2, 3]),
        np.array([0.7, 0.6, 0.5, 0.4], np.float32),
    )
    truths = [
        (np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float), np.array([1, 1])),
        (np.array([[0, 0, 10, 10], [40, 40, 50, 50]], float), np.array([1, 2])),
    ]
    result = mean_average_precision([a, b], truths, num_classes=3)
    # class 1: TP, FP (duplicate), FP, TP of 3 truths -> recall 1/3 at precision 1, 2/3 at 0.5
    assert result["ap"][1] == pytest.approx(1 / 3 + 1 / 6)
    assert result["ap"][2] == pytest.approx(1.0)  # IoU 100/150 >= 0.5
    assert math.isnan(result["ap"][3]) and result["truths"] == {1: 3, 2: 1, 3: 0}
    assert result["map"] == pytest.approx(0.75)
    strict = mean_average_precision([a, b], truths, num_classes=3, iou_threshold=0.7)
    assert strict["ap"][2] == 0.0
    assert average_precision(np.array([]), np.array([])) == 0.0
    assert average_precision(np.array([0.5, 1.0]), np.array([1.0, 1.0])) == pytest.approx(1.0)


def test_train_detector_bad_options(trained, tmp_path):
    scenes = open_scenes([trained["scene"]])
    layer = read_boxes(trained["boxes"])
    scene_boxes = boxes_for_scenes(layer, scenes)
    with pytest.raises(JmlGeoError, match="detector steps 0"):
        train_detector(
            scene_boxes, layer.classes.names, scene_normalization(scenes), tmp_path, steps=0
        )
    with pytest.raises(JmlGeoError, match="unknown device"):
        train_detector(
            scene_boxes, layer.classes.names, scene_normalization(scenes), tmp_path, device="tpu"
        )
