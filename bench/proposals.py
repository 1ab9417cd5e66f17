"""Benchmark of the box proposals (BOX, dense CRF, GrabCut) on the real dev data.

Parts: ``quality`` (NWPU VHR-10 train, the iSAID samples and the SpaceNet tile against their true
masks) and ``speed`` (1 vs 2 workers on an NWPU subset). A run of both updates the ``proposals``
section of BENCHMARKS.md, where the method and the readings are written. The settled ``caps``
(``max_side``) and ``crf`` (``CRFOptions``) sweeps left the script; their tables stay in
BENCHMARKS.md and the script in git history.

    .venv/bin/python bench/proposals.py [--quick] [--limit N] [--parts quality] [--no-update]
"""

from __future__ import annotations

import filecmp
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jmlnet_geo.io.vector import SceneBoxes
from jmlnet_geo.proposals.compose import SceneSummary, write_proposals
from jmlnet_geo.proposals.options import CLASSIC_METHODS, ProposalOptions

if __package__ in (None, ""):  # run as a file (python bench/proposals.py)
    sys.path.insert(0, os.fspath(Path(__file__).resolve().parents[1]))

from bench.data import Dataset, Score, load_isaid, load_nwpu, load_spacenet, score_folder
from bench.report import (
    REPO,
    SHARED_CORES,
    Results,
    Run,
    bench_parser,
    cpu_seconds,
    elapsed,
    load_text,
    log,
    ms,
    package_versions,
    pct,
    quiet_warnings,
    share,
    update_section,
    work_folder,
)
from jmlnet_geo.evaluate.report import markdown_table

SECTION = "proposals"
DEFAULT_DATA = REPO.parent / "shared" / "data"

METHOD_LABEL = {"box": "BOX", "crf": "CRF", "grabcut": "GrabCut"}

# --- running and scoring ----------------------------------------------------------------------

Job = tuple[Dataset, Sequence[SceneBoxes]]


def run_proposals(
    jobs: Sequence[Job], methods: Sequence[str], out: Path, options: ProposalOptions, workers: int
) -> tuple[list[list[SceneSummary]], float, float]:
    """One ``write_proposals`` call (one worker pool) for the scenes of one or more data sets.

    Scenes of several data sets share the call to save the pool's start-up; their class ids
    then mean different things, so the rasters' class-name tag is generic (scoring uses each
    data set's names). Returns the summaries of each job's scenes, the call's wall seconds and
    the CPU seconds of this process and its workers during the call.
    """
    shutil.rmtree(out, ignore_errors=True)
    scene_boxes = [sb for _, sbs in jobs for sb in sbs]
    if len(jobs) == 1:
        names = list(jobs[0][0].class_names)
    else:
        names = [f"class {i}" for i in range(1, max(len(ds.class_names) for ds, _ in jobs) + 1)]
    cpu_start, start = cpu_seconds(), time.perf_counter()
    summaries = write_proposals(scene_boxes, names, methods, out, options, workers=workers)
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    ends = np.cumsum([len(sbs) for _, sbs in jobs])
    return [summaries[e - len(sbs) : e] for e, (_, sbs) in zip(ends, jobs, strict=True)], wall, cpu


def run_and_score(
    jobs: Sequence[Job], methods: Sequence[str], out: Path, options: ProposalOptions, workers: int
) -> tuple[list[dict[str, Score]], float]:
    """Proposals of ``methods`` for each job, scored: one ``{method: Score}`` per job, and the
    call's wall seconds."""
    summaries, wall, _ = run_proposals(jobs, methods, out, options, workers)
    found = [
        {m: score_folder(ds, sbs, out, m, s) for m in methods}
        for (ds, sbs), s in zip(jobs, summaries, strict=True)
    ]
    return found, wall


def seconds_per_box(summaries: Sequence[SceneSummary], method: str) -> float:
    boxes = sum(s.methods[method].boxes for s in summaries)
    return sum(s.methods[method].seconds for s in summaries) / boxes if boxes else math.nan


