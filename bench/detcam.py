"""Benchmark of DetCAM and CAMCut (paper section 2.3) against BOX, dense CRF and GrabCut.

A CPU ``fast`` detector on every 5th NWPU VHR-10 train image: its mAP@0.5, proposal quality on
its training and on held-out images (section ``detcam``). CAMCut is scored with the paper's
``sure`` background below tau_l and with ``probable`` (``--camcut-low``) beside it. The method
and the readings are written in BENCHMARKS.md beside the tables; the settled tau_l and tau_h
sweeps and the iSAID part left the script (their tables stay there, the script in git history).

    .venv/bin/python bench/detcam.py [--quick] [--work DIR] [--no-update]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a file (python bench/detcam.py)
    sys.path.insert(0, os.fspath(Path(__file__).resolve().parents[1]))

from bench.data import SHARED, Dataset, Score, classic_scores, load_nwpu, score_folder
from bench.report import (
    SHARED_CORES,
    Results,
    Run,
    bench_parser,
    log,
    ms,
    package_versions,
    pct,
    quiet_warnings,
    share,
    update_section,
    work_folder,
)
from jmlnet_geo.detection import detect_scene
from jmlnet_geo.detector_file import load_detector, read_detector_card
from jmlnet_geo.evaluate import mean_average_precision, roc_auc
from jmlnet_geo.evaluate.report import markdown_table
from jmlnet_geo.io.vector import IGNORE, SceneBoxes
from jmlnet_geo.normalization import scene_normalization
from jmlnet_geo.proposals.camcut import CAMCutOptions
from jmlnet_geo.proposals.compose import pixel_boxes
from jmlnet_geo.proposals.detcam import DetCAMOptions, scene_detcam, shrink_factor
from jmlnet_geo.proposals.detector_proposals import write_detector_proposals
from jmlnet_geo.train.detector import train_detector

SECTION = "detcam"
PARTS = ("nwpu",)
VERSIONS = ["torch", "torchvision", "lightning", "opencv-python-headless"]
#: CAMCut's start below tau_l: the paper's ``sure`` background, and ``probable`` beside it.
LOWS = {"camcut": "sure", "camcut-probable": "probable"}
LABEL = {"box": "BOX", "crf": "CRF", "grabcut": "GrabCut", "detcam": "DetCAM", "camcut": "CAMCut",
         "camcut-probable": "CAMCut, low probable"}  # fmt: skip

# --- scoring ----------------------------------------------------------------------------------


def detector_scores(data: Dataset, images: Sequence[SceneBoxes], out: Path, detector: Path):
    """``write_detector_proposals`` (DetCAM and CAMCut at the library's thresholds, CAMCut
    with each start of :data:`LOWS`) into ``out``, each scored: ``{method: Score}``."""
    found = {}
    for name, low in LOWS.items():
        folder = out / name
        methods = ["detcam", "camcut"] if name == "camcut" else ["camcut"]
        summaries = write_detector_proposals(
            images, data.class_names, methods, folder, detector, device="cpu",
            camcut_options=CAMCutOptions(low=low),
        )  # fmt: skip
        for m in methods:
            key = name if m == "camcut" else m
            found[key] = score_folder(data, images, folder, m, summaries)
            log(f"{LABEL[key]}: mIoU {pct(found[key].miou)}, {found[key].fallbacks} fell back")
    return {m: found[m] for m in ("detcam", *LOWS)}


# --- the parts --------------------------------------------------------------------------------


def train(class_names: Sequence[str], images: Sequence[SceneBoxes], args, folder: Path):
    """Train (or reuse, when ``folder`` holds one of the same data and settings) the detector:
    the ``fast`` preset, ``args.steps`` x ``args.batch_size`` tiles of ``args.tile_size`` px,
    the default lr, seed 0, CPU. Returns (its path, what the report says about it)."""
    notes: list[str] = []
    last = [time.perf_counter()]

    def progress(done: int, total: int) -> None:
        if done % 25 == 0 or done == total:
            log(f"detector: step {done}/{total} ({time.perf_counter() - last[0]:.0f} s)")

    start = time.perf_counter()
    path = train_detector(
        images, class_names, scene_normalization([sb.scene for sb in images]), folder,
        steps=args.steps, batch_size=args.batch_size, tile_size=args.tile_size, seed=0,
        resume=True, device="cpu", progress=progress, message=notes.append,
    )  # fmt: skip
    wall = time.perf_counter() - start
    card = read_detector_card(path)
    reused = any("reusing" in n for n in notes)
    info = {
        "reused": reused,
        "seconds": card.training.get("seconds", wall) if reused else wall,
        "card": card,
        "loss": loss_text(folder),
    }
    log(f"detector: {'reused' if reused else 'trained'}, {info['seconds'] / 60:.1f} min")
    return path, info


def loss_text(folder: Path, window: int = 25) -> str:
    """Mean loss of the first and last ``window`` steps (whether training made progress), from
    Lightning's CSV log in ``folder``."""
    path, losses = folder / "logs" / "metrics.csv", []
    if path.exists():
        with open(path, newline="") as f:
            losses = [
                float(row["train_loss"]) for row in csv.DictReader(f) if row.get("train_loss")
            ]
    if len(losses) < 2 * window:
        return "loss log unavailable"
    first, last = float(np.mean(losses[:window])), float(np.mean(losses[-window:]))
    return f"mean loss of the first {window} steps {first:.3f}, of the last {window} {last:.3f}"


