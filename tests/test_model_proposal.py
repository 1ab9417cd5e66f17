"""The ``model`` proposal: a model's class raster inside the boxes, painted like the others."""

import numpy as np
import pytest
import rasterio
from conftest import write_scene

from jmlnet_geo.errors import InputFileError
from jmlnet_geo.io.raster import open_scene
from jmlnet_geo.io.vector import SceneBoxes
from jmlnet_geo.proposals.compose import proposal_path
from jmlnet_geo.proposals.model_proposal import MODEL_METHOD, model_box_masks, write_model_proposal
from jmlnet_geo.vocabulary import IGNORE


def test_model_proposal_is_the_prediction_inside_the_boxes(tmp_path):
    image = np.full((3, 40, 50), 100, np.uint8)
    image[:, :, 45:] = 0  # nodata on the right edge
    scene = open_scene(write_scene(tmp_path / "s.tif", image, nodata=0))
    predicted = np.zeros((1, 40, 50), np.uint8)
    predicted[0, 5:10, 5:12] = 1  # class 1 inside box 0 ...
    predicted[0, 5:10, 12:20] = 1  # ... and spilling outside it (dropped)
    predicted[0, 22:26, 22:26] = 1  # class 1 inside box 1, whose class is 2 (dropped)
    predicted[0, 30:35, 30:35] = 2  # class 2 outside every box (dropped)
    predicted[0, 2:6, 40:50] = 2  # class 2 inside box 2, partly on nodata
    pred_path = write_scene(tmp_path / "pred.tif", predicted)
    boxes = np.array([[4, 4, 12, 12], [20, 20, 30, 30], [38, 0, 50, 8]], np.float64)
    sb = SceneBoxes(scene, boxes, np.array([1, 2, 2]), np.arange(3))

    out = proposal_path(tmp_path, scene, MODEL_METHOD)
    summary = write_model_proposal(out, sb, pred_path, ["a", "b"])
    assert out.name == "s.model.tif" and summary.boxes == 3 and summary.fallbacks == 1
    with rasterio.open(out) as ds, rasterio.open(scene.path) as src:
        assert ds.transform == src.transform and ds.shape == src.shape and ds.count == 1
        got = ds.read(1)
    expected = np.zeros((40, 50), np.uint8)
    expected[5:10, 5:12] = 1
    expected[20:30, 20:30] = 2  # the model missed box 1: the filled box
    expected[2:6, 40:50] = 2
    expected[:, 45:] = IGNORE
    np.testing.assert_array_equal(got, expected)


def test_model_box_masks_and_a_misaligned_prediction(tmp_path):
    scene = open_scene(write_scene(tmp_path / "s.tif", np.full((1, 20, 20), 5, np.uint8)))
    predicted = np.zeros((1, 20, 20), np.uint8)
    predicted[0, 0:2, 0:2] = 1
    pred_path = write_scene(tmp_path / "pred.tif", predicted)
    boxes = np.array([[0, 0, 10, 10]])
    masks, fallbacks = model_box_masks(pred_path, boxes, np.array([1]), min_fraction=0.01)
    assert masks[0].sum() == 4 and fallbacks == [False]
    masks, fallbacks = model_box_masks(pred_path, boxes, np.array([1]), min_fraction=0.05)
    assert masks[0].all() and fallbacks == [True]  # 4 % of the box: the filled box
    other = write_scene(tmp_path / "other.tif", np.zeros((1, 20, 21), np.uint8))
    sb = SceneBoxes(scene, boxes.astype(float), np.array([1]), np.arange(1))
    with pytest.raises(InputFileError, match="not on the grid"):
        write_model_proposal(tmp_path / "s.model.tif", sb, other, ["a"])