def identical_outputs(a: Path, b: Path) -> tuple[bool, int]:
    """Whether every GeoTIFF in ``a`` has a byte-identical twin in ``b`` (and the count)."""
    names = sorted(p.name for p in a.glob("*.tif"))
    same = names == sorted(p.name for p in b.glob("*.tif"))
    same = same and all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)
    return same, len(names)


# --- formatting -------------------------------------------------------------------------------


def options_text(options: ProposalOptions) -> str:
    """The proposal settings that matter here, as they are in the library."""
    crf = options.crf
    return (
        f"max_side {options.max_side}, margin {options.margin:g}, min_fraction "
        f"{options.min_fraction:g}; CRF fg_prob {crf.fg_prob:g}, bilateral_sxy "
        f"{crf.bilateral_sxy:g}, srgb {crf.bilateral_srgb:g}, compat {crf.bilateral_compat:g}, "
        f"{crf.iterations} iterations; GrabCut {options.grabcut.iterations} iterations"
    )


# --- the two parts ----------------------------------------------------------------------------


def part_quality(datasets: Sequence[Dataset], args, work: Path, results: Results) -> None:
    methods = list(CLASSIC_METHODS)
    for ds in datasets:
        log(f"quality: {ds.name}, {len(ds.scene_boxes)} images, {ds.boxes} boxes")
    jobs = [(ds, ds.scene_boxes) for ds in datasets]
    outcomes, _ = run_and_score(jobs, methods, work / "quality", ProposalOptions(), args.workers)
    summary_rows, per_class = [], []
    for ds, found in zip(datasets, outcomes, strict=True):
        summary_rows += [
            [ds.name, len(ds.scene_boxes), s.boxes, METHOD_LABEL[m], pct(s.miou),
             pct(s.object_miou), pct(s.mean_box_iou), share(s.fallbacks, s.boxes), ms(s.per_box)]
            for m, s in found.items()
        ]  # fmt: skip
        header = ["method", "background", *ds.class_names, "mIoU"]
        rows = [[METHOD_LABEL[m], *map(pct, s.iou), pct(s.miou)] for m, s in found.items()]
        per_class.append(f"{ds.name}, IoU per class (%):\n\n" + markdown_table(header, rows))
    header = (
        "data set | images | boxes | method | mIoU % | object mIoU % | mean box IoU % | "
        "fell back to box | ms/box"
    )
    results.add(
        "### 1. Proposal quality against the true masks\n\n"
        + markdown_table(header, summary_rows, align="lrrlrrrrr")
    )
    results.add("\n".join(per_class))


def part_speed(nwpu: Dataset, args, work: Path, results: Results) -> None:
    methods = list(CLASSIC_METHODS)
    jobs = [(nwpu, nwpu.scene_boxes)]
    runs, loads = {}, {}
    for workers in (1, 2):
        loads[workers] = load_text()
        log(f"speed: {len(nwpu.scene_boxes)} NWPU images, {nwpu.boxes} boxes, {workers} worker(s)")
        out = work / f"speed_w{workers}"
        (summaries,), wall, cpu = run_proposals(jobs, methods, out, ProposalOptions(), workers)
        runs[workers] = summaries, wall, cpu, out
        log(f"speed: {workers} worker(s) took {wall:.1f} s")
    same, files = identical_outputs(runs[1][3], runs[2][3])
    wall1 = runs[1][1]
    rows = [
        [workers, f"{wall:.1f}", f"{nwpu.boxes / wall:.2f}", f"{wall1 / wall:.2f}", f"{cpu:.1f}",
         f"{cpu / wall:.2f}", *(ms(seconds_per_box(summaries, m)) for m in methods),
         loads[workers]]
        for workers, (summaries, wall, cpu, _) in runs.items()
    ]  # fmt: skip
    header = [
        "workers", "wall s", "boxes/s", "ratio to 1 worker", "CPU s", "cores busy",
        *(f"{METHOD_LABEL[m]} ms/box" for m in methods), "load average before",
    ]  # fmt: skip
    ratio = wall1 / runs[2][1]
    results.add(
        f"### 2. Speed, 1 vs 2 workers: {len(nwpu.scene_boxes)} NWPU images ({args.subset_text}, "
        f"{nwpu.boxes} boxes)\n\n"
        + markdown_table(header, rows, align="rrrrrrrrrl")
        + f"\nboxes/s with 2 workers / with 1 worker: **{ratio:.2f}**. Rasters byte-identical "
        f"between 1 and 2 workers: **{'yes' if same else 'NO'}** ({files} files compared).\n"
    )