def budget_text(info: dict, threads: int) -> str:
    """The detector's training budget, time and loss, for the report."""
    training = info["card"].training
    return (
        f"fast preset (EfficientNet-Lite0 ImageNet + FPN), {training['steps']} steps x "
        f"{training['batch_size']} tiles of {training['tile_size']} px, {training['optimizer']} "
        f"lr {training['lr']:g}, {training['rois_per_tile']} RoIs per tile, stem frozen, CPU "
        f"{threads} thread: {info['seconds'] / 60:.1f} min"
        + (" (trained by an earlier run with the same data and settings; reused)" * info["reused"])
        + f", final loss {training['final_loss']:.3f} ({info['loss']})"
    )


def part_map(detector: Path, heldout, fit, results: Results) -> None:
    """VOC mAP@0.5 of ``detect_scene`` on the held-out and some training images' boxes."""
    model, card = load_detector(detector)
    summary = {}
    for name, images in (("held-out", heldout), ("training (fit)", fit)):
        start = time.perf_counter()
        found = [detect_scene(model, card, sb.scene) for sb in images]
        truth = [(sb.xyxy, sb.class_ids) for sb in images]
        result = mean_average_precision(found, truth, card.num_classes)
        took = (time.perf_counter() - start) / max(1, len(images))
        summary[name] = (result, took, len(images))
        log(f"mAP {name}: {pct(result['map'])} ({len(images)} images, {took:.1f} s/image)")
    rows = [
        [name, *(f"{pct(r['ap'][i])} ({r['truths'][i]})" for r, _, _ in summary.values())]
        for i, name in enumerate(card.classes, start=1)
    ]
    rows.append(["**mAP@0.5**", *(f"**{pct(r['map'])}**" for r, _, _ in summary.values())])
    header = ["class", *(f"AP@0.5 % {n}, {summary[n][2]} images (true boxes)" for n in summary)]
    timing = ", ".join(f"{n} {summary[n][1]:.1f} s/image" for n in summary)
    results.add(
        "### 1. The detector: mAP@0.5 (VOC all-point)\n\n"
        "`detect_scene` (1024-px windows, every detection the model returns, score >= 0.05) "
        f"against the true boxes; {timing}.\n\n" + markdown_table(header, rows)
    )


