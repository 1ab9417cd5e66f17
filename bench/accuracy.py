"""Accuracy on real data: the paper's Table 1 / Table 4 rows on NWPU VHR-10, at our scale.

Parts: ``nwpu`` (a stratified 80/20 split by image, seed 0, written to ``WORK/split.json``;
train on the train boxes, score the validation images against their polygons), ``isaid`` (train
on P0005, score P0003 and P0004) and ``spacenet`` (train on the west half, score the east).
Every row of a seed shares one run folder, so stages are reused; rows already in
``WORK/results.json`` with the same budget are kept (``--fresh`` redoes them). The protocol and
the readings are written in BENCHMARKS.md beside the tables.

    .venv/bin/python bench/accuracy.py [--quick] [--rows ce-grabcut,bmm-main,full] [--seeds 0,1]
    .venv/bin/python bench/accuracy.py --parts isaid,spacenet
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.accuracy_rows import EXTRA_ROWS, ROWS, Row  # noqa: E402
from bench.data import (  # noqa: E402
    SHARED,
    Part,
    isaid_part,
    nwpu_part,
    score_bundle,
    spacenet_part,
)
from bench.report import (  # noqa: E402
    bench_parser,
    code_version,
    log,
    machine_description,
    update_section,
)
from jmlnet_geo.config import preset_config  # noqa: E402
from jmlnet_geo.evaluate import TruthCache, score_scenes, scores  # noqa: E402
from jmlnet_geo.evaluate.report import markdown_table  # noqa: E402
from jmlnet_geo.io.raster import open_scene  # noqa: E402
from jmlnet_geo.predict import PredictOptions  # noqa: E402
from jmlnet_geo.train.pipeline import TrainInputs, train  # noqa: E402

PARTS = ("nwpu", "isaid", "spacenet")


def run_folder(work: Path, part: Part, quick: bool, seed: int) -> Path:
    """The run folder a part's rows share for one seed (stages are reused by fingerprint)."""
    prefix = ("quick-" if quick else "") + ("" if part.name == "nwpu" else f"{part.name}-")
    return work / "runs" / f"{prefix}seed{seed}"


def run_row(row: Row, part: Part, work: Path, args, seed: int, truths: TruthCache) -> dict:
    """Train one row (in the part's and seed's shared run folder) and score it."""
    config = preset_config(args.preset)
    seg = replace(
        config.segmenter,
        stage1_proposal=row.stage1,
        loss=row.loss,
        proposals=row.proposals,
        stage1_steps=args.stage1_steps,
        stage2_steps=args.stage2_steps,
        optimizer=args.optimizer,
        lr=args.lr,
        warmup=args.warmup,
        seed=seed,
        val_every=10**9,
        loader_workers=args.loader_workers,
        box_tiles=row.box_tiles,
        box_loss_weight=row.box_loss_weight,
        box_pairwise_weight=row.box_pairwise_weight,
        box_margin=row.box_margin,
        box_skip_neighbours=row.box_skip_neighbours,
        box_outside_weight=row.box_outside_weight,
        box_outside_hard=row.box_outside_hard,
    )
    detector = replace(config.detector, steps=args.detector_steps)
    config = replace(
        config, segmenter=seg, detector=detector, masks_fraction=row.masks_fraction or 0.0
    )
    masks = part.train_masks if row.masks_fraction else None
    inputs = TrainInputs(part.train_scenes, part.train_boxes, part.classes, masks=masks)
    run_dir = run_folder(work, part, args.quick, seed)
    start = time.perf_counter()
    result = train(inputs, config, run_dir, resume=True, workers=args.workers, message=log)
    train_seconds = time.perf_counter() - start
    log(f"  trained in {train_seconds / 60:.1f} min; reused: {', '.join(result.reused) or '-'}")
    bundle = work / "bundles" / f"{run_dir.name}-{row.name}.safetensors"
    bundle.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(result.bundle, bundle)
    start = time.perf_counter()
    out, options = work / "predictions" / part.name, PredictOptions(loader_workers=0, batch_size=8)
    pooled = score_bundle(bundle, part.val_scenes, out, truths, part.classes, options)
    return {
        "part": part.name,
        "row": row.name,
        "seed": seed,
        "miou": float(pooled.miou),
        "iou": [float(v) for v in pooled.iou],
        "train_s": train_seconds,
        "reused": result.reused,
        "eval_s": time.perf_counter() - start,
    }


