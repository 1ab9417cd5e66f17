"""Corruption protocol of issue 20 (``jmlgeo audit``): corrupt a clean box layer, score the audit.

With a fixed seed, 5 % of the boxes get another class, 5 % are shifted by half their size, 5 %
are enlarged by 50 % per side and 5 % are deleted (disjoint sets). The audit's doubt is then
scored per corruption: ROC AUC (corrupted vs clean boxes) and the precision of the top 5 % /
10 %; deleted boxes: recall of ``missing`` at its precision.

State: the corruption and the metrics are here; the runner over NWPU / iSAID and the section
written into BENCHMARKS.md (bench/report.py ``update_section``) are not written yet.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import shapely

KINDS = ("class", "shift", "enlarge", "delete")


def corrupt(frame: gpd.GeoDataFrame, class_field: str, share: float = 0.05, seed: int = 0):
    """A corrupted copy of a box layer and the corruption of each kept row.

    Returns:
        (corrupted frame without the deleted rows, with column ``corruption`` ("" when clean),
        the deleted rows).
    """
    rng = np.random.default_rng(seed)
    n = len(frame)
    k = int(round(share * n))
    order = rng.permutation(n)
    kind = np.array([""] * n, dtype=object)
    for i, name in enumerate(KINDS):
        kind[order[i * k : (i + 1) * k]] = name
    out = frame.copy()
    names = sorted(set(out[class_field].astype(str)))
    geoms = list(out.geometry)
    for row in np.flatnonzero(kind == "class"):
        others = [c for c in names if c != str(out[class_field].iloc[row])]
        if others:
            out.iloc[row, out.columns.get_loc(class_field)] = others[rng.integers(len(others))]
    for row in np.flatnonzero((kind == "shift") | (kind == "enlarge")):
        x0, y0, x1, y1 = geoms[row].bounds
        w, h = x1 - x0, y1 - y0
        if kind[row] == "shift":
            sx, sy = rng.choice([-1, 1], 2)
            geoms[row] = shapely.box(x0 + sx * w / 2, y0 + sy * h / 2, x1 + sx * w / 2,
                                     y1 + sy * h / 2)  # fmt: skip
        else:
            geoms[row] = shapely.box(x0 - w / 2, y0 - h / 2, x1 + w / 2, y1 + h / 2)
    out = out.set_geometry(geoms)
    out["corruption"] = kind
    deleted = out[kind == "delete"]
    return out[kind != "delete"].reset_index(drop=True), deleted.reset_index(drop=True)


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC of ``scores`` for bool ``positive`` (ties count half); NaN without both kinds."""
    scores, positive = np.asarray(scores, float), np.asarray(positive, bool)
    pos, neg = scores[positive], scores[~positive]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def precision_at(scores: np.ndarray, positive: np.ndarray, share: float) -> float:
    """Share of corrupted boxes among the top ``share`` of the doubt ranking."""
    k = max(1, int(round(share * len(scores))))
    top = np.argsort(-np.asarray(scores, float), kind="stable")[:k]
    return float(np.asarray(positive, bool)[top].mean())
