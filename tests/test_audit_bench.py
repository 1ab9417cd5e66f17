"""The corruption protocol of bench/audit.py."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely

from bench.audit import corrupt, precision_at, roc_auc


def test_corruption_is_seeded_disjoint_and_does_what_it_says():
    boxes = [shapely.box(i * 10, 0, i * 10 + 4, 2) for i in range(100)]
    frame = gpd.GeoDataFrame({"class": ["a", "b"] * 50}, geometry=boxes)
    out, deleted = corrupt(frame, "class", 0.05, seed=1)
    again, _ = corrupt(frame, "class", 0.05, seed=1)
    assert len(out) == 95 and len(deleted) == 5 and out.equals(again)
    assert (out["corruption"].value_counts()[["class", "shift", "enlarge"]] == 5).all()
    for _, row in out[out["corruption"] == "enlarge"].iterrows():
        x0, y0, x1, y1 = row.geometry.bounds
        assert (x1 - x0, y1 - y0) == pytest.approx((8, 4))


def test_auc_and_precision_by_hand():
    positive = np.array([True, False, False, True])
    assert roc_auc(np.array([0.9, 0.1, 0.2, 0.8]), positive) == 1.0
    assert roc_auc(np.array([0.5, 0.5, 0.5, 0.5]), positive) == 0.5
    assert precision_at(np.array([0.9, 0.1, 0.95, 0.8]), positive, 0.5) == 0.5


def test_scores_missing_recall_and_the_table():
    from bench.audit import audit_scores, table

    boxes = gpd.GeoDataFrame(
        {"doubt": [0.9, 0.8, 0.1, 0.2, np.nan], "corruption": ["class", "shift", "", "", ""]},
        geometry=[shapely.box(i, 0, i + 1, 1) for i in range(5)],
    )
    deleted = gpd.GeoDataFrame({"image": ["a.png", "a.png"]},
                               geometry=[shapely.box(10, 0, 12, 2), shapely.box(20, 0, 22, 2)])  # fmt: skip
    missing = gpd.GeoDataFrame({"image": ["a.png", "b.png", "a.png"]},
                               geometry=[shapely.box(10, 0, 12, 2.2), shapely.box(20, 0, 22, 2),
                                         shapely.box(40, 0, 41, 1)])  # fmt: skip
    scores = audit_scores(boxes, missing, deleted)
    assert scores["auc_class"] == 1.0 and scores["auc_shift"] == 1.0
    assert scores["p5"] == 1.0 and scores["recall"] == 0.5  # the second is on another image
    assert scores["precision"] == pytest.approx(1 / 3) and scores["candidates"] == 3
    text = table({"x": scores})
    assert "100.0 (met)" in text and "50.0 / 33.3 (3 cand.; missed)" in text
    assert (
        audit_scores(boxes, None, deleted)["recall"] != audit_scores(boxes, None, deleted)["recall"]
    )


def test_payoff_over_training_seeds():
    from bench.audit import payoff, recovered

    assert recovered(30.0, 31.0, 32.0) == pytest.approx(0.5)
    assert recovered(30.0, 29.0, 32.0) == pytest.approx(-0.5)
    assert np.isnan(recovered(32.0, 33.0, 31.0))  # the clean layer scores lower: no loss
    row = {"train_seeds": [1, 0], "recovered": 0.25, "recovered_model": 0.6,
           "miou_dropped_model": 0.33}  # fmt: skip
    for name, seeds in (("corrupted", [0.30, 0.32]), ("clean", [0.34, 0.36]),
                        ("dropped", [0.31, 0.33])):  # fmt: skip
        row[f"miou_{name}_seeds"], row[f"miou_{name}"] = seeds, float(np.mean(seeds))
    text = payoff({"p": row})
    assert "| p | 1, 0 | 31.0 (30.0, 32.0) | 35.0 (34.0, 36.0) | 32.0 (31.0, 33.0) |" in text
    assert "25.0 (missed)" in text and "| 33.0 | 60.0 (met) |" in text
