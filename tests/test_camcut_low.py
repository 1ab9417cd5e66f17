"""CAMCut's ``low="probable"`` variant: the box's pixels below tau_low start as probable background."""

import cv2
import numpy as np
import pytest

from jmlnet_geo.proposals.camcut import CAMCutOptions, camcut_init, camcut_mask
from jmlnet_geo.proposals.crop import BoxCrop


def _crop():
    """A 60 x 60 crop: a bright disc (radius 11) in the box 15..45, grey around, nodata cols 0..2."""
    picture = np.full((60, 60, 3), 90, np.uint8)
    rr, cc = np.mgrid[:60, :60]
    disc = (rr - 30) ** 2 + (cc - 30) ** 2 <= 11**2
    picture[disc] = 220
    rng = np.random.default_rng(0)
    picture = np.clip(picture + rng.normal(0, 6, picture.shape), 0, 255).astype(np.uint8)
    valid = np.ones((60, 60), bool)
    valid[:, :3] = False
    return BoxCrop(picture, valid, (15, 15, 45, 45), (30, 30), 1.0), disc


def test_probable_low_changes_only_the_box_pixels_below_tau_low():
    crop, _ = _crop()
    heat = np.zeros((30, 30), np.float32)
    heat[5:25, 5:25] = 0.5
    heat[12:18, 12:18] = 0.9
    sure = camcut_init(crop, heat, 0.15, 0.8)
    np.testing.assert_array_equal(sure, camcut_init(crop, heat, 0.15, 0.8, "sure"))
    probable = camcut_init(crop, heat, 0.15, 0.8, "probable")
    changed = sure != probable
    below = np.zeros((60, 60), bool)
    below[15:45, 15:45] = heat <= 0.15
    np.testing.assert_array_equal(changed, below)
    assert (probable[below] == cv2.GC_PR_BGD).all() and (sure[below] == cv2.GC_BGD).all()
    with pytest.raises(ValueError, match="sure, probable"):
        camcut_init(crop, heat, 0.15, 0.8, "maybe")


def test_probable_low_recovers_what_a_weak_detcam_missed():
    crop, disc = _crop()
    heat = np.zeros((30, 30), np.float32)
    heat[:, :15] = 0.5  # DetCAM fires on the left half of the box only
    heat[12:18, 10:14] = 0.9
    disc_in_box = disc[15:45, 15:45]
    sure = camcut_mask(crop, heat, 0.15, 0.8)
    probable = camcut_mask(crop, heat, 0.15, 0.8, CAMCutOptions(low="probable"))
    right = np.zeros((30, 30), bool)
    right[:, 15:] = True
    assert not sure[right].any()  # sure background: the right half can never come back
    assert (probable & disc_in_box & right).sum() > 0.8 * (disc_in_box & right).sum()
    assert probable[~disc_in_box].mean() < 0.2
