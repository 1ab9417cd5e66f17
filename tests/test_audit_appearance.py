"""The audit's appearance opinion: look-alike votes by hand, crops, a swapped class on a scene."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import pixel_box, write_boxes, write_scene

from jmlnet_geo.audit import AuditOptions, doubt
from jmlnet_geo.audit_appearance import (
    CROP,
    appearance,
    believed,
    box_crops,
    candidate_look_alikes,
    look_alike_votes,
    size_against_look_alikes,
)
from jmlnet_geo.audit_missing import Component


def _unit(*rows):
    return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float32), dim=1)


def test_look_alike_votes_by_hand():
    # three boxes look like (1, 0), three like (0, 1); box 2 is labelled 1 but looks like class 2
    emb = _unit([1, 0], [1, 0.1], [0.2, 1], [0, 1], [0.05, 1], [1, 0.05])
    ids = np.array([1, 1, 1, 2, 2, 1])
    share, other = look_alike_votes(emb, ids, np.zeros(6), k=2, size_weight=0.0)
    assert share[2] == pytest.approx(1.0) and other[2] == 2
    assert share[0] == pytest.approx(0.0) and other[0] == 0
    # class 2 has 2 boxes: its k is 1 (the other box of class 2), so it is not outvoted
    assert share[3] == pytest.approx(0.0) and share[4] == pytest.approx(0.0)


def test_look_alike_votes_single_box_classes_and_size():
    emb = _unit([1, 0], [1, 0], [1, 0], [1, 0])
    ids = np.array([1, 1, 2, 3])  # classes 2 and 3 have a single box: no opinion
    share, _ = look_alike_votes(emb, ids, np.zeros(4), k=3)
    assert math.isnan(share[2]) and math.isnan(share[3])
    # box 0 (class 1, 10 px) looks most like box 1 (class 2, 40 px), then like box 2 (class 1,
    # 10 px): the size term makes box 2 its look-alike
    emb = _unit([1, 0], [1, 0], [0.95, 0.3], [0.95, 0.3])
    ids, sides = np.array([1, 2, 1, 2]), np.log([10.0, 40.0, 10.0, 40.0])
    assert look_alike_votes(emb, ids, sides, k=1, size_weight=0.0)[0][0] == 1.0
    assert look_alike_votes(emb, ids, sides, k=1, size_weight=0.3)[0][0] == 0.0


def test_size_against_same_class_look_alikes_by_hand():
    # class 1: three look-alikes of side 10 and one of side 20 (a loose box); class 2 alone
    emb = _unit([1, 0], [1, 0.1], [1, 0.05], [1, 0.02], [0, 1])
    ids = np.array([1, 1, 1, 1, 2])
    sides = np.log([10.0, 10.0, 10.0, 20.0, 50.0])
    ratio = size_against_look_alikes(emb, ids, sides, k=3)
    assert ratio[3] == pytest.approx(math.log(2)) and math.isnan(ratio[4])
    assert ratio[0] == pytest.approx(0.0)  # median of 10, 10, 20
    # in the doubt: twice the size is extent? 1; 1.19x (a quarter of ln 2) is 0.25
    assert doubt(None, log_size_ratio=math.log(2)) == (1.0, "extent?")
    assert doubt(None, log_size_ratio=-0.25 * math.log(2))[0] == pytest.approx(0.25)
    # the larger of it and the proposals' extent part
    assert doubt(None, extent=0.2, log_size_ratio=0.0)[0] == pytest.approx(0.8)
    assert doubt(None, appearance=0.9, log_size_ratio=0.0) == (0.9, "class?")


def test_box_crops_read_square_context_at_edges_and_scale(tmp_path):
    from jmlnet_geo.io.raster import open_scenes

    data = np.zeros((3, 60, 60), np.uint8)
    data[0, 10:20, 10:20] = 255  # a red square
    scene = open_scenes([write_scene(tmp_path / "s.tif", data)])[0]
    crops = box_crops(scene, np.array([[10, 10, 20, 20], [0, 0, 6, 6]]))
    assert crops.shape == (2, 3, CROP, CROP) and crops.dtype == torch.float32
    middle = crops[0, :, CROP // 2, CROP // 2]
    assert middle.tolist() == pytest.approx([1.0, 0.0, 0.0], abs=1e-3)
    assert crops[0, 0, 2, 2] < 0.1  # the context around the square is dark
    grey = np.full((1, 40, 40), 1000, np.uint16)
    grey[0, 10:20, 10:20] = 3000
    scene = open_scenes([write_scene(tmp_path / "g.tif", grey)])[0]
    crops = box_crops(scene, np.array([[10, 10, 20, 20]]))
    assert torch.equal(crops[0, 0], crops[0, 1]) and torch.equal(crops[0, 1], crops[0, 2])
    assert float(crops.max()) == pytest.approx(1.0) and float(crops.min()) == pytest.approx(0.0)


def test_a_box_that_looks_like_another_class_is_flagged(tmp_path):
    import timm

    from jmlnet_geo.io.raster import open_scenes
    from jmlnet_geo.io.vector import boxes_for_scenes, read_boxes
    from jmlnet_geo.models.weights import ENCODER_NAME

    data = np.full((3, 200, 200), 90, np.uint8)
    geoms, classes = [], []
    for i in range(4):  # four red squares "a", four blue discs "b", one blue disc called "a"
        c = 10 + 45 * i
        data[0, 20:40, c : c + 20] = 250
        geoms.append(pixel_box(c, 20, c + 20, 40))
        classes.append("a")
    yy, xx = np.mgrid[:200, :200]
    for i in range(5):
        c = 20 + 40 * i
        disc = (yy - 120) ** 2 + (xx - c) ** 2 < 100
        data[2][disc], data[0][disc] = 250, 0
        geoms.append(pixel_box(c - 10, 110, c + 10, 130))
        classes.append("a" if i == 4 else "b")
    scene = write_scene(tmp_path / "s.tif", data)
    layer = read_boxes(write_boxes(tmp_path / "b.gpkg", geoms, classes), "class")
    torch.manual_seed(0)
    model = timm.create_model(ENCODER_NAME, pretrained=False, num_classes=0).eval()
    (sb,) = boxes_for_scenes(layer, open_scenes([scene]))
    seen = []
    (looks,), layer = appearance([sb], k=3, model=model, progress=seen.append)
    assert seen == [1]  # one scene embedded
    share = dict(zip(sb.features.tolist(), looks.other_share, strict=True))
    swapped = sb.features.tolist().index(8)
    assert share.pop(8) == pytest.approx(1.0) and looks.other_class[swapped] == 2  # "b"
    assert max(share.values()) <= 1 / 3
    # a candidate over a red square looks like the boxes of "a", not "b"
    candidate = np.array([[10, 20, 30, 40], [10, 20, 30, 40]])
    alike = candidate_look_alikes(layer, sb.scene, candidate, np.array([1, 2]), k=3)
    assert alike[0] == pytest.approx(1.0) and alike[1] == pytest.approx(0.0)
    # so of two missing candidates there, only the one predicted as "a" is believed
    options = AuditOptions(look_alikes=3)
    kept = believed([Component((10, 20, 30, 40), c, 0.9, 400) for c in (1, 2)], sb.scene, layer,
                    options)  # fmt: skip
    assert [(c.class_id, c.looks_like) for c in kept] == [(1, 1.0)]
    assert believed(kept, sb.scene, None, options) == kept  # no appearance: all kept
