"""Accuracy on real data: the paper's Table 1 / Table 4 rows on NWPU VHR-10, at our scale.

Commands::

    .venv/bin/python bench/accuracy.py --quick            # smoke check, minutes
    .venv/bin/python bench/accuracy.py                    # CPU budget (fast preset), ~2 h
    .venv/bin/python bench/accuracy.py --rows ce-grabcut,bmm-main,full --seeds 0,1

Data: ``../shared/data/nwpu_vhr10_train`` (520 images, 10 classes, COCO polygons), imported
with ``jmlgeo import coco``. Split: a fixed, stratified 80/20 split by image (seed 0): images are
shuffled, then a greedy pass puts an image into validation while every class it holds still
needs validation instances (target 20 % of each class's images), else into train; the lists are
written to ``WORK/split.json``. Training sees only the boxes of the train part; scores are against
the true polygons of the validation part (mIoU with background, as the paper).

Every row uses the same model (preset), schedule (steps, batch, tile) and seed; they differ
only in proposals and loss. One run folder per row; proposal rasters are shared between rows
through a common cache run (``--resume`` reuses matching stages).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import geopandas as gpd
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.report import REPO, machine_description, update_section  # noqa: E402
from jmlnet_geo.config import preset_config  # noqa: E402
from jmlnet_geo.evaluate import confusion_matrix, scores, truth_raster  # noqa: E402
from jmlnet_geo.io.importers import import_coco  # noqa: E402
from jmlnet_geo.io.raster import open_scene  # noqa: E402
from jmlnet_geo.predict import PredictOptions, Predictor  # noqa: E402
from jmlnet_geo.proposals.compose import CLASSIC_METHODS  # noqa: E402
from jmlnet_geo.train.pipeline import TrainInputs, train  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "nwpu_vhr10_train"
MAIN = ("grabcut", "detcam", "camcut")  # the paper's best set


@dataclass(frozen=True)
class Row:
    """One line of the table: stage-1 proposal, stage-2 loss and proposals, supervision."""

    name: str
    label: str
    stage1: str
    loss: str
    proposals: tuple[str, ...]
    masks_fraction: float | None = None  # None: weak; 1.0: full; 0.1: semi


ROWS = [
    Row("ce-box", "CE, BOX", "box", "ce", ("box",)),
    Row("ce-crf", "CE, CRF", "crf", "ce", ("crf",)),
    Row("ce-grabcut", "CE, GrabCut", "grabcut", "ce", ("grabcut",)),
    Row("ce-detcam", "CE, DetCAM", "detcam", "ce", ("detcam",)),
    Row("ce-camcut", "CE, CAMCut", "camcut", "ce", ("camcut",)),
    Row("ma-main", "MA, {GrabCut, DetCAM, CAMCut}", "camcut", "ma", MAIN),
    Row("mm-main", "MM, {GrabCut, DetCAM, CAMCut}", "camcut", "mm", MAIN),
    Row("bmm-main", "BMM, {GrabCut, DetCAM, CAMCut}", "camcut", "bmm", MAIN),
    Row(
        "bmm-all",
        "BMM, {BOX, CRF, GrabCut, DetCAM, CAMCut}",
        "camcut",
        "bmm",
        ("box", "crf", "grabcut", "detcam", "camcut"),
    ),
    Row("bmm-classic", "BMM, {CRF, GrabCut}", "grabcut", "bmm", ("crf", "grabcut")),
    Row("semi", "BMM + 10 % true masks", "camcut", "bmm", MAIN, 0.1),
    Row("full", "CE, true masks (upper bound)", "mask", "ce", ("mask",), 1.0),
]  # fmt: skip


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def prepare(work: Path) -> dict:
    """Import NWPU, split it 80/20 by image (stratified), write train boxes and masks."""
    work.mkdir(parents=True, exist_ok=True)
    boxes, truth = work / "boxes.gpkg", work / "truth.gpkg"
    if not boxes.exists():
        import_coco(DATA / "NWPU_instances_train.json", DATA / "imgs", boxes, truth=truth)
    frame = gpd.read_file(boxes)
    classes = sorted(frame["class"].unique())
    per_image = frame.groupby("image")["class"].apply(set).to_dict()
    images = sorted(per_image)
    random.Random(0).shuffle(images)
    target = {c: 0.2 * sum(c in s for s in per_image.values()) for c in classes}
    in_val: dict[str, float] = defaultdict(float)
    val = []
    for image in images:
        need = [c for c in per_image[image] if in_val[c] < target[c]]
        if need and len(val) < 0.2 * len(images) + 1:
            val.append(image)
            for c in per_image[image]:
                in_val[c] += 1
    train_images = sorted(set(images) - set(val))
    val = sorted(val)
    split = {"train": train_images, "val": val, "classes": classes}
    (work / "split.json").write_text(json.dumps(split, indent=1))
    for name, subset in (("train_boxes", train_images), ("train_truth", train_images)):
        source = boxes if name == "train_boxes" else truth
        out = work / f"{name}.gpkg"
        if not out.exists():
            layer = gpd.read_file(source)
            layer[layer["image"].isin(subset)].to_file(out, driver="GPKG")
    return split


def run_row(row: Row, split: dict, work: Path, args, seed: int) -> dict:
    """Train one row and score it on the validation images."""
    config = preset_config(args.preset)
    seg = replace(
        config.segmenter,
        stage1_proposal=row.stage1,
        loss=row.loss,
        proposals=row.proposals,
        stage1_steps=args.stage1_steps,
        stage2_steps=args.stage2_steps,
        seed=seed,
        val_every=10**9,
        loader_workers=args.loader_workers,
    )
    config = replace(config, segmenter=seg, masks_fraction=row.masks_fraction or 0.0)
    scenes = tuple(DATA / "imgs" / name for name in split["train"])
    masks = work / "train_truth.gpkg" if row.masks_fraction else None
    inputs = TrainInputs(scenes, work / "train_boxes.gpkg", tuple(split["classes"]), masks=masks)
    run_dir = work / "runs" / f"{row.name}-seed{seed}"
    start = time.perf_counter()
    result = train(inputs, config, run_dir, resume=True, workers=args.workers)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    predictor = Predictor(result.bundle, "auto")
    total = np.zeros((len(split["classes"]) + 1,) * 2, np.int64)
    for name in split["val"]:
        scene = DATA / "imgs" / name
        pred = predictor.predict(
            scene, run_dir / "val", PredictOptions(loader_workers=0, batch_size=8)
        )
        import rasterio

        with rasterio.open(pred.classes) as ds:
            predicted = ds.read(1)
        truth = truth_raster(open_scene(scene), work / "truth.gpkg", classes=split["classes"])
        keep = (truth != 255) & (predicted != 255)
        total += confusion_matrix(predicted[keep], truth[keep], len(split["classes"]) + 1)
    s = scores(total)
    return {
        "row": row.name,
        "seed": seed,
        "miou": float(s["miou"]),
        "iou": [float(v) for v in s["iou"]],
        "train_s": train_seconds,
        "eval_s": time.perf_counter() - start,
    }


def available(row: Row) -> bool:
    known = (*CLASSIC_METHODS, "mask")
    try:
        from jmlnet_geo.proposals.compose import DETECTOR_METHODS  # type: ignore[attr-defined]

        known = (*known, *DETECTOR_METHODS)
    except ImportError:
        pass
    return all(p in known for p in (row.stage1, *row.proposals))


def markdown(results: list[dict], split: dict, args, command: str, skipped: list[str]) -> str:
    names = ["background", *split["classes"]]
    by_row: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        by_row[r["row"]].append(r)
    full = np.mean([r["miou"] for r in by_row.get("full", [])]) if by_row.get("full") else None
    lines = [
        f"Machine: {machine_description()}. Date: {time.strftime('%Y-%m-%d')}.",
        "",
        f"Command: `{command}`",
        "",
        f"Budget: preset `{args.preset}`, stage 1 {args.stage1_steps} steps + stage 2 "
        f"{args.stage2_steps} steps, batch and tile from the preset; split: "
        f"{len(split['train'])} train / {len(split['val'])} validation images (WORK/split.json).",
        "",
        "| row | mIoU % (mean over seeds) | seeds | weak/full | train min |",
        "|---|---|---|---|---|",
    ]
    for row in ROWS:
        rs = by_row.get(row.name)
        if not rs:
            continue
        mious = [100 * r["miou"] for r in rs]
        spread = f" ± {np.std(mious):.2f}" if len(mious) > 1 else ""
        ratio = f"{np.mean([r['miou'] for r in rs]) / full:.3f}" if full else "n/a"
        minutes = np.mean([r["train_s"] for r in rs]) / 60
        lines.append(
            f"| {row.label} | {np.mean(mious):.2f}{spread} | {len(rs)} | {ratio} | {minutes:.1f} |"
        )
    lines += ["", "Per-class IoU % (Table 5 style, first seed):", ""]
    lines.append("| row | " + " | ".join(names) + " |")
    lines.append("|---" * (len(names) + 1) + "|")
    for row in ROWS:
        rs = by_row.get(row.name)
        if rs:
            cells = " | ".join(f"{100 * v:.1f}" for v in rs[0]["iou"])
            lines.append(f"| {row.label} | {cells} |")
    if skipped:
        lines += ["", f"Not run (their proposals are not available yet): {', '.join(skipped)}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/jmlgeo-accuracy"))
    parser.add_argument("--quick", action="store_true", help="Few steps, three rows.")
    parser.add_argument("--rows", default=None, help="Comma-separated row names.")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--stage1-steps", type=int, default=None)
    parser.add_argument("--stage2-steps", type=int, default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--loader-workers", type=int, default=1)
    parser.add_argument("--no-update", action="store_true", help="Do not touch BENCHMARKS.md.")
    args = parser.parse_args(argv)
    if not DATA.exists():
        print(f"skipped: {DATA} is absent (../shared/data sits beside the developers' checkout)")
        return 0
    if args.quick:
        args.stage1_steps = args.stage1_steps or 20
        args.stage2_steps = args.stage2_steps or 10
        wanted = args.rows or "ce-box,ce-grabcut,bmm-classic,full"
    else:
        args.stage1_steps = args.stage1_steps or 600
        args.stage2_steps = args.stage2_steps or 300
        wanted = args.rows or ",".join(r.name for r in ROWS)
    names = wanted.split(",")
    rows = [r for r in ROWS if r.name in names]
    skipped = [r.label for r in rows if not available(r)]
    split = prepare(args.work)
    log(f"split: {len(split['train'])} train, {len(split['val'])} validation images")
    results = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for row in rows:
            if not available(row):
                continue
            log(f"row {row.name} seed {seed}")
            results.append(run_row(row, split, args.work, args, seed))
            log(f"  mIoU {100 * results[-1]['miou']:.2f} in {results[-1]['train_s'] / 60:.1f} min")
            (args.work / "results.json").write_text(json.dumps(results, indent=1))
    command = ".venv/bin/python bench/accuracy.py " + " ".join(argv or sys.argv[1:])
    text = markdown(results, split, args, command.strip(), skipped)
    print(text)
    if not args.no_update:
        update_section("accuracy", "## Accuracy on NWPU VHR-10 (bench/accuracy.py)\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