def budget_of(args) -> dict:
    """What makes two runs' rows comparable: preset, schedule, detector steps, data part."""
    names = ("preset", "stage1_steps", "stage2_steps", "detector_steps", "optimizer", "lr")
    return {n: getattr(args, n) for n in names} | {"warmup": args.warmup, "quick": bool(args.quick)}


def scored_before(path: Path, budget: dict) -> list[dict]:
    """Rows scored by an earlier run in the same WORK folder with the same budget.

    The bench takes longer than one sitting on 2 cores; re-running it with the same ``--work``
    continues where it stopped (``--fresh`` scores everything again).
    """
    if not path.exists():
        return []
    earlier = json.loads(path.read_text())
    return [r for r in earlier if has_budget(r, budget)]


def has_budget(result: dict, budget: dict) -> bool:
    """Whether a stored row was scored with ``budget``."""
    return all(result.get(k) == v for k, v in budget.items())


def _key(result: dict) -> tuple[str, str, int]:
    """(part, row, seed); rows scored before parts existed are NWPU's."""
    return result.get("part", "nwpu"), result["row"], result["seed"]


PART_TITLES = {
    "nwpu": "## Accuracy on NWPU VHR-10 (`bench/accuracy.py`)",
    "isaid": "## Accuracy, extra check: the three iSAID devkit images (`bench/accuracy.py`)",
    "spacenet": "## Accuracy, extra check: the SpaceNet Atlanta scene (`bench/accuracy.py`)",
}


def describe_split(part: Part) -> str:
    if part.name == "nwpu":
        return (
            f"{len(part.train_scenes)} train / {len(part.val_scenes)} validation images "
            "(WORK/split.json); training sees only the train images' boxes"
        )
    train = ", ".join(p.name for p in part.train_scenes)
    val = ", ".join(p.name for p in part.val_scenes)
    return f"train on {train} (boxes only, except the full row); score on {val}"


PROPOSAL_METHODS = ("box", "crf", "grabcut", "detcam", "camcut")


def proposal_quality(part: Part, run_dir: Path) -> tuple[list[list[str]], list[list[str]]]:
    """Per-class IoU % and recall of each proposal the rows learned from, on the training scenes.

    Scored against the training scenes' true masks, for the methods whose rasters the run folder
    holds (``proposals/<stem>.<method>.tif``). Pixels a proposal leaves at 255 (no label) are not
    counted; the last column says what share of the scenes' pixels that is.

    Returns:
        The IoU table's rows, and the fill table's rows: per class, recall % (the share of the
        class's true pixels the proposal gives that class) and, in brackets, the area the
        proposal gives the class over its true area (under 1: the proposal under-fills).
    """
    found: dict[str, list] = {m: [] for m in PROPOSAL_METHODS}  # (raster, scene) per method
    pixels = 0
    for scene in part.train_scenes:
        paths = {m: run_dir / "proposals" / f"{scene.stem}.{m}.tif" for m in PROPOSAL_METHODS}
        if any(p.exists() for p in paths.values()):
            header = open_scene(scene)
            pixels += header.width * header.height
            for method in (m for m, p in paths.items() if p.exists()):
                found[method].append((paths[method], header))
    truth = TruthCache(part.train_masks, classes=part.classes)
    rows, fill = [], []
    for method, pairs in ((m, f) for m, f in found.items() if f):
        rasters, scenes = zip(*pairs, strict=True)
        result = score_scenes(rasters, truth, class_names=part.classes, scenes=scenes)
        s = scores(result.pooled.confusion)
        rows.append([method, f"{100 * s['miou']:.2f}", *(f"{100 * v:.1f}" for v in s["iou"]),
                     f"{100 * result.unlabelled / pixels:.1f} %"])  # fmt: skip
        # labelled area / true area = (tp / precision) / (tp / recall)
        areas = zip(s["recall"], s["recall"] / s["precision"], strict=True)
        fill.append([method, *(f"{100 * r:.1f} ({a:.2f})" for r, a in areas)])
    return rows, fill


