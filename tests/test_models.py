"""Model factories: offline weights, band adaptation, output shapes, DetCAM layer, no downloads."""

from __future__ import annotations

import socket
from types import SimpleNamespace

import pytest
import timm
import torch
from torchvision.models import resnet50
from torchvision.models.detection.faster_rcnn import TwoMLPHead

from jmlnet_geo.errors import InputFileError, JmlGeoError
from jmlnet_geo.models import weights
from jmlnet_geo.models.bands import adapt_first_conv
from jmlnet_geo.models.detector import TileTransform, box_head_feature_layer, build_detector
from jmlnet_geo.models.segmenter import build_segmenter, first_conv
from jmlnet_geo.models.state_dict import describe_weights, weights_info
from jmlnet_geo.models.weights import efficientnet_lite0_state_dict, efficientnet_lite0_weights_path


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one intra-op thread is as fast, and much steadier on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def empty_hub_cache(tmp_path, monkeypatch):
    """Every test sees an empty torch hub cache, whatever this machine has downloaded."""
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "_hub_dir", str(hub))
    return hub


@pytest.fixture(scope="module")
def lite0():
    return efficientnet_lite0_state_dict()


def _boxes_target(*boxes, labels):
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


# ---------------------------------------------------------------------------- offline weights


def test_lite0_weights_map_to_timm_names_in_order(lite0):
    raw = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    for name in ("efficientnet_lite0", "tf_efficientnet_lite0"):
        reference = timm.create_model(name, pretrained=False).state_dict()
        assert list(lite0) == list(reference)  # names, in order
        assert len(lite0) == 296
        assert all(lite0[k].shape == v.shape for k, v in reference.items())
    assert list(raw)[0] == "_conv_stem.weight" and list(lite0)[0] == "conv_stem.weight"
    for mapped, original in zip(lite0.values(), raw.values(), strict=True):
        assert torch.equal(mapped, original)


def test_lite0_weights_shape_mismatch_is_a_clear_error(monkeypatch):
    real = weights._timm_reference_shapes

    def altered():
        shapes = real()
        shapes["blocks.0.0.conv_dw.weight"] = torch.Size([32, 1, 5, 5])
        return shapes

    weights._lite0_state_dict_cached.cache_clear()
    monkeypatch.setattr(weights, "_timm_reference_shapes", altered)
    try:
        with pytest.raises(
            JmlGeoError, match=r"_blocks\.0\._depthwise_conv.*blocks\.0\.0\.conv_dw"
        ):
            efficientnet_lite0_state_dict()
    finally:
        weights._lite0_state_dict_cached.cache_clear()


# ---------------------------------------------------------------------------- first conv


def test_adapt_first_conv_keeps_rgb_and_activation_magnitude():
    torch.manual_seed(0)
    weight = torch.randn(8, 3, 3, 3)
    assert torch.equal(adapt_first_conv(weight, 3), weight)
    four = adapt_first_conv(weight, 4)
    assert four.shape == (8, 4, 3, 3) and four.dtype == weight.dtype
    torch.testing.assert_close(four[:, :3], weight * 3 / 4)  # RGB kernels, documented factor
    torch.testing.assert_close(four[:, 3], weight.mean(1) * 3 / 4)
    torch.testing.assert_close(adapt_first_conv(weight, 1), weight.sum(1, keepdim=True))
    torch.testing.assert_close(adapt_first_conv(weight, 2), weight[:, :2] * 1.5)
    # the same signal on every band gives what the RGB convolution gave on R, G and B
    band = torch.randn(1, 1, 16, 16)
    rgb = torch.nn.functional.conv2d(band.expand(1, 3, -1, -1), weight)
    for bands in (1, 4, 7):
        out = torch.nn.functional.conv2d(
            band.expand(1, bands, -1, -1), adapt_first_conv(weight, bands)
        )
        torch.testing.assert_close(out, rgb, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError):
        adapt_first_conv(torch.randn(8, 4, 3, 3), 3)
    with pytest.raises(ValueError):
        adapt_first_conv(weight, 0)


# ---------------------------------------------------------------------------- segmenter


@pytest.mark.parametrize("bands", [1, 3, 4])
def test_fast_segmenter_shapes_and_pretrained_encoder(bands, lite0):
    model = build_segmenter("fast", num_classes=3, in_channels=bands)
    info = weights_info(model)
    assert not info.from_scratch and info.loaded == info.total == 288
    assert "EfficientNet-Lite0" in describe_weights(model)
    stem = first_conv(model).weight
    assert stem.shape == (32, bands, 3, 3)
    torch.testing.assert_close(stem, adapt_first_conv(lite0["conv_stem.weight"], bands))
    if bands >= 3:  # RGB kernels for bands 0-2 (times 3 / bands)
        torch.testing.assert_close(stem[:, :3], lite0["conv_stem.weight"] * 3 / bands)
    encoder = model.encoder.model.state_dict()
    assert torch.equal(encoder["blocks.6.0.conv_pwl.weight"], lite0["blocks.6.0.conv_pwl.weight"])
    logits = model(torch.randn(2, bands, 96, 96))
    assert logits.shape == (2, 3, 96, 96) and logits.dtype == torch.float32
    if bands == 4:  # sides that are not multiples of 8 come back at their size
        model.eval()
        with torch.no_grad():
            assert model(torch.randn(1, 4, 70, 90)).shape == (1, 3, 70, 90)


