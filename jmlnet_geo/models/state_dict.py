"""Putting pretrained tensors into a model, and the record of what was loaded.

:func:`load_matching` copies tensors by name and shape (adapting RGB first-conv kernels to the
model's bands), :func:`load_best_matching` picks which part of a model a file's tensors belong
to, and :func:`load_fully` insists that a backbone received every tensor. What a factory loaded
is kept on the model as a :class:`WeightsInfo` (:func:`weights_info`, :func:`describe_weights`),
so a caller can say "training from scratch" once. Nothing here reads files or prints.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from jmlnet_geo.errors import JmlGeoError
from jmlnet_geo.models.bands import adapt_first_conv

__all__ = [
    "WEIGHTS_INFO_ATTR",
    "LoadReport",
    "WeightsInfo",
    "describe_weights",
    "load_best_matching",
    "load_fully",
    "load_matching",
    "weights_info",
]


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
