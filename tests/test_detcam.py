"""DetCAM (Algorithm 1, Eqs. 9-10) against hand computations, CAMCut's mask rules, the rasters
and the proposals CLI with detcam/camcut."""

import json
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np
import pytest
import rasterio
import torch
from conftest import REPO, assert_one_line_error, pixel_box, write_boxes, write_scene
from rasterio.windows import Window
from torch import nn
from torchvision.ops import MultiScaleRoIAlign, roi_align

from jmlnet_geo.errors import CancelledError, JmlGeoError, OptionError
from jmlnet_geo.io.raster import open_scenes
from jmlnet_geo.io.vector import boxes_for_scenes, read_boxes
from jmlnet_geo.models.detector import TileTransform
from jmlnet_geo.normalization import Normalization, scene_normalization
from jmlnet_geo.proposals.camcut import camcut_init, camcut_mask
from jmlnet_geo.proposals.compose import pixel_boxes
from jmlnet_geo.proposals.crop import BoxCrop
from jmlnet_geo.proposals.detcam import (
    DetCAMOptions,
    DetCAMWarning,
    box_context,
    box_heat,
    check_thresholds,
    detcam_window,
    low_high,
    plan_windows,
    scene_detcam,
)
from jmlnet_geo.proposals.detector_proposals import write_detector_proposals
from jmlnet_geo.train.detector import train_detector
from jmlnet_geo.vocabulary import IGNORE

torch.set_num_threads(1)  # the test machine is shared: no thread oversubscription

# ---------------------------------------------------------------- a detector we can compute by hand


class _Features(nn.Module):
    """Backbone whose only feature map (stride 1) is the image itself."""

    out_channels = 2

    def forward(self, x):
        return OrderedDict([("0", x)])


class _Predictor(nn.Module):
    """Linear class logits over the flattened M_k: logit_c = <W_c, M>."""

    def __init__(self, weight):
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, x):
        return x @ self.weight.T, torch.zeros(len(x), 4 * len(self.weight))


class _RoIHeads(nn.Module):
    def __init__(self, weight):
        super().__init__()
        self.box_roi_pool = MultiScaleRoIAlign(["0"], output_size=7, sampling_ratio=2)
        identity = nn.Conv2d(2, 2, 1, bias=False)
        identity.weight.data = torch.eye(2).view(2, 2, 1, 1)
        self.box_head = nn.Sequential(nn.Sequential(identity), nn.Flatten())  # M_k = RoIAlign
        self.box_predictor = _Predictor(weight)


class HandDetector(nn.Module):
    """transform/backbone/roi_heads like a torchvision FasterRCNN, with a known M_k and logit."""

    def __init__(self, weight):
        super().__init__()
        self.transform = TileTransform(64, 64, [0.0, 0.0], [1.0, 1.0])
        self.backbone = _Features()
        self.roi_heads = _RoIHeads(weight)


def class_weights():
    """Class 1 reads channel 0 only, class 2 channel 1 only (K = 2, plus background)."""
    w = torch.zeros(3, 2, 7, 7)
    w[1, 0] = torch.linspace(0.5, 1.5, 49).view(7, 7)  # not uniform: alpha is its mean
    w[2, 1] = 1.0
    return w.view(3, 98)


def two_channel_image():
    """Channel 0 bright on the left part of the box, channel 1 bright on its right part."""
    image = torch.full((2, 64, 64), 0.1)
    image[0, 16:48, 16:28] = 1.0
    image[1, 16:48, 36:48] = 1.0
    return image


BOX = torch.tensor([[16.0, 16.0, 48.0, 48.0]])


def hand_detcam(image, boxes, labels, weight):
    """Eqs. 9-10 by hand: M = RoIAlign(image), ds/dM = W_label, alpha = its spatial mean."""
    maps = roi_align(image[None], [boxes], output_size=7, spatial_scale=1.0, sampling_ratio=2)
    grads = weight.view(3, 2, 7, 7)[labels]  # (N, C, 7, 7)
    alpha = grads.mean(dim=(2, 3))
    cam = torch.relu((alpha[:, :, None, None] * maps).sum(1))
    low = cam.flatten(1).min(1).values[:, None, None]
    high = cam.flatten(1).max(1).values[:, None, None]
    return (cam - low) / (high - low)


