"""``jmlgeo train --drop-doubtful``: the most doubtful boxes become ignore in the training labels."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
from conftest import UTM, assert_one_line_error, pixel_box, write_boxes, write_scene
from rasterio.windows import Window

from jmlnet_geo.tiling import IgnoreBoxes

FAST = ["--tile-size", "64", "--batch-size", "2", "--loader-workers", "0", "--workers", "1"]
FAST += ["--progress", "none", "--stage1-steps", "1", "--stage2-steps", "1"]
MOVED = (8, 66, 28, 86)  # col0, row0, col1, row1: dark background, its disc is at (60, 70)


@pytest.fixture
def scene_and_boxes(tmp_path):
    """A 96 x 96 scene with three bright discs; the fourth box is moved off its disc."""
    rng = np.random.default_rng(0)
    data = rng.normal(60, 10, (3, 96, 96))
    rows, cols = np.mgrid[:96, :96]
    centres = [(24, 24), (24, 70), (70, 60)]
    for r, c in centres:
        data[:, (rows + 0.5 - r) ** 2 + (cols + 0.5 - c) ** 2 <= 9**2] = 230
    scene = write_scene(tmp_path / "tiny.tif", np.clip(data, 0, 255).astype(np.uint8))
    boxes = [pixel_box(c - 10, r - 10, c + 10, r + 10) for r, c in centres]
    boxes.append(pixel_box(*MOVED))
    names = ["tank"] * 4
    path = write_boxes(tmp_path / "boxes.gpkg", boxes, names, note=["a", "b", "c", "moved"])
    return scene, path


@pytest.fixture
def captured(monkeypatch):
    """The training tile datasets the stages build (in order)."""
    import jmlnet_geo.train.data as data

    made, original = [], data.tiles_dataset

    def spy(*args, **kwargs):
        made.append(original(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(data, "tiles_dataset", spy)
    return made


def _labels_at(dataset, box):
    """The grabcut training labels of the first scene read at a box's pixels."""
    c0, r0, c1, r1 = box
    tile = dataset.datasets[0].read(Window(c0, r0, c1 - c0, r1 - r0))
    return tile["grabcut"].numpy(), len(tile["boxes"])


def test_the_moved_box_is_dropped_and_ignored(jmlgeo, tmp_path, scene_and_boxes, captured):
    scene, boxes = scene_and_boxes
    out = tmp_path / "run"
    result = jmlgeo("train", scene, "--boxes", boxes, "--out", out, *FAST,
                    "--drop-doubtful", "0.25", "--drop-doubtful-by", "proposals")  # fmt: skip
    assert result.code == 0, result.err
    assert "1 of 4 boxes ignored" in result.err
    state = json.loads((out / "run.json").read_text())["stages"]["drop_doubtful"]
    assert [d["feature"] for d in state["dropped"]] == [3] and state["fraction"] == 0.25
    dropped = gpd.read_file(out / "dropped_boxes.gpkg")
    assert list(dropped["note"]) == ["moved"] and dropped.crs == UTM
    assert len(captured) == 2  # stage 1 and stage 2 (no truth: no validation set)
    for dataset in captured:
        labels, n_boxes = _labels_at(dataset, MOVED)
        assert (labels == 255).all() and n_boxes == 0
        kept, _ = _labels_at(dataset, (50, 60, 70, 80))  # a kept box keeps its labels
        assert (kept == 1).any() and not (kept == 255).any()
    from jmlnet_geo.bundle import load_bundle

    _, card = load_bundle(out / "model.safetensors")
    assert card.config["segmenter"]["drop_doubtful"] == 0.25
    assert card.training_data["drop_doubtful"]["dropped"] == 1

    again = jmlgeo("train", scene, "--boxes", boxes, "--out", out, *FAST,
                   "--drop-doubtful", "0.25", "--drop-doubtful-by", "proposals")  # fmt: skip
    assert "drop_doubtful" in again.err.split("reused finished stages:")[1]
    frame = gpd.read_file(boxes)
    frame["note"] = ["a", "b", "c", "checked in the field"]  # same boxes, another column
    boxes.unlink()
    frame.to_file(boxes, driver="GPKG")
    edited = jmlgeo("train", scene, "--boxes", boxes, "--out", out, *FAST,
                    "--drop-doubtful", "0.25", "--drop-doubtful-by", "proposals")  # fmt: skip
    assert "drop_doubtful" in edited.err.split("reused finished stages:")[1]
    assert list(gpd.read_file(out / "dropped_boxes.gpkg")["note"]) == ["checked in the field"]


