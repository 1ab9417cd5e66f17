"""Checks the factories share, and one place to import the backbone helpers from.

The helpers live in modules by job:

- :mod:`jmlnet_geo.models.weights`: offline pretrained weights (the packaged EfficientNet-Lite0,
  the torch hub cache, local files) and what a ``weights`` argument means;
- :mod:`jmlnet_geo.models.bands`: the first convolution adapted to any number of bands;
- :mod:`jmlnet_geo.models.state_dict`: tensors matched by name and shape into a model, and the
  record of what was loaded (:class:`WeightsInfo`, :func:`describe_weights`).

This module re-exports their public names, so ``from jmlnet_geo.models.backbones import
describe_weights`` keeps working; new code imports from the module that does the job. The presets
are :data:`jmlnet_geo.config.PRESETS` (defined once, there).
"""

from __future__ import annotations

from jmlnet_geo.config import PRESETS
from jmlnet_geo.errors import JmlGeoError
from jmlnet_geo.models.bands import adapt_first_conv, first_conv_replaced
from jmlnet_geo.models.state_dict import (
    WEIGHTS_INFO_ATTR,
    LoadReport,
    WeightsInfo,
    describe_weights,
    load_best_matching,
    load_fully,
    load_matching,
    weights_info,
)
from jmlnet_geo.models.weights import (
    DEFAULT,
    ENCODER_NAME,
    LITE0_FILE,
    LITE0_PACKAGE,
    LITE0_SOURCE,
    efficientnet_lite0_state_dict,
    efficientnet_lite0_weights_path,
    hub_cache_file,
    hub_state_dict,
    is_weights_path,
    load_state_dict_file,
    weights_kind,
)

__all__ = [
    "DEFAULT",
    "ENCODER_NAME",
    "LITE0_FILE",
    "LITE0_PACKAGE",
    "LITE0_SOURCE",
    "PRESETS",
    "WEIGHTS_INFO_ATTR",
    "LoadReport",
    "WeightsInfo",
    "adapt_first_conv",
    "check_preset",
    "check_sizes",
    "describe_weights",
    "efficientnet_lite0_state_dict",
    "efficientnet_lite0_weights_path",
    "first_conv_replaced",
    "hub_cache_file",
    "hub_state_dict",
    "is_weights_path",
    "load_best_matching",
    "load_fully",
    "load_matching",
    "load_state_dict_file",
    "weights_info",
    "weights_kind",
]


def check_preset(preset: str) -> str:
    """Return ``preset`` if it is one of :data:`~jmlnet_geo.config.PRESETS`.

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
