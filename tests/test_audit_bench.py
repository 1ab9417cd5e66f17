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
