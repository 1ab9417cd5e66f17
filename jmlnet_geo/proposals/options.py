"""Options and method names of the per-box proposals, without the libraries that run them.

Importing this module loads neither cv2 nor pydensecrf (nor rasterio), so ``jmlgeo --help`` can
show the library's defaults (``cli/proposals.py`` takes its option defaults from here).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["CLASSIC_METHODS", "DETECTOR_METHODS", "CRFOptions", "GrabCutOptions", "ProposalOptions"]

#: Methods that need nothing but the boxes and the image, in the paper's order.
CLASSIC_METHODS = ("box", "crf", "grabcut")
#: Methods that need a trained detector too (:mod:`jmlnet_geo.proposals.detector_proposals`).
DETECTOR_METHODS = ("detcam", "camcut")


@dataclass(frozen=True)
class GrabCutOptions:
    """Options of the GrabCut proposal.

    Attributes:
        iterations: GrabCut iterations (EM rounds of the colour models and graph cut).
    """

    iterations: int = 5


@dataclass(frozen=True)
class CRFOptions:
    """Options of the dense CRF proposal (names follow pydensecrf).

    Attributes:
        fg_prob: Probability of the box's class inside the box, before inference.
        outside_fg_prob: Probability of the class outside the box and on nodata (near 0).
        gaussian_sxy: Width (px) of the smoothness kernel.
        gaussian_compat: Weight of the smoothness kernel.
        bilateral_sxy: Spatial width (px) of the appearance kernel.
        bilateral_srgb: Colour width (0-255 levels) of the appearance kernel.
        bilateral_compat: Weight of the appearance kernel.
        iterations: Mean-field iterations.
    """

    fg_prob: float = 0.6
    outside_fg_prob: float = 0.001
    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 20.0
    bilateral_srgb: float = 13.0
    bilateral_compat: float = 10.0
    iterations: int = 10


@dataclass(frozen=True)
class ProposalOptions:
    """Settings shared by the per-box methods.

    Attributes:
        margin: Context around each box, as a fraction of its larger side.
        min_margin: Context of at least this many pixels.
        max_side: Crops with a longer side are processed shrunk to this many pixels.
        min_fraction: A mask covering less of its box than this is degenerate (falls back).
        picture_bands: 0-based bands shown to GrabCut/CRF as R, G, B (default: the first three).
        grabcut: GrabCut options.
        crf: Dense CRF options.
    """

    margin: float = 0.5
    min_margin: int = 16
    max_side: int = 512
    min_fraction: float = 0.01
    picture_bands: tuple[int, int, int] | None = None
    grabcut: GrabCutOptions = field(default_factory=GrabCutOptions)
    crf: CRFOptions = field(default_factory=CRFOptions)
