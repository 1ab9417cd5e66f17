"""Model factories for the two presets: the DeepLab v3 segmenter and the Faster R-CNN detector.

``build_segmenter`` and ``build_detector`` build a model for any number of bands and load
pretrained weights when they are on this machine. The submodules, by job:

- :mod:`~jmlnet_geo.models.segmenter`, :mod:`~jmlnet_geo.models.detector`: the factories;
- :mod:`~jmlnet_geo.models.weights`: offline pretrained weights (the packaged EfficientNet-Lite0,
  the torch hub cache, local files);
- :mod:`~jmlnet_geo.models.bands`: the first convolution for bands other than RGB;
- :mod:`~jmlnet_geo.models.state_dict`: tensors matched into a model and the record of what was
  loaded;
- :mod:`~jmlnet_geo.models.backbones`: the factories' argument checks, and the helpers above
  re-exported under their former home.

Nothing here downloads. This ``__init__`` stays light: the names of ``__all__`` are imported on
first use (PEP 562), so ``import jmlnet_geo.models`` loads neither torch nor timm.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jmlnet_geo.lazy import lazy_exports

if TYPE_CHECKING:
    from jmlnet_geo.models.bands import adapt_first_conv
    from jmlnet_geo.models.detector import TileTransform, box_head_feature_layer, build_detector
    from jmlnet_geo.models.segmenter import build_segmenter, first_conv
    from jmlnet_geo.models.state_dict import WeightsInfo, describe_weights, weights_info
    from jmlnet_geo.models.weights import efficientnet_lite0_state_dict, load_state_dict_file

#: Public name -> the submodule that defines it.
_EXPORTS = {
    "build_segmenter": "segmenter",
    "first_conv": "segmenter",
    "build_detector": "detector",
    "TileTransform": "detector",
    "box_head_feature_layer": "detector",
    "adapt_first_conv": "bands",
    "WeightsInfo": "state_dict",
    "describe_weights": "state_dict",
    "weights_info": "state_dict",
    "efficientnet_lite0_state_dict": "weights",
    "load_state_dict_file": "weights",
}

__all__ = [
    "TileTransform",
    "WeightsInfo",
    "adapt_first_conv",
    "box_head_feature_layer",
    "build_detector",
    "build_segmenter",
    "describe_weights",
    "efficientnet_lite0_state_dict",
    "first_conv",
    "load_state_dict_file",
    "weights_info",
]


__getattr__ = lazy_exports(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