def test_detcam_matches_the_hand_computation_and_peaks_where_the_logit_looks():
    weight = class_weights()
    model = HandDetector(weight).eval()
    image = two_channel_image()
    boxes = torch.cat([BOX, BOX])
    labels = torch.tensor([1, 2])
    got = detcam_window(model, image, boxes, labels)
    torch.testing.assert_close(got, hand_detcam(image, boxes, labels, weight), atol=1e-6, rtol=0)
    assert got.min() >= 0 and got.max() == pytest.approx(1.0)
    heat1, heat2 = box_heat(got[0], 32, 32), box_heat(got[1], 32, 32)
    assert heat1.shape == (32, 32) and heat1.dtype == np.float32
    # class 1's logit reads channel 0 (bright at box columns 0-11): its DetCAM is there
    assert heat1[:, :12].mean() > 0.8 and heat1[:, 20:].max() < 0.1
    assert heat2[:, 20:].mean() > 0.8 and heat2[:, :12].max() < 0.1
    assert all(p.grad is None for p in model.parameters())  # nothing but M_k differentiated


def test_a_head_without_spatial_layer_uses_the_roialign_output_and_says_so():
    weight = class_weights()
    model = HandDetector(weight).eval()
    model.roi_heads.box_head = nn.Sequential(nn.Flatten())  # torchvision TwoMLPHead-like
    image, boxes, labels = two_channel_image(), torch.cat([BOX, BOX]), torch.tensor([1, 2])
    with pytest.warns(DetCAMWarning, match="RoIAlign output"):
        got = detcam_window(model, image, boxes, labels)
    torch.testing.assert_close(got, hand_detcam(image, boxes, labels, weight), atol=1e-6, rtol=0)


def test_all_boxes_of_a_window_take_one_backward_pass(monkeypatch, tmp_path):
    weight = class_weights()
    model = HandDetector(weight).eval()
    calls = []
    real = torch.autograd.grad

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting)
    data = np.zeros((2, 96, 96), np.float32)
    data[:, 20:40, 20:40] = 1.0
    scene_path = write_scene(tmp_path / "two.tif", data)
    (scene,) = open_scenes([scene_path])
    boxes = np.array([[20, 20, 40, 40], [50, 22, 70, 42], [24, 55, 44, 75]])
    labels = np.array([1, 2, 1])
    heats, seconds = scene_detcam(
        model, Normalization((0.0, 0.0), (1.0, 1.0)), scene, boxes, labels, DetCAMOptions()
    )
    assert len(calls) == 1  # three boxes, one window, one backward pass
    assert [h.shape for h in heats] == [(20, 20)] * 3
    assert all(h.min() >= 0 and h.max() <= 1 for h in heats)
    assert (seconds > 0).all()


def test_thresholds_select_exactly_the_pixels_above_them():
    heat = np.array([[0.0, 0.15, 0.150001], [0.5, 0.8, 0.81]], np.float32)
    low, high = low_high(heat, 0.15, 0.8)
    np.testing.assert_array_equal(low, [[False, False, True], [True, True, True]])
    np.testing.assert_array_equal(high, [[False, False, False], [False, False, True]])
    for bad in ((0.8, 0.8), (0.9, 0.8), (-0.1, 0.5), (0.1, 1.5)):
        with pytest.raises(OptionError, match="tau-low"):
            check_thresholds(*bad)


