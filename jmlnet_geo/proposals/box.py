"""BOX proposals: the filled rectangle, the baseline every other method must beat."""

from __future__ import annotations

import numpy as np

from jmlnet_geo.proposals.crop import BoxCrop


def box_mask(crop: BoxCrop) -> np.ndarray:
    """All True, bool (box rows, box cols) at the crop's scale: the whole box is the object."""
    c0, r0, c1, r1 = crop.box
    return np.ones((r1 - r0, c1 - c0), bool)