@pytest.mark.parametrize("head", ["deeplabv3", "deeplabv3plus"])
def test_fast_heads_share_the_encoder_and_keep_small_objects_resolvable(head, lite0):
    model = build_segmenter("fast", num_classes=2, in_channels=3, head=head).eval()
    assert (head == "deeplabv3plus") == hasattr(model.decoder, "block1")  # v3+'s stride-4 skip
    assert torch.equal(model.encoder.model.conv_stem.weight, lite0["conv_stem.weight"])
    # A bright 4 x 4 patch changes the logits where it is (full-resolution output, any head).
    x = torch.zeros(1, 3, 64, 64)
    y = x.clone()
    y[..., 30:34, 30:34] = 5.0
    with torch.no_grad():
        diff = (model(y) - model(x)).abs().sum(1)[0]
    assert diff.shape == (64, 64) and diff[32, 32] > 0


def test_unknown_head_is_a_clear_error():
    from jmlnet_geo.errors import OptionError

    with pytest.raises(OptionError, match="deeplabv3 or deeplabv3plus"):
        build_segmenter("fast", 2, 3, weights=None, head="unet")
    with pytest.raises(OptionError, match="paper preset takes deeplabv3$"):
        build_segmenter("paper", 2, 3, weights=None, head="deeplabv3plus")


def test_fast_segmenter_from_scratch_says_so():
    model = build_segmenter("fast", num_classes=2, in_channels=3, weights=None)
    assert weights_info(model).from_scratch
    assert describe_weights(model) == "training from scratch: no pretrained weights"


@pytest.mark.parametrize("bands", [1, 3, 4])
def test_paper_segmenter_shapes(bands):
    model = build_segmenter("paper", num_classes=2, in_channels=bands)
    assert weights_info(model).from_scratch  # paper default: no weights offline
    assert first_conv(model).weight.shape == (64, bands, 7, 7)
    model.eval()
    with torch.no_grad():
        logits = model(torch.randn(1, bands, 64, 64))
    assert isinstance(logits, torch.Tensor)  # not torchvision's {"out": ...}
    assert logits.shape == (1, 2, 64, 64) and logits.dtype == torch.float32


def test_paper_segmenter_reads_torchvision_weights_from_hub_cache_only(empty_hub_cache):
    torch.manual_seed(0)
    state = resnet50().state_dict()  # stands for ResNet50_Weights.IMAGENET1K_V1
    (empty_hub_cache / "checkpoints").mkdir(parents=True)
    torch.save(state, empty_hub_cache / "checkpoints" / "resnet50-0676ba61.pth")
    model = build_segmenter("paper", num_classes=2, in_channels=4, weights="imagenet")
    info = weights_info(model)
    assert info.source == "ResNet50_Weights.IMAGENET1K_V1" and info.loaded == info.total
    backbone = model.backbone.state_dict()
    torch.testing.assert_close(backbone["conv1.weight"], adapt_first_conv(state["conv1.weight"], 4))
    assert torch.equal(backbone["layer4.2.conv3.weight"], state["layer4.2.conv3.weight"])


@pytest.mark.parametrize(
    "weights",
    [
        "imagenet",
        "DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1",
        "ResNet50_Weights.IMAGENET1K_V2",
    ],
)
def test_paper_weights_not_offline_is_a_clear_error(weights):
    with pytest.raises(JmlGeoError, match="not available offline"):
        build_segmenter("paper", num_classes=2, in_channels=3, weights=weights)


def test_segmenter_weights_from_local_file(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    source = build_segmenter("fast", num_classes=2, in_channels=4, weights=None).eval()
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, tmp_path / "model.safetensors")
    lightning_like = {"state_dict": {f"model.{k}": v for k, v in state.items()}, "epoch": 3}
    torch.save(lightning_like, tmp_path / "model.ckpt")
    x = torch.randn(1, 4, 64, 64)
    with torch.no_grad():
        expected = source(x)
    for name in ("model.safetensors", "model.ckpt"):
        model = build_segmenter("fast", 2, 4, weights=tmp_path / name).eval()
        info = weights_info(model)
        assert info.target == "model" and info.loaded == info.total
        with torch.no_grad():
            torch.testing.assert_close(model(x), expected)
    with pytest.raises(InputFileError):
        build_segmenter("fast", 2, 4, weights=tmp_path / "missing.pth")
    with pytest.raises(JmlGeoError, match="cannot use weights"):
        build_segmenter("fast", 2, 4, weights="ResNet50_Weights.IMAGENET1K_V1")


