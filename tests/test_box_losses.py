"""Box-consistency loss (after BoxInst) against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from jmlnet_geo.box_losses import (
    NEIGHBOURS,
    box_consistency_loss,
    box_pairwise_loss,
    box_projection_loss,
    colour_similarity,
    lab_colours,
)


def _probs(foreground: torch.Tensor) -> torch.Tensor:
    """(1, 2, H, W) probabilities: background 1 - fg, class 1 fg."""
    fg = foreground.double()
    return torch.stack([1 - fg, fg])[None]


BOX = [torch.tensor([[2.0, 2.0, 5.0, 6.0]])]  # columns 2..4, rows 2..5 of an 8 x 8 tile
CLASS = [torch.tensor([1])]


def test_a_box_its_class_fills_exactly_scores_zero():
    fg = torch.zeros(8, 8)
    fg[2:6, 2:5] = 1
    assert box_projection_loss(_probs(fg), BOX, CLASS).item() == pytest.approx(0, abs=1e-5)


def test_an_empty_box_scores_the_maximum():
    loss = box_projection_loss(_probs(torch.zeros(8, 8)), BOX, CLASS)
    assert loss.item() == pytest.approx(2.0, abs=1e-5)  # Dice 1 on each axis


def test_projection_by_hand_with_the_margin_window():
    # window: 3 columns + ceil(1.5) = 2 each side = columns 0..6; 4 rows + 2 each side, clipped
    # to the tile = rows 0..7. With p = 0.5 everywhere, each projection is 0.5 over its window.
    loss = box_projection_loss(_probs(torch.full((8, 8), 0.5)), BOX, CLASS)
    x = 1 - 2 * (0.5 * 3) / (7 * 0.25 + 3)
    y = 1 - 2 * (0.5 * 4) / (8 * 0.25 + 4)
    assert loss.item() == pytest.approx(x + y, rel=1e-4)
    # the class spilling beside the box costs along x only
    fg = torch.zeros(8, 8)
    fg[2:6, 2:6] = 1  # one column too many
    spill = box_projection_loss(_probs(fg), BOX, CLASS)
    assert spill.item() == pytest.approx(1 - 2 * 3 / (4 + 3), rel=1e-4)


def test_projection_without_margin_scores_inside_the_box_only():
    # margin 0: the window is the box; p = 0.5 over it gives Dice 1 - 2 (0.5 n) / (0.25 n + n)
    loss = box_projection_loss(_probs(torch.full((8, 8), 0.5)), BOX, CLASS, margin=0.0)
    assert loss.item() == pytest.approx(2 * (1 - 1 / 1.25), rel=1e-4)
    # the class beside the box costs nothing: a same-class neighbour is not pushed to 0
    fg = torch.zeros(8, 8)
    fg[2:6, 2:8] = 1
    assert box_projection_loss(_probs(fg), BOX, CLASS, margin=0.0).item() == pytest.approx(
        0, abs=1e-5
    )
    # with the margin it does: columns 0..6 hold 5 of it against the box's 3: 1 - 2 * 3 / (5 + 3)
    assert box_projection_loss(_probs(fg), BOX, CLASS).item() == pytest.approx(0.25, rel=1e-4)


def test_projection_can_skip_same_class_neighbours_in_the_margin():
    # two boxes of class 1 side by side (columns 2..4 and 5..7), their class filling both:
    # each box's margin holds 2 columns of the other's object (Dice 1 - 2 * 3 / (5 + 3))
    fg = torch.zeros(8, 8)
    fg[2:6, 2:8] = 1
    pair = [torch.tensor([[2.0, 2.0, 5.0, 6.0], [5.0, 2.0, 8.0, 6.0]])]
    ones = [torch.tensor([1, 1])]
    assert box_projection_loss(_probs(fg), pair, ones).item() == pytest.approx(0.25, rel=1e-4)
    skipped = box_projection_loss(_probs(fg), pair, ones, skip_neighbours=True)
    assert skipped.item() == pytest.approx(0, abs=1e-5)
    # a neighbour of another class is no excuse: class 1 inside it still scores against 0
    three = torch.cat([_probs(fg), torch.zeros(1, 1, 8, 8, dtype=torch.double)], dim=1)
    mixed = box_projection_loss(three, pair, [torch.tensor([1, 2])], skip_neighbours=True)
    # box 1 as above (0.25); box 2 (class 2 absent): Dice 1 on both axes
    assert mixed.item() == pytest.approx((0.25 + 2) / 2, rel=1e-4)
    # only the neighbour's pixels are skipped: class 1 in the margin outside both boxes counts
    fg[2:6, 0:2] = 1  # columns 0..1 beside box 1: 2 more columns against its 3
    alone = box_projection_loss(_probs(fg), [pair[0][:1]], [ones[0][:1]])
    both = box_projection_loss(_probs(fg), pair, ones, skip_neighbours=True)
    assert alone.item() == pytest.approx(1 - 2 * 3 / (7 + 3), rel=1e-4)
    assert both.item() == pytest.approx((1 - 2 * 3 / (5 + 3) + 0) / 2, rel=1e-4)


def test_projection_means_over_boxes_and_skips_empty_ones():
    fg = torch.zeros(8, 8)
    fg[2:6, 2:5] = 1
    probs = torch.cat([_probs(fg), _probs(torch.zeros(8, 8))])
    boxes = [BOX[0], torch.cat([BOX[0], torch.tensor([[3.0, 3.0, 3.2, 3.2]])])]
    labels = [CLASS[0], torch.tensor([1, 1])]  # the 0.2-pixel box holds no pixel centre
    assert box_projection_loss(probs, boxes, labels).item() == pytest.approx(1.0, abs=1e-5)
    nothing = box_projection_loss(
        probs.requires_grad_(), [torch.zeros(0, 4)] * 2, [CLASS[0][:0]] * 2
    )
    assert nothing.item() == 0 and nothing.requires_grad


def test_pairwise_by_hand():
    # one row of 3 pixels: with dilation 2, pixel 0 and pixel 2 are neighbours (both ways)
    probs = torch.tensor([[0.2, 0.5, 0.6], [0.8, 0.5, 0.4]], dtype=torch.float64)[None, :, None]
    lab = torch.tensor([[50.0, 0, 51.0], [0, 0, 0], [0, 0, 0]], dtype=torch.float64)[None, :, None]
    similarity = colour_similarity(lab)
    assert similarity.shape == (1, len(NEIGHBOURS), 1, 3) == (1, 8, 1, 3)
    right = NEIGHBOURS.index((0, 2))
    assert similarity[0, right, 0, 0].item() == pytest.approx(math.exp(-0.5))
    assert similarity[0, right, 0, 1:].eq(0).all()  # neighbour off the tile
    inside = torch.ones(1, 1, 3, dtype=torch.bool)
    loss = box_pairwise_loss(probs, similarity, inside)
    assert loss.item() == pytest.approx(-math.log(0.2 * 0.6 + 0.8 * 0.4))
    # a pair of unlike colours (exp(-10 / 2) < 0.3) or with a pixel outside the boxes: no pair
    lab[0, 0, 0, 2] = 60.0
    assert box_pairwise_loss(probs, colour_similarity(lab), inside).item() == 0
    outside = torch.tensor([[[True, True, False]]])
    assert box_pairwise_loss(probs, similarity, outside).item() == 0


def test_lab_colours_of_known_colours():
    rgb = torch.tensor([[255.0, 0, 255, 0], [255, 0, 0, 0], [255, 0, 0, 0]])[None, :, None]
    lab = lab_colours(rgb)[0, :, 0]  # white, black, red, black
    assert lab[:, 0].tolist() == pytest.approx([100, 0, 0], abs=0.05)
    assert lab[:, 1].tolist() == pytest.approx([0, 0, 0], abs=0.05)
    assert lab[:, 2].tolist() == pytest.approx([53.24, 80.09, 67.20], abs=0.05)
    grey = lab_colours(torch.tensor([[[[255.0, 0]]]]))  # one band: L only
    assert grey[0, :, 0, 0].tolist() == pytest.approx([100, 0, 0], abs=0.05)
    wide = lab_colours(rgb * 8)  # uint16-like values: scaled by the tile's largest valid one
    assert torch.allclose(wide, lab_colours(rgb), atol=1e-3)
    # nodata left out of the scale
    with_nodata = torch.cat([rgb, torch.full((1, 3, 1, 1), 60000.0)], dim=-1)
    valid = torch.tensor([[[True, True, True, True, False]]])
    assert torch.allclose(lab_colours(with_nodata, valid)[..., :4], lab_colours(rgb), atol=1e-3)


def test_consistency_is_the_sum_of_its_terms_and_backpropagates():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    boxes = [BOX[0], torch.zeros(0, 4)]
    labels = [torch.tensor([2]), torch.zeros(0, dtype=torch.int64)]
    box_mask = torch.zeros(2, 8, 8, dtype=torch.bool)
    box_mask[0, 2:6, 2:5] = True
    valid = torch.ones(2, 8, 8, dtype=torch.bool)
    valid[1, :, :2] = False
    lab = torch.rand(2, 3, 8, 8, dtype=torch.float64) * 3
    similarity = colour_similarity(lab)
    loss = box_consistency_loss(logits, boxes, labels, box_mask, similarity, valid)
    probs = logits.softmax(1)
    outside = ~box_mask & valid
    expected = (
        box_projection_loss(probs, boxes, labels)
        + box_pairwise_loss(probs, similarity, box_mask)
        - logits.log_softmax(1)[:, 0][outside].mean()
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-9)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    # the pairwise term scaled by its weight; at 0 it is not computed (no similarity needed)
    half = box_consistency_loss(logits, boxes, labels, box_mask, similarity, valid, 0.5)
    pairwise = box_pairwise_loss(probs, similarity, box_mask).item()
    assert half.item() == pytest.approx(expected.item() - 0.5 * pairwise, rel=1e-9)
    none = box_consistency_loss(logits, boxes, labels, box_mask, None, valid, 0.0)
    assert none.item() == pytest.approx(expected.item() - pairwise, rel=1e-9)
    inside = box_consistency_loss(logits, boxes, labels, box_mask, None, valid, 0.0, 0.0)
    margin = box_projection_loss(probs, boxes, labels, 0.0) - box_projection_loss(
        probs, boxes, labels
    )
    assert inside.item() == pytest.approx(none.item() + margin.item(), rel=1e-9)
    # the outside term scaled by its weight; at 0 only the projection (and pairwise) remain
    background = -logits.log_softmax(1)[:, 0][outside].mean().item()
    kw = {"pairwise_weight": 0.0, "outside_weight": 0.25}
    quarter = box_consistency_loss(logits, boxes, labels, box_mask, None, valid, **kw)
    assert quarter.item() == pytest.approx(none.item() - 0.75 * background, rel=1e-9)
    kw["outside_weight"] = 0.0
    alone = box_consistency_loss(logits, boxes, labels, box_mask, None, valid, **kw)
    assert alone.item() == pytest.approx(box_projection_loss(probs, boxes, labels).item(), 1e-9)
    with pytest.raises(ValueError, match="do not match"):
        box_consistency_loss(logits, boxes, labels, box_mask[:, :4], similarity, valid)


def test_outside_term_on_hard_negatives_by_hand():
    # one tile of 1 x 4 pixels, no box: every valid pixel is outside; 2 classes
    logits = torch.tensor([[[[2.0, 0.0, -1.0, 0.5]], [[0.0, 1.0, 1.0, 0.5]]]], requires_grad=True)
    no_box, valid = torch.zeros(1, 1, 4, dtype=torch.bool), torch.ones(1, 1, 4, dtype=torch.bool)
    valid[0, 0, 3] = False  # nodata: neither scored nor counted

    def ce_background(a, b):  # -log p(background) of logits (a, b)
        return -(a - math.log(math.exp(a) + math.exp(b)))

    kw = {"pairwise_weight": 0.0}
    nothing = ([torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.int64)])
    every = box_consistency_loss(logits, *nothing, no_box, None, valid, **kw)
    hard = box_consistency_loss(logits, *nothing, no_box, None, valid, **kw, outside_hard=True)
    terms = [ce_background(2, 0), ce_background(0, 1), ce_background(-1, 1)]
    assert every.item() == pytest.approx(sum(terms) / 3, rel=1e-6)
    # pixel 0 is called background (2 > 0): left out of the sum, not of the count
    assert hard.item() == pytest.approx((terms[1] + terms[2]) / 3, rel=1e-6)
    hard.backward()
    assert logits.grad[0, :, 0, 0].abs().sum() == 0 and logits.grad[0, :, 0, 1:3].abs().sum() > 0


def test_box_loss_weight_trains_end_to_end_and_enters_the_fingerprints(jmlgeo, tmp_path):
    import csv

    import numpy as np
    from conftest import pixel_box, write_boxes, write_scene

    data = np.random.default_rng(0).integers(0, 255, (3, 96, 96)).astype(np.uint8)
    scene = write_scene(tmp_path / "s.tif", data)
    boxes = write_boxes(
        tmp_path / "b.gpkg", [pixel_box(10, 10, 40, 30), pixel_box(50, 60, 80, 90)], ["a", "b"]
    )
    out = tmp_path / "run"
    args = ["train", scene, "--boxes", boxes, "--out", out, "--tile-size", "64"]
    args += ["--batch-size", "2", "--loader-workers", "0", "--workers", "1", "--progress"]
    args += ["none", "--stage1-steps", "2", "--stage2-steps", "1", "--proposals", "grabcut"]
    first = jmlgeo(*args, "--box-loss-weight", "1", "--box-pairwise-weight", "1")  # BoxInst's
    assert first.code == 0, first.err
    with open(out / "logs" / "stage1" / "metrics.csv", newline="") as f:
        losses = [float(r["train_loss"]) for r in csv.DictReader(f) if r.get("train_loss")]
    assert losses and all(math.isfinite(v) for v in losses)
    off = jmlgeo(*args, "--box-loss-weight", "0", "--resume")  # both stages again
    assert off.code == 0, off.err
    reused = off.err.split("reused finished stages:")[1].splitlines()[0]
    assert "proposals:grabcut" in reused and "stage1" not in reused and "stage2" not in reused
    # the pairwise weight means nothing without the box loss: the same stages
    again = jmlgeo(*args, "--box-loss-weight", "0", "--box-pairwise-weight", "1", "--resume")
    assert again.code == 0, again.err
    reused = again.err.split("reused finished stages:")[1].splitlines()[0]
    assert "stage1" in reused and "stage2" in reused
    # the fast preset's default, projection without pairwise, is another stage 1
    projection = jmlgeo(*args, "--resume")
    assert projection.code == 0, projection.err
    reused = projection.err.split("reused finished stages:")[1].splitlines()[0]
    assert "stage1" not in reused and "stage2" not in reused
    # the margin's default (0.5) is that same run; another margin is another stage 1
    same = jmlgeo(*args, "--box-margin", "0.5", "--resume")
    reused = same.err.split("reused finished stages:")[1].splitlines()[0]
    assert same.code == 0 and "stage1" in reused and "stage2" in reused
    inside = jmlgeo(*args, "--box-margin", "0", "--resume")
    reused = inside.err.split("reused finished stages:")[1].splitlines()[0]
    assert inside.code == 0 and "stage1" not in reused and "stage2" not in reused
    # so is a window that skips same-class neighbours
    skip = jmlgeo(*args, "--box-skip-neighbours", "--resume")
    reused = skip.err.split("reused finished stages:")[1].splitlines()[0]
    assert skip.code == 0 and "stage1" not in reused and "stage2" not in reused
    # and one without the background term outside the boxes
    alone = jmlgeo(*args, "--box-outside-weight", "0", "--resume")
    reused = alone.err.split("reused finished stages:")[1].splitlines()[0]
    assert alone.code == 0 and "stage1" not in reused and "stage2" not in reused
    # without the outside term, which pixels it would score means nothing: the same stages
    off = jmlgeo(*args, "--box-outside-weight", "0", "--box-outside-hard", "--resume")
    reused = off.err.split("reused finished stages:")[1].splitlines()[0]
    assert off.code == 0 and "stage1" in reused and "stage2" in reused
    # and one whose background term scores the hard negatives only
    hard = jmlgeo(*args, "--box-outside-hard", "--resume")
    reused = hard.err.split("reused finished stages:")[1].splitlines()[0]
    assert hard.code == 0 and "stage1" not in reused and "stage2" not in reused