def detcam_maps(data: Dataset, detector: Path, images: Sequence[SceneBoxes]) -> dict:
    """DetCAM maps of every box: how many are all 0 (``zero``) or on a shrunk window
    (``shrunk``), and their ranking ``auc`` (with ``auc_text``: the mean per class)."""
    model, card = load_detector(detector)
    norm, start = card.band_normalization(), time.perf_counter()
    heats = {
        sb.scene.path: scene_detcam(model, norm, sb.scene, pixel_boxes(sb), sb.class_ids)[0]
        for sb in images
    }
    wall = time.perf_counter() - start
    zero = sum(int(h.max() == 0) for hs in heats.values() for h in hs)
    shrunk = sum(
        sum(f < 1 for f in shrink_factor(pixel_boxes(sb), sb.scene, DetCAMOptions()))
        for sb in images
    )
    auc, auc_by_class = ranking_auc(data, images, heats)
    log(f"DetCAM: {wall:.0f} s for {sum(len(sb) for sb in images)} boxes; {zero} maps all 0; "
        f"AUC {auc:.3f}")  # fmt: skip
    auc_text = ", ".join(f"{k} {v:.2f}" for k, v in auc_by_class.items())
    return {"zero": zero, "shrunk": shrunk, "auc": auc, "auc_text": auc_text}


def ranking_auc(nwpu: Dataset, images: Sequence[SceneBoxes], heats: dict) -> tuple[float, dict]:
    """How well DetCAM orders a box's pixels: AUC of object vs background pixels inside it.

    0.5 is chance, 1.0 every object pixel above every background pixel. Boxes that are all
    object or all background have no AUC. Returns the mean over boxes and the mean per class.
    """
    per_class: dict[str, list[float]] = {}
    for sb in images:
        truth = nwpu.truth(sb.scene)
        for (c0, r0, c1, r1), class_id, heat in zip(
            pixel_boxes(sb), sb.class_ids, heats[sb.scene.path], strict=True
        ):
            inside = truth[r0:r1, c0:c1]
            valid = inside != IGNORE
            auc = roc_auc(heat[valid], inside[valid] == class_id)
            if not math.isnan(auc):
                per_class.setdefault(nwpu.class_names[class_id - 1], []).append(auc)
    every = [v for values in per_class.values() for v in values]
    mean = float(np.mean(every)) if every else math.nan
    return mean, {k: float(np.mean(v)) for k, v in sorted(per_class.items())}


def quality_table(found: dict[str, Score]) -> str:
    rows = [
        [LABEL[m], pct(s.miou), pct(s.object_miou), pct(s.mean_box_iou),
         share(s.fallbacks, s.boxes), ms(s.per_box, 0)]
        for m, s in found.items()
    ]  # fmt: skip
    header = "method | mIoU % | object mIoU % | mean box IoU % | fell back to box | ms/box"
    return markdown_table(header, rows, align="lrrrrr")


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = bench_parser(
        "Benchmark DetCAM / CAMCut proposals on NWPU VHR-10 (CPU fast preset): tables 1-3 in "
        "its own section of the output.",
        PARTS,
        "Folder for the detector and rasters, kept (default: temporary).",
    )
    add = parser.add_argument
    add("--data", type=Path, default=SHARED, help="The shared data folder.")
    add("--limit", type=int, help="Only the first N NWPU training images.")
    add("--heldout", type=int, default=30, help="Held-out images.")
    add("--fit-images", type=int, default=20, help="Training images for fit mAP.")
    add("--steps", type=int, default=300, help="Detector training steps.")
    add("--batch-size", type=int, default=4, help="Detector tiles per step.")
    add("--tile-size", type=int, default=256, help="Detector tile side.")
    add("--threads", type=int, default=1, help="torch threads.")
    add("--workers", type=int, default=2, help="Processes of BOX/CRF/GrabCut.")
    args = parser.parse_args(argv)
    if args.quick:  # 20 images, 30 steps
        args.limit = args.limit or 20
        args.heldout = min(args.heldout, 5)
        args.fit_images = min(args.fit_images, 5)
        args.steps = 30 if args.steps == 300 else args.steps
    return args


