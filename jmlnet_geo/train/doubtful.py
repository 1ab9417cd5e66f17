"""``jmlgeo train --drop-doubtful FRACTION``: train without the most doubtful boxes.

After the proposal stage, every box is scored by the audit without a model
(:func:`jmlnet_geo.audit_run.score_scene` on the run's own proposal rasters, with the appearance
opinion of :mod:`jmlnet_geo.audit_appearance` over the scored scenes); the ``FRACTION`` most
doubtful features of the box layer are dropped (stage 1 trains without them). With
``drop_doubtful_by`` ``model`` (the default since 2026-12-07: its choice drops 83-97 % corrupted
boxes against 31-58 % in ``bench/audit.py``, and its maps scored higher at five of the six
part-and-seed pairs measured) the choice is made again after stage 1, over every box, by the audit
*with* the stage-1 model (its prediction of each training scene adds the class share, the other
class and the extent to each box's doubt, as ``jmlgeo audit --model``; stage
``drop_doubtful_model`` of ``run.json``); stage 1 is then trained again from scratch without the
second choice (stage ``stage1_again``) and stage 2 goes on from it, also without it. A dropped box
is *ignore*, not background: in every label layer the segmenter stages read, the pixels of its box
that no kept box covers are 255 (:class:`jmlnet_geo.tiling.SceneTiles`' ``ignore``); it is left out
of the boxes the stages see (box tiles, box-consistency loss, the model proposal), and no loss
scores those pixels (since 2026-12-07 the box-consistency loss leaves them out: its outside term
scored them as background, its projection term as not the class in a kept box's margin). Scenes
that train on true masks are neither scored nor painted.

The dropped features are listed in ``run.json`` (stage ``drop_doubtful``) and written to
``dropped_boxes.gpkg`` in the run folder: the input features with all their attributes (the
input's CRS), plus ``feature``, ``scene``, ``doubt`` and ``reason``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from jmlnet_geo.errors import OptionError
from jmlnet_geo.io.vector import SceneBoxes

if TYPE_CHECKING:
    from jmlnet_geo.tiling import IgnoreBoxes
    from jmlnet_geo.train.run_folder import RunFolder

#: How the stages treat the dropped boxes, in the fingerprint of the stages that train without
#: them: since 2026-12-07 the box-consistency loss leaves them out too (before, its outside and
#: projection terms scored them as background), so runs made before train those stages again.
IGNORED = "ignored-by-every-loss"
#: The run-folder stage and file of the dropped boxes.
STAGE = "drop_doubtful"
DROPPED_FILE = "dropped_boxes.gpkg"
#: Enters the stage's fingerprint: choices made before the appearance opinion are made again.
APPEARANCE = "appearance-1"
#: The run-folder stage of the second choice, by the stage-1 model (``drop_doubtful_by``).
MODEL_STAGE = "drop_doubtful_model"
#: ``drop_doubtful_by`` values: the audit without a model, or again with the stage-1 model.
BY_PROPOSALS, BY_MODEL = "proposals", "model"
BY = (BY_PROPOSALS, BY_MODEL)

#: ``predict(each)``: calls ``each(i, classes)`` with each scene's predicted class raster.
Predict = Callable[[Callable[[int, Path], None]], None]


def check_fraction(fraction: float) -> float:
    """``fraction`` when 0 <= fraction < 1.

    Raises:
        OptionError: Out of range (one line naming the option).
    """
    if not (isinstance(fraction, int | float) and 0 <= fraction < 1):
        raise OptionError(
            f"--drop-doubtful {fraction}: give a fraction of the boxes in [0, 1), e.g. 0.1 "
            "(0 keeps every box)"
        )
    return float(fraction)


@dataclass(frozen=True)
class Dropped:
    """One dropped feature of the box layer.

    Attributes:
        feature: Its 0-based row in the box layer file.
        scene: File name of the scene whose score dropped it (its largest doubt).
        doubt: Its doubt (0-1).
        reason: ``class?``, ``empty?`` or ``extent?`` (:mod:`jmlnet_geo.audit`).
    """

    feature: int
    scene: str
    doubt: float
    reason: str

    def as_dict(self) -> dict:
        """JSON-ready (``run.json``)."""
        return {"feature": self.feature, "scene": self.scene, "doubt": round(self.doubt, 6),
                "reason": self.reason}  # fmt: skip


def most_doubtful(
    scene_boxes: Sequence[SceneBoxes],
    folder: Path,
    methods: Sequence[str],
    fraction: float,
    skip_scenes: set[str] = frozenset(),
    say: Callable[[str], None] = lambda text: None,
    predict: Predict | None = None,
) -> list[Dropped]:
    """The ``round(fraction x features)`` most doubtful features, most doubtful first.

    Args:
        scene_boxes: Each scene with its boxes (scene pixels).
        folder: The run's proposal folder (``<stem>.<method>.tif``).
        methods: The proposals that score the boxes (at least one).
        fraction: Share of the scored features to drop, 0 <= fraction < 1.
        skip_scenes: Paths of scenes not scored (they train on true masks).
        say: Receives a one-line note (the appearance opinion skipped).
        predict: With a model: ``predict(each)`` calls ``each(i, classes)`` for every scene i
            of ``scene_boxes`` with its predicted class raster (scene grid); the model's
            opinion (class share, other class, extent) then enters each box's doubt.

    A feature on several scenes counts once, with its largest doubt; features nothing had an
    opinion on (NaN doubt) are never dropped.
    """
    from jmlnet_geo.audit import AuditOptions
    from jmlnet_geo.audit_appearance import scene_appearance
    from jmlnet_geo.audit_run import score_scene
    from jmlnet_geo.proposals.compose import proposal_path

    best: dict[int, Dropped] = {}
    order = [i for i, sb in enumerate(scene_boxes) if sb.scene.path not in skip_scenes and len(sb)]
    looks, _ = scene_appearance([scene_boxes[i] for i in order], AuditOptions(), say)
    look_of = dict(zip(order, looks, strict=True))

    def score(i: int, classes: Path | None) -> None:
        if i not in look_of:
            return
        sb = scene_boxes[i]
        paths = {m: proposal_path(folder, sb.scene, m) for m in methods}
        prediction = None if classes is None else (classes, None)
        rows = score_scene(sb, paths, prediction, looks=look_of[i]).rows
        for feature, row in zip(sb.features, rows, strict=True):
            value = float(row["doubt"])
            if math.isnan(value):
                continue
            seen = best.get(int(feature))
            if seen is None or value > seen.doubt:
                best[int(feature)] = Dropped(int(feature), sb.scene.name, value, row["reason"])

    if predict is None:
        for i in order:
            score(i, None)
    else:
        predict(score)
    features = {int(f) for sb in scene_boxes if sb.scene.path not in skip_scenes
                for f in sb.features}  # fmt: skip
    count = int(round(fraction * len(features)))
    ranked = sorted(best.values(), key=lambda d: (-d.doubt, d.feature))
    return ranked[:count]


def split_boxes(
    scene_boxes: Sequence[SceneBoxes], features: set[int], skip_scenes: set[str] = frozenset()
) -> tuple[list[SceneBoxes], list[IgnoreBoxes | None]]:
    """Each scene's kept boxes, and where its dropped ones become ignore (None: none dropped).

    Scenes in ``skip_scenes`` (paths; they train on true masks) keep all their boxes.
    """
    from jmlnet_geo.proposals.compose import pixel_boxes
    from jmlnet_geo.tiling import IgnoreBoxes

    kept_boxes, ignore = [], []
    for sb in scene_boxes:
        drop = np.isin(sb.features, sorted(features))
        if not drop.any() or sb.scene.path in skip_scenes:
            kept_boxes.append(sb)
            ignore.append(None)
            continue
        pixels = pixel_boxes(sb)
        kept = replace(sb, xyxy=sb.xyxy[~drop], class_ids=sb.class_ids[~drop],
                       features=sb.features[~drop])  # fmt: skip
        kept_boxes.append(kept)
        ignore.append(IgnoreBoxes(pixels[drop], pixels[~drop]))
    return kept_boxes, ignore


def write_dropped(path: Path, boxes: Path, dropped: Sequence[Dropped]) -> Path:
    """Write the dropped features (all their attributes, the input's CRS) to a GeoPackage."""
    import geopandas as gpd

    from jmlnet_geo.io.write import atomic_output

    frame = gpd.read_file(boxes)
    rows = [d.feature for d in dropped]
    out = frame.iloc[rows].copy()
    out["feature"] = rows
    out["scene"] = [d.scene for d in dropped]
    out["doubt"] = [d.doubt for d in dropped]
    out["reason"] = [d.reason for d in dropped]
    with atomic_output(path) as tmp:
        out.to_file(tmp, layer="dropped", driver="GPKG")
    return path


def drop_doubtful(
    run: RunFolder,
    scene_boxes: Sequence[SceneBoxes],
    methods: Sequence[str],
    method_fps: Sequence[str],
    mask_scenes: set[str],
    boxes: Path,
    fraction: float,
    say: Callable[[str], None],
    model: tuple[str, Predict] | None = None,
) -> tuple[list[SceneBoxes], list[IgnoreBoxes | None], str, dict]:
    """Stage ``drop_doubtful`` of a run: score the boxes on its proposals, drop the worst.

    Args:
        run: The run folder (its ``proposals/`` are made; ``run.json`` records the stage).
        scene_boxes: Each scene with its boxes (all of them, also for the second choice).
        methods: The run's proposal methods (the audit reads their rasters).
        method_fps: Their stages' fingerprints (a new proposal redoes the choice).
        mask_scenes: Paths of the scenes on true masks (not scored, not painted).
        boxes: The box layer file (its dropped features are copied to ``dropped_boxes.gpkg``).
        fraction: Share of the boxes to drop, 0 < fraction < 1.
        say: Receives a one-line note.
        model: For the second choice (stage ``drop_doubtful_model``, the boxes stage 2
            ignores): the fingerprint of the stage whose model predicts, and its ``predict``
            (:data:`Predict`); None: the first choice, by the proposals alone.

    Returns:
        (kept boxes per scene, ignore boxes per scene, the stage's fingerprint, its summary
        ``{"fraction", "methods", "boxes", "dropped", "by"}`` for the model card).

    Raises:
        OptionError: No proposal to score with (every scene on true masks).
    """
    from jmlnet_geo.train.fingerprint import fingerprint

    if not methods:
        raise OptionError(
            f"--drop-doubtful {fraction:g}: every scene trains on true masks, so no proposal "
            "scores the boxes; drop the option"
        )
    stage = STAGE if model is None else MODEL_STAGE
    fp = fingerprint(list(methods), list(method_fps), sorted(mask_scenes), fraction, stage,
                     APPEARANCE, *([model[0]] if model else []))  # fmt: skip
    path = run.path / DROPPED_FILE
    if run.reusable(stage, fp) and path.exists():
        dropped = [Dropped(**d) for d in run.entry(stage).get("dropped", [])]
        if run.primary:  # the same boxes (the stage is keyed by them); their other columns
            write_dropped(path, boxes, dropped)  # may have changed: list them as they are now
    else:
        dropped = most_doubtful(scene_boxes, run.path / "proposals", methods, fraction,
                                mask_scenes, say, model[1] if model else None)  # fmt: skip
        if run.primary:
            write_dropped(path, boxes, dropped)
            run.finish(stage, fp, fraction=fraction, methods=list(methods),
                       dropped=[d.as_dict() for d in dropped])  # fmt: skip
    features = {d.feature for d in dropped}
    kept, ignore = split_boxes(scene_boxes, features, mask_scenes)
    total = len({int(f) for sb in scene_boxes for f in sb.features})
    by = BY_PROPOSALS if model is None else BY_MODEL
    which = "" if model is None else ", chosen again with the stage-1 model"
    say(f"--drop-doubtful {fraction:g}: {len(dropped)} of {total} boxes ignored{which} "
        f"(listed in {DROPPED_FILE})")  # fmt: skip
    summary = {"fraction": fraction, "methods": list(methods), "boxes": total,
               "dropped": len(dropped), "by": by}  # fmt: skip
    return kept, ignore, fingerprint(fp, sorted(features), IGNORED), summary
