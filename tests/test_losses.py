"""Losses (Eqs. 1-8) against values worked out by hand with math.log / math.exp."""

from __future__ import annotations

import math

import pytest
import torch

from jmlnet_geo.errors import JmlGeoError
from jmlnet_geo.losses import LOSSES, bmm, ce, ma, mm, multi_label_loss
from jmlnet_geo.vocabulary import IGNORE

X = IGNORE


def nll(row: list[float], c: int) -> float:
    """-log softmax(row)[c], by hand."""
    return math.log(sum(math.exp(v) for v in row)) - row[c]


def softmax(row: list[float]) -> list[float]:
    total = sum(math.exp(v) for v in row)
    return [math.exp(v) / total for v in row]


def make_logits(images: list[list[list[float]]], width: int) -> torch.Tensor:
    """(N, C, H, W) logits from, per image, a row-major list of per-pixel class vectors."""
    t = torch.tensor(images, dtype=torch.float64)  # (N, H*W, C)
    n, hw, c = t.shape
    return t.permute(0, 2, 1).reshape(n, c, hw // width, width).contiguous().requires_grad_(True)


def make_labels(images: list[list[list[int]]], width: int, dtype=torch.int64) -> torch.Tensor:
    """(N, Z, H, W) labels from, per image, per proposal, a row-major list of class ids."""
    t = torch.tensor(images, dtype=dtype)
    n, z, hw = t.shape
    return t.reshape(n, z, hw // width, width)


def make_mask(images: list[list[int]], width: int) -> torch.Tensor:
    t = torch.tensor(images, dtype=torch.bool)
    return t.reshape(t.shape[0], -1, width)


P = [
    [2.0, 0.0, -1.0],
    [0.0, 1.0, 0.0],
    [0.5, 0.5, 3.0],
    [-1.0, 2.0, 0.5],
    [0.3, -0.2, 1.0],
    [5.0, -5.0, 0.0],
]


def close(value: torch.Tensor, expected: float) -> None:
    assert value.ndim == 0
    assert value.item() == pytest.approx(expected, rel=1e-9, abs=1e-12)


# --- ce (Eq. 1) ---------------------------------------------------------------------------------


def test_ce_mean_over_non_ignored_pixels():
    logits = make_logits([P[:3]], width=3)
    labels = make_labels([[[0, 1, X]]], width=3)[:, 0]
    close(ce(logits, labels), (nll(P[0], 0) + nll(P[1], 1)) / 2)


def test_ce_pools_pixels_over_the_batch():
    logits = make_logits([P[:2], P[2:4]], width=2)
    labels = make_labels([[[0, X]], [[2, 1]]], width=2)[:, 0]
    close(ce(logits, labels), (nll(P[0], 0) + nll(P[2], 2) + nll(P[3], 1)) / 3)


def test_ce_gradient_is_softmax_minus_onehot_over_count():
    logits = make_logits([P[:3]], width=3)
    labels = make_labels([[[0, 1, X]]], width=3)[:, 0]
    ce(logits, labels).backward()
    grad = logits.grad[0, :, 0]  # (C, W)
    for pixel, label in ((0, 0), (1, 1)):
        expected = [(p - (c == label)) / 2 for c, p in enumerate(softmax(P[pixel]))]
        assert grad[:, pixel].tolist() == pytest.approx(expected, rel=1e-9)
    assert grad[:, 2].tolist() == [0.0, 0.0, 0.0]  # the ignored pixel gets nothing


def test_ce_accepts_uint8_labels():
    logits = make_logits([P[:3]], width=3)
    labels = make_labels([[[0, 1, X]]], width=3, dtype=torch.uint8)[:, 0]
    close(ce(logits, labels), (nll(P[0], 0) + nll(P[1], 1)) / 2)


# --- ma (Eq. 2) ---------------------------------------------------------------------------------


def test_ma_averages_per_proposal_means():
    logits = make_logits([P[:3]], width=3)
    labels = make_labels([[[0, 1, X], [1, 1, 2]]], width=3)
    ce0 = (nll(P[0], 0) + nll(P[1], 1)) / 2  # its own 2 labelled pixels
    ce1 = (nll(P[0], 1) + nll(P[1], 1) + nll(P[2], 2)) / 3
    close(ma(logits, labels), (ce0 + ce1) / 2)


def test_ma_leaves_out_a_proposal_without_labels():
    logits = make_logits([P[:3]], width=3)
    labels = make_labels([[[0, 1, X], [X, X, X]]], width=3)
    close(ma(logits, labels), (nll(P[0], 0) + nll(P[1], 1)) / 2)


# --- mm (Eq. 3) ---------------------------------------------------------------------------------


def test_mm_is_per_image_minimum_then_batch_mean():
    # Image 0 agrees with proposal 0, image 1 with proposal 1.
    logits = make_logits([[P[0], P[1]], [P[2], P[3]]], width=2)
    labels = make_labels([[[0, 1], [2, 2]], [[0, X], [2, 1]]], width=2)
    img0 = [(nll(P[0], 0) + nll(P[1], 1)) / 2, (nll(P[0], 2) + nll(P[1], 2)) / 2]
    img1 = [nll(P[2], 0), (nll(P[2], 2) + nll(P[3], 1)) / 2]  # z0 has 1 labelled pixel here
    assert img0[0] < img0[1] and img1[1] < img1[0]  # the two images choose different z
    close(mm(logits, labels), (min(img0) + min(img1)) / 2)
    # Not the batch-level choice: one z for the whole batch would give something else.
    batch_z = min(
        (nll(P[0], 0) + nll(P[1], 1) + nll(P[2], 0)) / 3,
        (nll(P[0], 2) + nll(P[1], 2) + nll(P[2], 2) + nll(P[3], 1)) / 4,
    )
    assert mm(logits, labels).item() != pytest.approx(batch_z)


def test_mm_gradient_only_from_the_chosen_proposal():
    logits = make_logits([[P[0], P[1]]], width=2)
    labels = make_labels([[[0, 1], [2, 2]]], width=2)
    mm(logits, labels).backward()
    expected = torch.zeros_like(logits)
    for pixel, label in ((0, 0), (1, 1)):
        for c, p in enumerate(softmax(P[pixel])):
            expected[0, c, 0, pixel] = (p - (c == label)) / 2
    torch.testing.assert_close(logits.grad, expected)


def test_mm_leaves_out_an_unlabelled_proposal_and_image():
    logits = make_logits([[P[0], P[1]], [P[2], P[3]]], width=2)
    labels = make_labels([[[0, 1], [X, X]], [[X, X], [X, X]]], width=2)
    # Image 0: the empty proposal is not a CE of 0; image 1: all ignored, not in the mean.
    close(mm(logits, labels), (nll(P[0], 0) + nll(P[1], 1)) / 2)


# --- bmm (Eqs. 4-8) -----------------------------------------------------------------------------


def test_bmm_partial_box_mask():
    logits = make_logits([P], width=3)  # 2 x 3 pixels
    box = make_mask([[1, 1, 1, 1, 0, 0]], width=3)
    labels = make_labels([[[0, 0, X, X, 2, X], [2, 1, 1, X, X, X]]], width=3)
    l_plus = (
        min(nll(P[0], 0), nll(P[0], 2))  # both proposals compete
        + min(nll(P[1], 0), nll(P[1], 1))  # z1 wins here
        + nll(P[2], 1)  # z0 ignored: not a 0 in the minimum
    ) / 3  # P[3] is ignored by every proposal: not in n+
    l_minus = nll(P[4], 0) / 1  # background, though z0 says 2; P[5] is nodata
    assert min(nll(P[1], 0), nll(P[1], 1)) == nll(P[1], 1)
    close(bmm(logits, labels, box), l_plus + l_minus)


def test_bmm_gradient_skips_ignored_pixels():
    logits = make_logits([P], width=3)
    box = make_mask([[1, 1, 1, 1, 0, 0]], width=3)
    labels = make_labels([[[0, 0, X, X, 2, X], [2, 1, 1, X, X, X]]], width=3)
    bmm(logits, labels, box).backward()
    grad = logits.grad[0].reshape(3, 6)
    assert torch.all(grad[:, 3] == 0) and torch.all(grad[:, 5] == 0)
    expected_p4 = [(p - (c == 0)) / 1 for c, p in enumerate(softmax(P[4]))]
    assert grad[:, 4].tolist() == pytest.approx(expected_p4, rel=1e-9)
    expected_p1 = [(p - (c == 1)) / 3 for c, p in enumerate(softmax(P[1]))]
    assert grad[:, 1].tolist() == pytest.approx(expected_p1, rel=1e-9)


def test_bmm_without_box_pixels_is_background_ce_only():
    logits = make_logits([P], width=3)
    box = make_mask([[0] * 6], width=3)
    labels = make_labels([[[0, 0, X, X, 2, X], [2, 1, 1, X, X, X]]], width=3)
    expected = (nll(P[0], 0) + nll(P[1], 0) + nll(P[2], 0) + nll(P[4], 0)) / 4
    close(bmm(logits, labels, box), expected)


def test_bmm_pools_pixels_over_the_batch():
    logits = make_logits([[P[0], P[1]], [P[2], P[4]]], width=2)
    box = make_mask([[1, 0], [1, 1]], width=2)
    labels = make_labels([[[1, 0]], [[2, X]]], width=2)  # Z = 1
    close(bmm(logits, labels, box), (nll(P[0], 1) + nll(P[2], 2)) / 2 + nll(P[1], 0))


# --- where the losses must agree ----------------------------------------------------------------


def test_one_proposal_ma_equals_mm_equals_ce():
    logits = make_logits([P[:4]], width=2)
    labels = make_labels([[[0, 2, X, 1]]], width=2)
    expected = (nll(P[0], 0) + nll(P[1], 2) + nll(P[3], 1)) / 3
    for fn in (ma, mm):
        close(fn(logits, labels), expected)
    close(ce(logits, labels[:, 0]), expected)


def test_identical_proposals_agree_in_value_and_gradient():
    labels = make_labels([[[0, 2, X, 1]] * 3, [[1, 1, 0, 2]] * 3], width=2)
    images = [P[:4], P[2:]]
    grads = []
    for fn in (lambda lo, la: ce(lo, la[:, 0]), ma, mm):
        logits = make_logits(images, width=2)
        loss = fn(logits, labels)
        loss.backward()
        grads.append((loss.item(), logits.grad))
    # ce pools 7 pixels, mm averages per-image means (3 and 4 pixels): equal only for ma vs ce.
    assert grads[1][0] == pytest.approx(grads[0][0])
    torch.testing.assert_close(grads[1][1], grads[0][1])
    img0 = (nll(P[0], 0) + nll(P[1], 2) + nll(P[3], 1)) / 3
    img1 = (nll(P[2], 1) + nll(P[3], 1) + nll(P[4], 0) + nll(P[5], 2)) / 4
    assert grads[2][0] == pytest.approx((img0 + img1) / 2)
    # Ties in the minimum share the gradient: same as mm on a single proposal.
    single = make_logits(images, width=2)
    mm(single, labels[:, :1]).backward()
    torch.testing.assert_close(grads[2][1], single.grad)


def test_bmm_with_everything_in_boxes_and_one_proposal_is_ce():
    logits = make_logits([P[:4]], width=2)
    labels = make_labels([[[0, 2, X, 1]]], width=2)
    box = make_mask([[1, 1, 1, 1]], width=2)
    close(bmm(logits, labels, box), ce(logits, labels[:, 0]).item())


def test_bmm_outside_boxes_is_ce_against_background():
    logits = make_logits([P[:4]], width=2)
    labels = make_labels([[[1, 2, X, 1], [X, X, X, 2]]], width=2)
    box = make_mask([[0, 0, 0, 0]], width=2)
    background = torch.tensor([[[0, 0], [X, 0]]])
    close(bmm(logits, labels, box), ce(logits, background).item())


# --- empty tiles --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ce", "ma", "mm", "bmm"])
def test_all_ignore_tile_is_zero_and_backward_works(name):
    logits = make_logits([P[:4]], width=2)
    labels = make_labels([[[X, X, X, X], [X, X, X, X]]], width=2)
    box = make_mask([[1, 1, 0, 0]], width=2)
    loss = multi_label_loss(name, logits, labels, box)
    assert loss.item() == 0.0
    assert loss.grad_fn is not None
    loss.backward()
    assert torch.all(logits.grad == 0)


@pytest.mark.parametrize("name", ["ce", "ma", "mm", "bmm"])
def test_gradient_flows(name):
    logits = make_logits([P[:4]], width=2)
    labels = make_labels([[[0, 1, 2, X], [1, 1, X, 0]]], width=2, dtype=torch.uint8)
    box = make_mask([[1, 1, 0, 0]], width=2)
    loss = multi_label_loss(name, logits, labels, box)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


# --- lookup -------------------------------------------------------------------------------------


def test_lookup_names_and_ce_uses_first_proposal():
    assert set(LOSSES) == {"ce", "ma", "mm", "bmm"}
    logits = make_logits([P[:3]], width=3)
    labels = make_labels([[[0, 1, X], [2, 2, 2]]], width=3)
    close(multi_label_loss("ce", logits, labels), (nll(P[0], 0) + nll(P[1], 1)) / 2)


def test_unknown_name_lists_valid_names():
    logits = make_logits([P[:3]], width=3)
    labels = make_labels([[[0, 1, X]]], width=3)
    with pytest.raises(JmlGeoError) as info:
        multi_label_loss("dice", logits, labels)
    message = str(info.value)
    assert "\n" not in message and "dice" in message
    assert all(name in message for name in ("ce", "ma", "mm", "bmm"))


def test_bmm_needs_box_mask_and_shapes_must_match():
    logits = make_logits([P[:3]], width=3)
    labels = make_labels([[[0, 1, X]]], width=3)
    with pytest.raises(ValueError, match="box_mask"):
        multi_label_loss("bmm", logits, labels)
    with pytest.raises(ValueError):
        ma(logits, labels[:, 0])
    with pytest.raises(ValueError):
        bmm(logits, labels, torch.ones(1, 1, 2, dtype=torch.bool))