def markdown(results: list[dict], part: Part, args, command: str, started: str,
             proposals: tuple[list[list[str]], list[list[str]]] | None = None) -> str:  # fmt: skip
    names = ["background", *part.classes]
    by_row: dict[str, list[dict]] = defaultdict(list)
    for r in sorted(results, key=lambda r: r["seed"]):
        by_row[r["row"]].append(r)
    full = {r["seed"]: r["miou"] for r in by_row.get("full", [])}  # weak/full pairs the seeds
    rows, class_rows = [], []
    for row, rs in ((row, by_row[row.name]) for row in ROWS if by_row.get(row.name)):
        mious = [100 * r["miou"] for r in rs]
        spread = f" ± {np.std(mious):.2f}" if len(mious) > 1 else ""
        paired = [(r["miou"], full[r["seed"]]) for r in rs if r["seed"] in full]
        ratio = f"{np.divide(*np.mean(paired, axis=0)):.3f}" if paired else "n/a"
        minutes = f"{np.mean([r['train_s'] for r in rs]) / 60:.1f}"
        per_seed = ", ".join(f"{m:.2f}" for m in mious)
        rows.append([row.label, f"{np.mean(mious):.2f}{spread}", per_seed, ratio, minutes])
        class_rows.append([row.label, *(f"{100 * v:.1f}" for v in rs[0]["iou"])])
    codes = sorted({r.get("code", "unknown") for r in results})
    seeds = ", ".join(str(s) for s in sorted({r["seed"] for r in results}))
    lines = [
        f"- Command: `{command}` (from the repository root)",
        f"- Machine: {machine_description()}",
        f"- Date: {started} UTC; code {code_version()}"
        + (f" (rows scored at commits {', '.join(codes)})" if codes else ""),
        f"- Budget: preset `{args.preset}`, stage 1 {args.stage1_steps} steps + stage 2 "
        f"{args.stage2_steps} steps (batch and tile from the preset), {args.optimizer} lr "
        f"{args.lr} (warm-up {args.warmup} steps), detector {args.detector_steps} steps; "
        f"seeds {seeds} (the per-seed column says which a row ran)",
        f"- Split: {describe_split(part)}",
        "",
        markdown_table(
            ["row", "mIoU % (mean ± std)", "per seed", "weak/full (same seeds)", "train min"], rows
        ),
        "Per-class IoU % (Table 5 style, first seed):",
        "",
        markdown_table(["row", *names], class_rows),
    ]
    if proposals and proposals[0]:
        lines += [
            "Proposal quality: IoU % on the training images (seed 0's run folder):",
            "",
            markdown_table(["proposal", "mIoU", *names, "unlabelled"], proposals[0]),
            "Proposal fill: recall % (labelled / true area in brackets):",
            "",
            markdown_table(["proposal", *names], proposals[1]),
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__.splitlines()[0], PARTS, "Run folders, bundles, results.json.")
    parser.set_defaults(work=Path("/tmp/jmlgeo-accuracy"), parts=("nwpu",))
    add = parser.add_argument
    add("--rows", default=None, help="Comma-separated row names.")
    add("--seeds", default="0")
    add("--preset", default="fast")
    for name in ("--stage1-steps", "--stage2-steps", "--detector-steps"):
        add(name, type=int, default=None)
    add("--lr", type=float, default=None, help="Default: the preset's.")
    add("--optimizer", default=None, help="sgd or adamw; default: the preset's.")
    add("--warmup", type=int, default=None, help="Default: the preset's.")
    add("--workers", type=int, default=2)
    add("--loader-workers", type=int, default=1)
    add("--fresh", action="store_true", help="Score every row again (default: keep rows that "
        "WORK/results.json holds for the same budget).")  # fmt: skip
    args = parser.parse_args(argv)
    if not SHARED.exists():
        print(f"skipped: {SHARED} is absent (../shared/data sits beside the developers' checkout)")
        return 0
    seg = preset_config(args.preset).segmenter
    args.lr = args.lr or seg.lr
    args.optimizer = args.optimizer or seg.optimizer
    args.warmup = seg.warmup if args.warmup is None else args.warmup
    steps = (20, 10, 10) if args.quick else (seg.stage1_steps, seg.stage2_steps, 300)
    names = ("stage1_steps", "stage2_steps", "detector_steps")
    for name, default in zip(names, steps, strict=True):
        setattr(args, name, getattr(args, name) or default)
    quick_rows = "ce-box,ce-grabcut,bmm-classic,ce-camcut,bmm-main,full"
    paper_rows = ",".join(r.name for r in ROWS if not r.ablation)
    by_name = {r.name: r for r in ROWS}
    names = (args.rows or (quick_rows if args.quick else paper_rows)).replace(" ", "").split(",")
    if unknown := [n for n in names if n not in by_name]:
        parser.error(f"unknown rows {unknown}; choose from {list(by_name)}")
    rows = [by_name[n] for n in names]  # in the order given: put the rows you need most first
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    budget = budget_of(args)
    code = code_version()
    path = args.work / "results.json"
    args.work.mkdir(parents=True, exist_ok=True)
    command = "python bench/accuracy.py " + " ".join(argv if argv is not None else sys.argv[1:])
    for part_name in args.parts:
        if part_name == "nwpu":
            part = nwpu_part(args.work, (60, 20) if args.quick else None)
            part_rows = rows
        else:
            part = {"isaid": isaid_part, "spacenet": spacenet_part}[part_name](args.work)
            part_rows = [r for r in rows if r.name in EXTRA_ROWS]
        log(f"{part.name}: {len(part.train_scenes)} train, {len(part.val_scenes)} scored scene(s)")
        truths = part.truth()
        for seed in [int(s) for s in args.seeds.split(",")]:
            for row in part_rows:
                key = (part.name, row.name, seed)
                earlier = [] if args.fresh else scored_before(path, budget)
                if any(_key(r) == key for r in earlier):
                    log(f"{part.name} row {row.name} seed {seed}: scored earlier with this budget")
                    continue
                log(f"{part.name} row {row.name} seed {seed}")
                result = {**run_row(row, part, args.work, args, seed, truths), **budget}
                result["code"] = code  # what this process imported, not what is on disk now
                log(f"  mIoU {100 * result['miou']:.2f} (eval {result['eval_s']:.0f} s)")
                every = json.loads(path.read_text()) if path.exists() else []
                # rows of other budgets stay: results.json is the history of every budget tried
                every = [r for r in every if _key(r) != key or not has_budget(r, budget)]
                every.append(result)
                path.write_text(json.dumps(every, indent=1))
        # the table: every row of this part scored with this budget, by this run or earlier ones
        scored = [r for r in scored_before(path, budget) if _key(r)[0] == part.name]
        quality = proposal_quality(part, run_folder(args.work, part, args.quick, 0))
        text = markdown(scored, part, args, command.strip(), started, quality)
        print(text)
        if not args.no_update and not args.quick:
            names = ["accuracy", *(f"accuracy-{p}" for p in PARTS[1:])]  # in PARTS order
            section = names[PARTS.index(part.name)]
            after = names[: PARTS.index(part.name)][::-1]  # the extra checks after NWPU's
            update_section(section, f"{PART_TITLES[part.name]}\n\n{text}", args.output, after)
    return 0


if __name__ == "__main__":
    sys.exit(main())