BOXES = [(14, 14, 34, 34), (60, 14, 80, 34), (50, 60, 70, 80), MOVED]  # features 0..3


def test_the_stage_1_model_chooses_again_and_stage_1_is_retrained(
    jmlgeo, tmp_path, scene_and_boxes, captured
):
    scene, boxes = scene_and_boxes
    out = tmp_path / "run"
    args = ("train", scene, "--boxes", boxes, "--out", out, *FAST, "--drop-doubtful", "0.25")
    # the stage-1 model chooses by default
    result = jmlgeo(*args)
    assert result.code == 0, result.err
    assert "boxes ignored, chosen again with the stage-1 model" in result.err
    stages = json.loads((out / "run.json").read_text())["stages"]
    first = [d["feature"] for d in stages["drop_doubtful"]["dropped"]]
    second = [d["feature"] for d in stages["drop_doubtful_model"]["dropped"]]
    assert first == [3] and len(second) == 1
    chosen_by_stage = (first, second, second)  # stage 1, stage 1 again, stage 2
    for dataset, chosen in zip(captured, chosen_by_stage, strict=True):
        for feature, box in enumerate(BOXES):
            labels, n_boxes = _labels_at(dataset, box)
            assert (labels == 255).all() == (feature in chosen)
            assert n_boxes == (feature not in chosen)
    assert list(gpd.read_file(out / "dropped_boxes.gpkg")["feature"]) == second
    from jmlnet_geo.bundle import load_bundle

    _, card = load_bundle(out / "model.safetensors")
    assert card.training_data["drop_doubtful"]["by"] == "model"
    assert card.training_data["drop_doubtful"]["stage1_dropped"] == 1
    assert [s["name"] for s in card.stages] == ["stage1", "stage1_again", "stage2"]
    again = jmlgeo(*args)
    reused = again.err.split("reused finished stages:")[1]
    assert all(s in reused for s in ("drop_doubtful_model", "stage1_again", "stage2"))


def test_the_model_opinion_enters_the_choice(tmp_path, scene_and_boxes):
    import rasterio

    from jmlnet_geo.io.raster import open_scenes
    from jmlnet_geo.io.vector import boxes_for_scenes, read_boxes
    from jmlnet_geo.proposals.stage import make_proposals
    from jmlnet_geo.train.doubtful import most_doubtful

    scene, boxes = scene_and_boxes
    layer = read_boxes(boxes, "class", ("tank", "car"))
    scene_boxes = boxes_for_scenes(layer, open_scenes([scene]))
    methods, folder = ["grabcut", "crf"], tmp_path / "proposals"
    make_proposals(scene_boxes, layer.classes.names, methods, folder)
    alone = most_doubtful(scene_boxes, folder, methods, 0.5)
    assert alone[0].feature == 3 and "class?" not in {d.reason for d in alone}
    classes = np.zeros((96, 96), np.uint8)  # the model sees a car in box 0, tanks in 1 and 2
    for value, (c0, r0, c1, r1) in zip((2, 1, 1), BOXES, strict=False):
        classes[r0 + 4 : r1 - 4, c0 + 4 : c1 - 4] = value
    with rasterio.open(scene) as ds:
        profile = ds.profile | {"count": 1, "dtype": "uint8", "nodata": None}
    path = tmp_path / "tiny.classes.tif"
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(classes, 1)
    calls = []

    def predict(each):
        calls.append(len(scene_boxes))
        each(0, path)

    by_model = {d.feature: d.reason for d in most_doubtful(scene_boxes, folder, methods, 0.5,
                                                           predict=predict)}  # fmt: skip
    assert calls == [1] and by_model == {0: "class?", 3: by_model[3]}


def test_zero_changes_nothing(jmlgeo, tmp_path, scene_and_boxes, captured):
    scene, boxes = scene_and_boxes
    out = tmp_path / "run"
    result = jmlgeo("train", scene, "--boxes", boxes, "--out", out, *FAST, "--drop-doubtful", "0")
    assert result.code == 0, result.err
    assert not (out / "dropped_boxes.gpkg").exists()
    assert "drop_doubtful" not in json.loads((out / "run.json").read_text())["stages"]
    labels, n_boxes = _labels_at(captured[0], MOVED)
    assert not (labels == 255).any() and n_boxes == 1


