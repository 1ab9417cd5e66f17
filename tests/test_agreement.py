"""Agreement of proposals against box-wise IoUs worked out by hand."""

import math

import numpy as np
import pytest
from conftest import write_scene

from jmlnet_geo.proposals.agreement import (
    agreement_lines,
    box_iou,
    box_masks_from_raster,
    proposal_agreement,
)


def _mask(rows, cols, on):
    m = np.zeros((rows, cols), bool)
    for r, c in on:
        m[r, c] = True
    return m


def test_box_iou_by_hand():
    a = _mask(2, 2, [(0, 0), (0, 1)])
    b = _mask(2, 2, [(0, 1), (1, 1)])
    assert box_iou(a, b) == pytest.approx(1 / 3)
    assert box_iou(a, a) == 1.0
    assert box_iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 1.0
    with pytest.raises(ValueError, match="shape"):
        box_iou(a, np.zeros((3, 2), bool))


def test_agreement_table_by_hand():
    full = np.ones((2, 2), bool)
    half = _mask(2, 2, [(0, 0), (0, 1)])
    corner = _mask(2, 2, [(0, 0)])
    box2_a, box2_b = _mask(1, 4, [(0, 0), (0, 1)]), _mask(1, 4, [(0, 1), (0, 2)])
    table = proposal_agreement(
        {
            "box": [full, np.ones((1, 4), bool)],
            "grabcut": [half, box2_a],
            "crf": [corner, box2_b],
        }
    )
    # box-grabcut: (2/4 + 2/4) / 2 = 0.5; box-crf: (1/4 + 2/4) / 2 = 0.375;
    # grabcut-crf: (1/2 + 1/3) / 2 = 5/12
    pairs = {("box", "grabcut"): 0.5, ("box", "crf"): 0.375, ("grabcut", "crf"): 5 / 12}
    expected = {
        "box": (0.5 + 0.375) / 2,
        "grabcut": (0.5 + 5 / 12) / 2,
        "crf": (0.375 + 5 / 12) / 2,
    }
    assert [r.method for r in table] == ["grabcut", "box", "crf"]  # 0.458 > 0.4375 > 0.396
    for row in table:
        assert row.mean_iou == pytest.approx(expected[row.method])
        assert row.boxes == 2
        for other, value in row.pairs.items():
            key = (row.method, other) if (row.method, other) in pairs else (other, row.method)
            assert value == pytest.approx(pairs[key])
    assert agreement_lines(table)[0].startswith("grabcut: 45.8 mean box IoU (box 50.0, crf 41.7)")


def test_agreement_edge_cases():
    one = proposal_agreement({"grabcut": [np.ones((2, 2), bool)]})
    assert one[0].pairs == {} and math.isnan(one[0].mean_iou)
    with pytest.raises(ValueError, match="numbers of boxes"):
        proposal_agreement({"a": [np.ones((1, 1), bool)], "b": []})


def test_box_masks_from_a_proposal_raster(tmp_path):
    raster = np.zeros((1, 10, 12), np.uint8)
    raster[0, 2:5, 3:6] = 1
    raster[0, 4, 5] = 2  # another class's object inside the box
    path = write_scene(tmp_path / "s.grabcut.tif", raster)
    masks = box_masks_from_raster(path, np.array([[3, 2, 7, 6], [0, 0, 2, 2]]), np.array([1, 2]))
    assert masks[0].shape == (4, 4) and masks[0].sum() == 8 and not masks[0][2, 2]
    assert masks[1].shape == (2, 2) and not masks[1].any()