# --- main -------------------------------------------------------------------------------------

PARTS = ("quality", "speed")


def parse_args(argv: Sequence[str] | None = None):
    parser = bench_parser(
        "Benchmark BOX / CRF / GrabCut proposals on the real dev data.",
        PARTS,
        "Folder for intermediate files, kept (default: a temporary folder, deleted).",
    )
    add = parser.add_argument
    add("--data", type=Path, default=DEFAULT_DATA, help="The shared data folder.")
    add("--limit", type=int, help="Only the first N NWPU images in sorted order (default: all "
        "520); the speed part takes its subset from these.")  # fmt: skip
    add("--subset", type=int, default=100, help="NWPU images (evenly spaced) of part 2.")
    add("--workers", type=int, default=2, help="Processes of the quality part.")
    args = parser.parse_args(argv)
    if args.quick:  # NWPU --limit 40
        args.limit = args.limit or 40
        args.subset = min(args.subset, 40)
    if args.limit is not None:
        args.subset = min(args.subset, args.limit)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    needed = ["nwpu_vhr10_train", "isaid_devkit_samples", "spacenet_solaris_sample"]
    missing = [n for n in needed if not (args.data / n).is_dir()]
    if missing:
        print(f"skipped: {args.data} lacks {', '.join(missing)} (the shared dev data); nothing "
              "measured")  # fmt: skip
        return 0
    quiet_warnings()
    run = Run()  # now: the library is imported at the start
    results = Results()
    with work_folder(args.work, "jmlgeo-bench-proposals-") as work:
        nwpu = load_nwpu(args.data, work)
        nwpu = nwpu.head(args.limit) if args.limit else nwpu
        small = nwpu.spread(args.subset)
        args.subset_text = (
            f"evenly spaced over the {len(nwpu.scene_boxes)} in sorted order"
            if len(small.scene_boxes) < len(nwpu.scene_boxes)
            else "all of part 1"
        )
        isaid = load_isaid(args.data, work)
        spacenet = load_spacenet(args.data, work)
        log(f"data: NWPU {len(nwpu.scene_boxes)} images ({nwpu.boxes} boxes), "
            f"iSAID {isaid.boxes} boxes, SpaceNet {spacenet.boxes} boxes")  # fmt: skip
        for part in (p for p in PARTS if p in args.parts):
            start = time.perf_counter()
            if part == "quality":
                part_quality([nwpu, isaid, spacenet], args, work, results)
            else:
                part_speed(small, args, work, results)
            results.timings.append(f"{part} {(time.perf_counter() - start) / 60:.1f}")
    runtime, cpu_total = elapsed(), cpu_seconds()
    print(f"\nRuntime {runtime / 60:.1f} min, CPU "
          f"{cpu_total / 60:.1f} min", flush=True)  # fmt: skip
    if args.no_update or set(args.parts) != set(PARTS):
        log(f"{args.output} not updated (--no-update or a subset of --parts)")
        return 0
    versions = package_versions(["numpy", "opencv-python-headless", "pydensecrf2", "rasterio"])
    head = run.head(
        versions,
        f"runtime {runtime / 60:.1f} min ({', '.join(results.timings)} min), CPU time "
        f"{cpu_total / 60:.1f} min (this process and its workers)",
        f"- Data: ../shared/data: NWPU VHR-10 train ({len(nwpu.scene_boxes)} images), iSAID "
        f"samples ({len(isaid.scene_boxes)} images), SpaceNet tile (1 GeoTIFF)",
        f"- Proposal options (the library defaults): {options_text(ProposalOptions())}; "
        f"{args.workers} workers in part 1",
        load=SHARED_CORES,
    )
    title = "## Proposals: BOX, dense CRF, GrabCut (`bench/proposals.py`)"
    section = "\n\n".join([title, head, *results.blocks])
    log(f"updated {update_section(SECTION, section, args.output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