# ---------------------------------------------------------------------------- detector


@pytest.fixture(scope="module")
def fast_detector():
    return build_detector("fast", num_classes=2, in_channels=4)


def test_fast_detector_train_and_eval(fast_detector, lite0):
    model = fast_detector
    info = weights_info(model)
    assert info.loaded == info.total == 288 and not info.from_scratch
    assert model.backbone.body.conv_stem.weight.shape == (32, 4, 3, 3)
    assert isinstance(model.transform, TileTransform)
    assert model.transform.image_mean == [0.0] * 4 and model.transform.image_std == [1.0] * 4
    assert model.roi_heads.box_predictor.cls_score.out_features == 3  # 2 classes + background
    torch.manual_seed(0)
    images = [torch.randn(4, 128, 128), torch.randn(4, 128, 128)]
    targets = [
        _boxes_target([10, 12, 40, 50], [60, 60, 100, 90], labels=[1, 2]),
        _boxes_target(labels=[]),  # a tile without boxes
    ]
    model.train()
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert model.backbone.body.conv_stem.weight.grad is not None
    model.eval()
    with torch.no_grad():
        detections = model(images)
    assert len(detections) == 2
    boxes = detections[0]["boxes"]
    assert boxes.ndim == 2 and boxes.shape[1] == 4 and boxes.dtype == torch.float32
    assert detections[0]["labels"].shape == detections[0]["scores"].shape == boxes.shape[:1]
    assert boxes.numel() == 0 or float(boxes.max()) <= 128  # not resized: tile pixels
    model.zero_grad(set_to_none=True)


def test_box_head_feature_layer_gives_spatial_maps(fast_detector):
    model = fast_detector.eval()
    maps = []
    layer = box_head_feature_layer(model)
    handle = layer.register_forward_hook(lambda module, args, output: maps.append(output))
    try:
        with torch.no_grad():
            model([torch.randn(4, 96, 96)])
    finally:
        handle.remove()
    assert len(maps) == 1 and maps[0].ndim == 4 and maps[0].shape[1:] == (128, 7, 7)
    fake = SimpleNamespace(roi_heads=SimpleNamespace(box_head=TwoMLPHead(256 * 7 * 7, 1024)))
    with pytest.raises(JmlGeoError, match="no convolution"):
        box_head_feature_layer(fake)


def test_paper_detector_is_v2_with_conv_box_head():
    model = build_detector(
        "paper", num_classes=1, in_channels=4, rpn_post_nms_top_n_test=8, box_detections_per_img=5
    ).eval()
    assert weights_info(model).from_scratch
    assert model.backbone.body.conv1.weight.shape == (64, 4, 7, 7)
    assert type(model.roi_heads.box_head).__name__ == "FastRCNNConvFCHead"
    assert model.roi_heads.box_predictor.cls_score.out_features == 2
    assert model.rpn.anchor_generator.sizes == ((16,), (32,), (64,), (128,), (256,))
    maps = []
    handle = box_head_feature_layer(model).register_forward_hook(lambda m, a, o: maps.append(o))
    try:
        with torch.no_grad():
            detections = model([torch.randn(4, 64, 64)])
    finally:
        handle.remove()
    assert detections[0]["boxes"].shape[1] == 4
    assert maps[0].ndim == 4 and maps[0].shape[1:] == (256, 7, 7)
    with pytest.raises(JmlGeoError, match="not available offline"):
        build_detector("paper", 1, 3, weights="FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1")


def test_detector_min_size_brings_torchvision_resizing_back():
    model = build_detector("fast", num_classes=1, in_channels=3, weights=None, min_size=64)
    assert not isinstance(model.transform, TileTransform)
    assert model.transform.min_size == (64,) and model.transform.max_size == 64
    assert weights_info(model).from_scratch


# ---------------------------------------------------------------------------- errors, network


@pytest.mark.parametrize("factory", [build_segmenter, build_detector])
def test_unknown_preset_lists_valid_ones(factory):
    with pytest.raises(JmlGeoError, match="fast, paper"):
        factory("huge", 2, 3)


def test_nothing_is_downloaded(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    weights._lite0_state_dict_cached.cache_clear()  # really read the packaged file again
    assert not weights_info(build_segmenter("fast", 2, 3)).from_scratch
    assert not weights_info(build_detector("fast", 1, 3)).from_scratch
    with pytest.raises(JmlGeoError, match="not available offline"):
        build_detector("paper", 1, 3, weights="imagenet")