def test_windows_hold_whole_boxes_and_shrink_only_the_huge_ones():
    options = DetCAMOptions(window=128, margin=0.5, min_margin=8)
    boxes = np.array(
        [
            [10, 10, 30, 30],  # two neighbours: one window
            [40, 12, 60, 28],
            [200, 200, 220, 215],  # far away: another window
            [20, 150, 190, 290],  # context 275 px (clipped) > 128: alone, shrunk
        ]
    )
    plans = plan_windows(boxes, 300, 300, options)
    context = box_context(boxes, 300, 300, options)
    seen = sorted(i for p in plans for i in p.boxes)
    assert seen == [0, 1, 2, 3]
    for plan in plans:
        w = plan.window
        assert w.col_off >= 0 and w.row_off >= 0
        assert w.col_off + w.width <= 300 and w.row_off + w.height <= 300
        for i in plan.boxes:  # never cut: the whole context is inside
            c0, r0, c1, r1 = context[i]
            assert w.col_off <= c0 and c1 <= w.col_off + w.width
            assert w.row_off <= r0 and r1 <= w.row_off + w.height
        if plan.scale == 1.0:
            assert max(w.width, w.height) <= 128
    by_box = {i: p for p in plans for i in p.boxes}
    assert by_box[0] is by_box[1] and by_box[2] is not by_box[0]
    side = max(context[3][2] - context[3][0], context[3][3] - context[3][1])  # 275 px
    assert by_box[3].boxes == (3,) and by_box[3].scale == pytest.approx(128 / side)
    assert by_box[3].window == Window(*context[3][:2], *(context[3][2:] - context[3][:2]))


# ---------------------------------------------------------------- CAMCut


def camcut_crop():
    """A 60 x 60 crop: a bright disc in the box, a grey background, the box at 15..45."""
    picture = np.full((60, 60, 3), 90, np.uint8)
    rr, cc = np.mgrid[:60, :60]
    disc = (rr - 30) ** 2 + (cc - 30) ** 2 <= 11**2
    picture[disc] = 220
    rng = np.random.default_rng(0)
    picture = np.clip(picture + rng.normal(0, 6, picture.shape), 0, 255).astype(np.uint8)
    valid = np.ones((60, 60), bool)
    valid[:, :3] = False
    return BoxCrop(picture, valid, (15, 15, 45, 45), (30, 30), 1.0), disc


def test_camcut_init_follows_eqs_11_to_13():
    crop, _ = camcut_crop()
    heat = np.zeros((30, 30), np.float32)
    heat[5:25, 5:25] = 0.5
    heat[12:18, 12:18] = 0.9
    heat[0, 0] = 0.15  # exactly tau_l: not in D_l
    mask = camcut_init(crop, heat, 0.15, 0.8)
    inner = mask[15:45, 15:45]
    assert (inner[12:18, 12:18] == cv2.GC_FGD).all()
    assert (inner[5:25, 5:25][heat[5:25, 5:25] == 0.5] == cv2.GC_PR_FGD).all()
    assert inner[0, 0] == cv2.GC_BGD and (inner[heat <= 0.15] == cv2.GC_BGD).all()
    outside = np.ones((60, 60), bool)
    outside[15:45, 15:45] = False
    assert (mask[outside] == cv2.GC_BGD).all() and (mask[~crop.valid] == cv2.GC_BGD).all()


def test_camcut_keeps_sure_foreground_and_never_leaves_the_box():
    crop, disc = camcut_crop()
    heat = np.full((30, 30), 0.5, np.float32)  # all probable ...
    heat[0:4, 0:4] = 0.95  # ... and a sure-foreground corner that is background-coloured
    mask = camcut_mask(crop, heat, 0.15, 0.8)
    assert mask.shape == (30, 30) and mask.dtype == bool
    assert mask[0:4, 0:4].all()  # D_h stays foreground whatever the colours say
    disc_in_box = disc[15:45, 15:45]
    assert (mask & disc_in_box).sum() / disc_in_box.sum() > 0.9
    assert mask[~disc_in_box].mean() < 0.3  # grey pixels mostly dropped
    again = camcut_mask(crop, heat, 0.15, 0.8)
    np.testing.assert_array_equal(mask, again)  # deterministic
    assert camcut_mask(crop, np.zeros((30, 30), np.float32), 0.15, 0.8) is None


# ---------------------------------------------------------------- rasters from a trained detector