@contextlib.contextmanager
def timed(timings: list[str], label: str) -> Iterator[None]:
    """Append ``label minutes`` of the block to ``timings``."""
    start = time.perf_counter()
    yield
    timings.append(f"{label} {(time.perf_counter() - start) / 60:.1f}")


def run_nwpu(args: argparse.Namespace, work: Path) -> str:
    """Tables 1-3 on NWPU VHR-10: print them, return the ``detcam`` section."""
    run, results, timings = Run(), Results(), []
    nwpu = load_nwpu(args.data, work)
    images = nwpu.scene_boxes[::5][: args.limit]
    heldout = nwpu.scene_boxes[2::10][: args.heldout]
    n_train = sum(len(sb) for sb in images)
    n_held = sum(len(sb) for sb in heldout)
    log(f"train: {len(images)} images, {n_train} boxes; held-out {len(heldout)}, {n_held}")

    with timed(timings, "detector"):
        detector, info = train(nwpu.class_names, images, args, work / "detector")
    with timed(timings, "mAP"):
        part_map(detector, heldout, images[: args.fit_images], results)
    with timed(timings, "DetCAM/CAMCut"):
        cams = detcam_maps(nwpu, detector, images)
        found = detector_scores(nwpu, images, work / "train", detector)
    with timed(timings, "BOX/CRF/GrabCut"):
        methods = ["box", "crf", "grabcut"]
        found = (
            classic_scores(nwpu, images, work / "train" / "classic", methods, args.workers) | found
        )
    with timed(timings, "held-out"):
        held = classic_scores(nwpu, heldout, work / "heldout", ["box", "grabcut"], args.workers)
        held |= detector_scores(nwpu, heldout, work / "heldout", detector)
    results.add(
        f"### 2. Proposal quality on the training images ({len(images)} images, {n_train} "
        f"boxes; {cams['zero']} DetCAM maps all 0, {cams['shrunk']} boxes on a shrunk window)\n\n"
        + quality_table(found)
    )
    results.add(
        f"### 3. Held-out images ({len(heldout)} images, {n_held} boxes, never seen by the "
        "detector)\n\n" + quality_table(held)
    )
    auc = f"{cams['auc']:.3f} ({cams['auc_text']})"
    results.add(f"DetCAM ranking AUC inside the training boxes: {auc}")
    print(f"\nRuntime {run.minutes:.1f} min", flush=True)
    head = run.head(
        package_versions(VERSIONS),
        f"runtime {run.minutes:.1f} min ({', '.join(timings)} min)",
        f"- Data: ../shared/data NWPU VHR-10 train. Detector and proposals: every 5th image "
        f"in sorted order ({len(images)} images, {n_train} boxes, all 10 classes); held-out: "
        f"every 10th from the 3rd ({len(heldout)} images, {n_held} boxes)",
        f"- Detector training budget: {budget_text(info, args.threads)}",
        load=SHARED_CORES,
    )
    title = "## DetCAM and CAMCut vs BOX, CRF, GrabCut (`bench/detcam.py`)"
    return "\n\n".join([title, head, *results.blocks])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.data / "nwpu_vhr10_train").is_dir():
        print(f"skipped: {args.data} lacks nwpu_vhr10_train (the shared dev data)")
        return 0
    torch.set_num_threads(args.threads)
    quiet_warnings()
    with work_folder(args.work, "jmlgeo-bench-detcam-") as work:
        section = run_nwpu(args, work)
        if args.no_update or args.quick:
            log(f"{args.output} not updated (--no-update or --quick)")
        else:
            log(f"updated section {SECTION} of {update_section(SECTION, section, args.output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
