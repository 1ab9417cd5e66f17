"""Dense CRF proposals: a fully connected CRF over the crop, with a unary from the box.

Two labels per box, background and the box's class. Unary: inside the box the class has
probability ``fg_prob`` (a weak "probably the object"); outside the box and on nodata it is
background with probability ``1 - outside_fg_prob`` (the object cannot leave its box). Pairwise:
a Gaussian (smoothness) kernel and a bilateral (appearance) kernel, as in Krähenbühl & Koltun
(2011). Mean-field inference is deterministic.

Kernel widths are in pixels of the crop that the CRF sees; crops are at most ``max_side`` pixels
(see :mod:`jmlnet_geo.proposals.crop`), so the defaults suit boxes of any size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pydensecrf.densecrf as dcrf

from jmlnet_geo.proposals.crop import BoxCrop


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


def crf_mask(crop: BoxCrop, options: CRFOptions = CRFOptions()) -> np.ndarray | None:
    """Foreground of one box by a dense CRF.

    Args:
        crop: The box and its context (:func:`jmlnet_geo.proposals.crop.read_crop`).
        options: CRF options.

    Returns:
        bool (box rows, box cols) at the crop's scale: True on the object; None when the box
        has no valid pixel.
    """
    height, width = crop.valid.shape
    c0, r0, c1, r1 = crop.box
    fg = np.full((height, width), options.outside_fg_prob, np.float32)
    fg[r0:r1, c0:c1] = options.fg_prob
    fg[~crop.valid] = options.outside_fg_prob
    if not (fg > options.outside_fg_prob).any():
        return None
    probs = np.stack([1.0 - fg, fg]).reshape(2, -1)
    crf = dcrf.DenseCRF2D(width, height, 2)
    crf.setUnaryEnergy(np.ascontiguousarray(-np.log(probs), dtype=np.float32))
    crf.addPairwiseGaussian(sxy=options.gaussian_sxy, compat=options.gaussian_compat)
    crf.addPairwiseBilateral(
        sxy=options.bilateral_sxy,
        srgb=options.bilateral_srgb,
        rgbim=crop.picture,
        compat=options.bilateral_compat,
    )
    q = np.asarray(crf.inference(options.iterations)).reshape(2, height, width)
    return crop.box_region(q[1] > q[0])