def disc_scene(path, bands=3, seed=0):
    """160 x 160 noise with three bright discs (tank) and a dark square (pool), nodata corner."""
    rng = np.random.default_rng(seed)
    data = rng.normal(100, 15, (bands, 160, 160))
    rows, cols = np.mgrid[:160, :160]
    geometries, classes = [], []
    for (r, c), radius in (((40, 40), 14), ((110, 60), 12), ((45, 115), 16)):
        data[:, (rows + 0.5 - r) ** 2 + (cols + 0.5 - c) ** 2 <= radius**2] = 225
        geometries.append(pixel_box(c - radius, r - radius, c + radius, r + radius))
        classes.append("tank")
    data[:, 105:135, 105:145] = 20
    geometries.append(pixel_box(105, 105, 145, 135))
    classes.append("pool")
    data = np.clip(data, 1, 255).astype(np.uint8)
    data[:, 150:, 150:] = 0  # nodata
    return write_scene(path, data, nodata=0), geometries, classes


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A fast-preset detector trained 2 steps on the disc scene (module-wide: ~15 s)."""
    folder = tmp_path_factory.mktemp("detcam")
    scene, geometries, classes = disc_scene(folder / "discs.tif")
    boxes = write_boxes(folder / "boxes.gpkg", geometries, classes)
    scenes = open_scenes([scene])
    layer = read_boxes(boxes)
    scene_boxes = boxes_for_scenes(layer, scenes)
    detector = train_detector(
        scene_boxes,
        layer.classes.names,
        scene_normalization(scenes),
        folder / "detector",
        steps=2,
        batch_size=2,
        tile_size=128,
        device="cpu",
    )
    return {"scene": scene, "boxes": boxes, "detector": detector, "folder": folder}


def test_detector_rasters_are_aligned_with_255_on_nodata_and_deterministic(tmp_path, trained):
    scenes = open_scenes([trained["scene"]])
    layer = read_boxes(trained["boxes"])
    scene_boxes = boxes_for_scenes(layer, scenes)
    runs = []
    for name in ("a", "b"):
        summaries = write_detector_proposals(
            scene_boxes,
            layer.classes.names,
            ["detcam", "camcut"],
            tmp_path / name,
            trained["detector"],
            heatmap=True,
            device="cpu",
        )
        runs.append(summaries)
    (summary,) = runs[0]
    assert set(summary.methods) == {"detcam", "camcut"}
    with rasterio.open(trained["scene"]) as src:
        profile = src.profile
    boxes = pixel_boxes(scene_boxes[0])
    inside = np.zeros((160, 160), bool)
    for c0, r0, c1, r1 in boxes:
        inside[r0:r1, c0:c1] = True
    for method in ("detcam", "camcut", "detcam_heat"):
        path = tmp_path / "a" / f"discs.{method}.tif"
        with rasterio.open(path) as ds:
            values = ds.read(1)
            assert (ds.crs, ds.transform, ds.shape) == (
                profile["crs"],
                profile["transform"],
                (160, 160),
            )
            assert ds.dtypes[0] == "uint8"
        assert (values[~inside & (values != IGNORE)] == 0).all()  # nothing outside the boxes
        if method != "detcam_heat":
            assert (values[150:, 150:] == IGNORE).all()  # nodata
            assert set(np.unique(values)) <= {0, 1, 2, IGNORE}
            m = summary.methods[method]
            assert m.boxes == 4 and 0 <= m.fallbacks <= 4 and m.seconds > 0
        assert (tmp_path / "b" / path.name).read_bytes() == path.read_bytes()


def test_a_stop_request_leaves_no_raster(tmp_path, trained):
    scenes = open_scenes([trained["scene"]])
    layer = read_boxes(trained["boxes"])
    with pytest.raises(CancelledError):
        write_detector_proposals(
            boxes_for_scenes(layer, scenes), layer.classes.names, ["detcam", "camcut"],
            tmp_path / "stopped", trained["detector"], device="cpu", should_stop=lambda: True,
        )  # fmt: skip
    assert not list((tmp_path / "stopped").glob("*.tif"))


def test_bad_detector_inputs_are_clear(tmp_path, trained):
    scenes = open_scenes([trained["scene"]])
    layer = read_boxes(trained["boxes"])
    scene_boxes = boxes_for_scenes(layer, scenes)
    other = write_boxes(
        tmp_path / "other.gpkg", [pixel_box(10, 10, 40, 40)], ["ship"]
    )  # a class the detector never saw
    other_layer = read_boxes(other)
    with pytest.raises(JmlGeoError, match="trained on classes pool, tank.*ship"):
        write_detector_proposals(
            boxes_for_scenes(other_layer, scenes), other_layer.classes.names, ["detcam"],
            tmp_path / "x", trained["detector"],
        )  # fmt: skip
    four, geometries, classes = disc_scene(tmp_path / "two.tif", bands=2)
    two_scenes = open_scenes([four])
    with pytest.raises(JmlGeoError, match="has 2 band.*trained on 3"):
        write_detector_proposals(
            boxes_for_scenes(layer, two_scenes), layer.classes.names, ["detcam"],
            tmp_path / "x", trained["detector"],
        )  # fmt: skip
    with pytest.raises(OptionError, match="choose from detcam, camcut"):
        write_detector_proposals(
            scene_boxes, layer.classes.names, ["grabcut"], tmp_path / "x", trained["detector"]
        )


def test_cli_proposals_detcam_camcut_with_a_detector(jmlgeo, tmp_path, trained):
    result = jmlgeo(
        "proposals", trained["scene"], "--boxes", trained["boxes"], "--out", tmp_path / "out",
        "--methods", "box,detcam,camcut", "--detector", trained["detector"], "--heatmap",
        "--tau-low", "0.1", "--tau-high", "0.7", "--progress", "json",
    )  # fmt: skip
    assert result.code == 0, result.err
    for name in ("box", "detcam", "camcut", "detcam_heat"):
        assert (tmp_path / "out" / f"discs.{name}.tif").exists(), name
    record = json.loads((tmp_path / "out" / "proposals.json").read_text())
    assert record["tau_low"] == 0.1 and record["tau_high"] == 0.7
    assert set(record["scenes"][0]["methods"]) == {"box", "detcam", "camcut"}
    events = [json.loads(line) for line in result.out.splitlines()]
    assert events[-1] == {"event": "done"}
    assert {e.get("kind") for e in events if e["event"] == "output"} >= {"proposal", "heatmap"}


def test_cli_trains_a_detector_on_the_sample_data_and_writes_aligned_rasters(jmlgeo, tmp_path):
    sample = REPO / "sample_data"
    out = tmp_path / "out"
    result = jmlgeo(
        "proposals", sample / "scene.tif", "--boxes", sample / "boxes.gpkg", "--out", out,
        "--methods", "detcam,camcut", "--detector-steps", "1", "--progress", "none",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert (out / "detector" / "detector.safetensors").exists()
    with rasterio.open(sample / "scene.tif") as src:
        grid = (src.crs, src.transform, src.shape)
        nodata = ~src.read_masks(1).astype(bool)
    for method in ("detcam", "camcut"):
        with rasterio.open(out / f"scene.{method}.tif") as ds:
            assert (ds.crs, ds.transform, ds.shape) == grid
            values = ds.read(1)
        assert (values[nodata] == IGNORE).all() and set(np.unique(values)) <= {0, 1, 2, 3, IGNORE}
        assert (values[~nodata] != 0).mean() > 0.01  # the objects are painted


def test_cli_bad_inputs_are_one_clear_line(jmlgeo, tmp_path, trained):
    base = ("proposals", trained["scene"], "--boxes", trained["boxes"], "--out", tmp_path / "o")
    result = jmlgeo(*base, "--methods", "detcam,bogus")
    assert_one_line_error(result, "bogus", "box, crf, grabcut, detcam, camcut")
    result = jmlgeo(*base, "--methods", "camcut", "--detector", tmp_path / "missing.safetensors")
    assert_one_line_error(result, "missing.safetensors", "detector file not found")
    result = jmlgeo(*base, "--methods", "detcam", "--tau-low", "0.8", "--tau-high", "0.8")
    assert_one_line_error(result, "--tau-low 0.8", "tau-low < tau-high")
    pickle = tmp_path / "detector.pt"
    torch.save({"weight": torch.zeros(2)}, pickle)
    result = jmlgeo(*base, "--methods", "detcam", "--detector", pickle)
    assert_one_line_error(result, "detector.pt", "pickles and checkpoints")
    assert not Path(tmp_path / "o").exists() or not any((tmp_path / "o").glob("*.tif"))
