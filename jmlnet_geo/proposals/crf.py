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

import numpy as np
import pydensecrf.densecrf as dcrf

from jmlnet_geo.proposals.crop import BoxCrop
from jmlnet_geo.proposals.options import CRFOptions


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