def test_bad_chooser_is_one_line(jmlgeo, tmp_path, scene_and_boxes):
    scene, boxes = scene_and_boxes
    out = tmp_path / "run"
    result = jmlgeo("train", scene, "--boxes", boxes, "--out", out, *FAST, "--drop-doubtful",
                    "0.1", "--drop-doubtful-by", "detector")  # fmt: skip
    assert_one_line_error(result, "--drop-doubtful-by detector", "proposals, model")
    assert not out.exists() or not list(out.rglob("*.tif"))


@pytest.mark.parametrize("value", ["-0.1", "1", "2"])
def test_bad_fractions_are_one_line(jmlgeo, tmp_path, scene_and_boxes, value):
    scene, boxes = scene_and_boxes
    out = tmp_path / "run"
    result = jmlgeo("train", scene, "--boxes", boxes, "--out", out, *FAST, "--drop-doubtful", value)
    assert_one_line_error(result, "--drop-doubtful", "[0, 1)")
    assert not out.exists() or not list(out.rglob("*.tif"))


def test_ignore_boxes_paint_only_what_no_kept_box_covers():
    layer = np.ones((10, 10), np.uint8)
    ignore = IgnoreBoxes(np.array([[2, 2, 8, 8]]), np.array([[6, 6, 12, 12]]))
    painted = ignore.paint(layer, Window(1, 1, 10, 10))  # the window starts at (1, 1)
    assert (painted[1:7, 1:7][:4, :4] == 255).all()  # dropped: scene 2..5, tile 1..4
    assert (painted[5:, 5:] == 1).all()  # the kept box (scene 6.., tile 5..)
    assert painted.sum() != layer.sum() and (layer == 1).all()  # the input is untouched
    untouched = ignore.paint(layer, Window(50, 50, 10, 10))
    assert untouched is layer


def test_no_loss_scores_a_dropped_box_as_background():
    """The fast default's box loss leaves out the pixels every proposal ignores: a dropped box
    (255 in the labels, not among the boxes) gets no gradient, a plain outside pixel does."""
    import torch
    from torch import nn

    from jmlnet_geo.losses import labelled_pixels
    from jmlnet_geo.normalization import Normalization
    from jmlnet_geo.train.segmenter import SegmenterTask

    class Fixed(nn.Module):  # logits that do not depend on the image, to read their gradient
        def __init__(self):
            super().__init__()
            self.logits = nn.Parameter(torch.zeros(1, 2, 32, 32))

        def forward(self, x):
            return self.logits

    labels = torch.zeros(1, 32, 32, dtype=torch.uint8)
    labels[0, 2:8, 2:8] = 1  # the kept box (cols 2..7, rows 2..7) holds its object
    labels[0, 22:30, 22:30] = 255  # a dropped box, ignore: outside the kept box's window
    labels[0, 2:8, 9:11] = 255  # another, inside the kept box's projection window (cols 0..10)
    batch = {"image": torch.zeros(1, 3, 32, 32), "valid": torch.ones(1, 32, 32, dtype=torch.bool),
             "grabcut": labels, "boxes": [torch.tensor([[2.0, 2.0, 8.0, 8.0]])],
             "labels": [torch.tensor([1])]}  # fmt: skip
    for box_loss_weight in (1.0, 0.0):
        model = Fixed()
        task = SegmenterTask(model, 2, Normalization((0.0,) * 3, (1.0,) * 3), ["grabcut"], "ce",
                             steps=1, lr=0.1, box_loss_weight=box_loss_weight,
                             box_pairwise_weight=0.0)  # fmt: skip
        task.batch_loss(batch).backward()
        grad = model.logits.grad[0].abs().sum(0)
        assert (grad[22:30, 22:30] == 0).all()  # dropped: no loss scores it
        assert (grad[2:8, 9:11] == 0).all()  # nor beside a kept box of its class
        assert (grad[14:18, 14:18] > 0).all()  # outside every box: background
        assert (grad[2:8, 8] > 0).all()  # the kept box's margin is scored
    assert labelled_pixels(labels[:, None]).sum() == 32 * 32 - 64 - 12
