"""Benchmark of streaming sliding-window prediction (``jmlgeo predict``, issues 6 and 18).

Parts: ``throughput`` (bare forward on the defaults' windows, torchgeo recipe, ours at the
defaults and at the old ones, on a synthetic scene), ``memory`` (peak RSS/PSS of a fresh process
per scene size, defaults), ``seams`` (agreement under a half-stride shift, tiled and untiled, for
the defaults and their variants; real images as a mosaic with ``--seams-mosaic``). Each part
rewrites its own section of BENCHMARKS.md; the reading is written by hand after it. The settled
``malloc`` part (glibc's settings against ``tune_malloc``) left the script; its table stays in
BENCHMARKS.md and the script in git history.

    .venv/bin/python bench/predict.py [--quick] [--parts throughput,memory,seams]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import psutil
import rasterio
from rasterio.errors import NotGeoreferencedWarning

if __package__ in (None, ""):  # run as a file (python bench/predict.py)
    sys.path.insert(0, os.fspath(Path(__file__).resolve().parents[1]))

from bench.predict_inputs import TRAINED, random_bundle, synthetic_scene
from bench.predict_seams import part_seams
from bench.predict_throughput import part_throughput, run_recipe
from bench.report import (
    Results,
    Run,
    bench_parser,
    load_text,
    log,
    package_versions,
    update_section,
    work_folder,
)
from jmlnet_geo.children import tune_malloc
from jmlnet_geo.evaluate.report import markdown_table

SECTION = "predict"
PARTS = ("throughput", "memory", "seams")


# --- part 2: memory ---------------------------------------------------------------------------


def tree_memory(root: int) -> tuple[int, int]:
    """(sum of RSS, sum of PSS) in kB of process ``root`` and its descendants (psutil)."""
    rss = pss = 0
    with contextlib.suppress(psutil.Error):
        tree = psutil.Process(root)
        for proc in [tree, *tree.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):  # a worker may end between the two calls
                memory = proc.memory_full_info()
                rss, pss = rss + memory.rss // 1024, pss + memory.pss // 1024
    return rss, pss


def measure_child(kind: str, bundle: Path, scene: Path, out: Path) -> dict:
    """Run one prediction in a fresh process; its own report plus the sampled tree peaks."""
    command = [sys.executable, os.fspath(Path(__file__).resolve()), "--child", kind]
    command += ["--child-bundle", os.fspath(bundle), "--child-scene", os.fspath(scene)]
    command += ["--child-out", os.fspath(out)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    peak_rss = peak_pss = 0
    while proc.poll() is None:
        rss, pss = tree_memory(proc.pid)
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        time.sleep(0.2)
    stdout = proc.stdout.read() if proc.stdout else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} prediction of {scene.name} failed ({proc.returncode})")
    report = json.loads(stdout.strip().splitlines()[-1])
    report.update(tree_rss_kb=peak_rss, tree_pss_kb=peak_pss)
    return report


def child_main(args: argparse.Namespace) -> int:
    """Inside the measured subprocess: load, predict, report (JSON on the last stdout line)."""
    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
    from jmlnet_geo.predict import Predictor

    predictor = Predictor(args.child_bundle, device="cpu")
    loaded = psutil.Process().memory_info().rss // 1024
    out = Path(args.child_out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    plan = {}
    if args.child == "ours":
        result = predictor.predict(args.child_scene, out)
        plan = {"window": result.window, "overlap": result.overlap}
    else:
        tile = predictor.card.tile_size
        run_recipe(
            predictor.model, predictor.normalization, Path(args.child_scene), out / "r.tif", tile, 8
        )
    report = plan | {
        "seconds": time.perf_counter() - start,
        "loaded_kb": loaded,
        "main_max_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "workers_max_rss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    }
    print(json.dumps(report), flush=True)
    return 0


def part_memory(args: argparse.Namespace, work: Path, results: Results) -> None:
    tile = args.tile
    bundle = random_bundle(work / "random_fast.safetensors", tile)
    measured: list[tuple[str, int, dict]] = []
    runs = [("ours", side) for side in args.memory_sizes]
    runs += [("recipe", side) for side in args.recipe_sizes]
    for kind, side in runs:
        scene = synthetic_scene(work / f"synthetic_{side}.tif", side)
        out = work / f"memory_{kind}_{side}"
        shutil.rmtree(out, ignore_errors=True)
        log(f"memory: {kind} on {side}² ...")
        report = measure_child(kind, bundle, scene, out)
        shutil.rmtree(out, ignore_errors=True)
        measured.append((kind, side, report))
        log(
            f"  {report['seconds']:.0f} s, main {report['main_max_rss_kb'] / 2**20:.2f} GiB, "
            f"tree PSS {report['tree_pss_kb'] / 2**20:.2f} GiB (load {load_text()})"
        )

    def gb(kb: float) -> str:
        return f"{kb * 1024 / 1e9:.2f}"

    def label(kind: str, r: dict) -> str:
        if kind == "ours":
            return f"ours, defaults (window {r['window']}, overlap {r['overlap']})"
        return f"(b) torchgeo recipe (tile {tile}, batch 8)"

    kbs = ("loaded_kb", "main_max_rss_kb", "workers_max_rss_kb", "tree_rss_kb", "tree_pss_kb")
    rows = [
        [label(kind, r), f"{side} x {side}", f"{side * side * 3 / 1e9:.2f}", f"{r['seconds']:.0f}",
         *(gb(r[k]) for k in kbs)]
        for kind, side, r in measured
    ]  # fmt: skip
    header = (
        "prediction | scene (px) | raw scene (GB) | time (s) | RSS after loading the model | "
        "max RSS, main process | max RSS, child processes (reader workers, if any) | "
        "peak tree RSS (sampled) | peak tree PSS (sampled)"
    )
    results.add(
        "### 2. Peak memory (GB = 10^9 bytes): fast preset, CPU, a fresh process per "
        "prediction\n\n" + markdown_table(header, rows, align="llrrrrrrr")
    )


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = bench_parser(
        "Benchmark streaming prediction: throughput, peak memory, seams; each part updates its "
        "own section.", PARTS, "Folder for scenes and outputs, kept (default: temporary).",
    )  # fmt: skip
    add = parser.add_argument
    add("--size", type=int, help="Throughput scene side (default 4096; quick 2048).")
    add("--tile", type=int, default=256, help="Training tile of the random bundle (parts 1, 2): "
        "the recipe's tile.")  # fmt: skip
    add("--repeats", type=int, help="Runs per throughput variant (default 3; quick 1).")
    add("--memory-sizes", type=int, nargs="+", help="Our memory runs' scene sides.")
    add("--recipe-sizes", type=int, nargs="*", help="The recipe's memory runs' scene sides.")
    add("--trained", type=Path, default=TRAINED, help="Bundle of the seams part.")
    add("--seams-scenes", type=Path, nargs="+", help="Scenes of the seams part, pooled.")
    add("--seams-label", help="Names a seams run; its own section predict-seams-LABEL.")
    add("--seams-mosaic", type=int, help="Pack the --seams-scenes' centres into one mosaic "
        "of this side (px), not pooled apart (a scene under a window has no seam).")  # fmt: skip
    add("--child", choices=["ours", "recipe"], help=argparse.SUPPRESS)
    for name in ("--child-bundle", "--child-scene", "--child-out"):
        add(name, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.size = args.size or (2048 if args.quick else 4096)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.memory_sizes = args.memory_sizes or ([2048, 4096] if args.quick else [2048, 8192, 20000])
    if args.recipe_sizes is None:
        args.recipe_sizes = [2048] if args.quick else [2048, 8192]
    return args


TITLES = {"throughput": "part 1: throughput", "memory": "part 2: peak memory",
          "seams": "part 3: seams"}  # fmt: skip
LOAD = " (other jobs share the cores; times are wall clock, compare the ratios)"
INTRO = "## Prediction: throughput, peak memory, seams (`bench/predict.py`)"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    tune_malloc()  # as jmlgeo does (its children and Dask workers too)
    if args.child:
        return child_main(args)
    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
    import torch  # noqa: F401 - so that machine_description names a GPU when one is used

    versions = package_versions(["torch", "torchgeo", "rasterio", "segmentation-models-pytorch"])
    versions += f"; GDAL {rasterio.__gdal_version__}"
    with work_folder(args.work, "jmlgeo-bench-predict-") as work:
        for part in (p for p in PARTS if p in args.parts):
            results, run = Results(), Run()
            parts = {"throughput": part_throughput, "memory": part_memory, "seams": part_seams}
            parts[part](args, work, results)
            print(f"\n{part}: {run.minutes:.1f} min", flush=True)
            if args.no_update:
                continue
            name, title = f"{SECTION}-{part}", f"Prediction, {TITLES[part]}"
            if part == "seams" and args.seams_label:
                name = f"{name}-{re.sub(r'[^a-z0-9]+', '-', args.seams_label.lower()).strip('-')}"
                title = f"{title}, {args.seams_label}"
            head = run.head(versions, f"this part took {run.minutes:.1f} min", load=LOAD)
            blocks = [block.replace("### ", "#### ", 1) for block in results.blocks]
            section = "\n\n".join([f"### {title} (`bench/predict.py`)", head, *blocks])
            update_section(SECTION, INTRO, args.output)
            # the parts' sections follow the intro in PARTS order, whichever ran first
            before = [SECTION, *(f"{SECTION}-{p}" for p in PARTS[: PARTS.index(part) + 1])]
            after = [b for b in reversed(before) if b != name]
            log(f"updated {update_section(name, section, args.output, after=after)} ({name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
