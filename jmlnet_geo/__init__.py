"""jmlnet_geo: pixel-accurate maps of georeferenced scenes trained from bounding boxes.

The method is JMLNet (Guo et al., 2020): noisy pseudo labels ("proposals") made from each box
train a DeepLab v3 with multi-label losses. This package root stays light: it imports neither
torch nor cv2, so ``import jmlnet_geo`` and ``jmlgeo --help`` are instant. Heavy modules
(``jmlnet_geo.tiling`` and everything that trains or predicts) import them when used.
"""

from jmlnet_geo.errors import JmlGeoError

__version__ = "0.1.0"

__all__ = ["JmlGeoError", "__version__"]
