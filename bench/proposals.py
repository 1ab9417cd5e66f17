"""Benchmark of the box proposals (BOX, dense CRF, GrabCut) on the real dev data.

Parts: ``quality`` (NWPU VHR-10 train, the iSAID samples and the SpaceNet tile against their true
masks), ``speed`` (1 vs 2 workers on an NWPU subset), ``caps`` (``max_side`` on the largest
boxes), ``crf`` (``fg_prob`` x ``bilateral_sxy`` sweep). A run of all four updates the
``proposals`` section of BENCHMARKS.md, where the method and the readings are written.

    .venv/bin/python bench/proposals.py [--quick] [--limit N] [--parts quality,crf] [--no-update]
"""

from __future__ import annotations

import argparse
import filecmp
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from jmlnet_geo.io.vector import SceneBoxes
from jmlnet_geo.proposals.compose import SceneSummary, pixel_boxes, write_proposals
from jmlnet_geo.proposals.crop import crop_window
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

#: Caps compared in part 3; 4096 is larger than any crop of the dev data (uncapped).
CAPS = (128, 256, 512, 4096)
UNCAPPED = 4096

#: CRF sweep of part 4 (the defaults are fg_prob 0.6, bilateral_sxy 40).
FG_PROBS = (0.55, 0.6, 0.7, 0.8)
SXYS = (10.0, 20.0, 40.0, 80.0)
QUICK_FG_PROBS = (0.6, 0.7)
QUICK_SXYS = (10.0, 20.0)

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


def points(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:+.1f}"


def options_text(options: ProposalOptions) -> str:
    """The proposal settings that matter here, as they are in the library."""
    crf = options.crf
    return (
        f"max_side {options.max_side}, margin {options.margin:g}, min_fraction "
        f"{options.min_fraction:g}; CRF fg_prob {crf.fg_prob:g}, bilateral_sxy "
        f"{crf.bilateral_sxy:g}, srgb {crf.bilateral_srgb:g}, compat {crf.bilateral_compat:g}, "
        f"{crf.iterations} iterations; GrabCut {options.grabcut.iterations} iterations"
    )


# --- the four parts ---------------------------------------------------------------------------


def part_quality(
    datasets: Sequence[Dataset], args, work: Path, results: Results
) -> dict[str, dict[str, Score]]:
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
        f"### 1. Proposal quality against the true masks ({options_text(ProposalOptions())}; "
        f"{args.workers} workers)\n\n"
        f"Proposals with the library defaults ({options_text(ProposalOptions())}) from the "
        "true boxes, scored against the true masks; "
        "confusion matrices summed over the images of each data set. mIoU: mean IoU over the "
        "classes present, background included; object mIoU: the same without background; mean "
        "box IoU: IoU of the box's class inside each box, averaged over boxes. Fell back: boxes "
        "whose mask was empty or degenerate, so the filled box was used. ms/box: the method "
        f"alone (`MethodSummary.seconds` / boxes), {args.workers} workers.\n\n"
        + markdown_table(header, summary_rows, align="lrrlrrrrr")
    )
    results.add("\n".join(per_class))
    return {ds.name: found for ds, found in zip(datasets, outcomes, strict=True)}


def part_speed(nwpu: Dataset, args, work: Path, results: Results) -> dict[str, Score]:
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
    summaries, out = runs[1][0], runs[1][3]
    return {m: score_folder(nwpu, nwpu.scene_boxes, out, m, summaries) for m in methods}


def largest_boxes(
    datasets: Sequence[Dataset], count: int, options: ProposalOptions
) -> tuple[list[tuple[int, int, int, int]], dict[str, int]]:
    """Up to ``count`` boxes spread evenly by crop size over those whose crop exceeds the cap.

    Returns:
        ``(crop side, data set, scene, box)`` index tuples, and the candidates per data set.
    """
    candidates = []
    for d, ds in enumerate(datasets):
        for s, sb in enumerate(ds.scene_boxes):
            for i, b in enumerate(pixel_boxes(sb)):
                c0, r0, c1, r1 = crop_window(sb.scene, b, options.margin, options.min_margin)
                if max(c1 - c0, r1 - r0) > options.max_side:
                    candidates.append((max(c1 - c0, r1 - r0), d, s, i))
    candidates.sort()
    per_source = {ds.name: sum(c[1] == d for c in candidates) for d, ds in enumerate(datasets)}
    if not candidates:
        return [], per_source
    spots = np.linspace(0, len(candidates) - 1, min(count, len(candidates)))
    return [candidates[k] for k in np.unique(spots.round().astype(int))], per_source


def part_caps(datasets: Sequence[Dataset], args, work: Path, results: Results) -> None:
    base = ProposalOptions()
    chosen, per_source = largest_boxes(datasets, args.cap_boxes, base)
    if not chosen:
        results.add(f"### 3. Capped resolution\n\nNo crop is longer than {base.max_side} px.\n")
        return
    log(f"caps: {len(chosen)} of {sum(per_source.values())} boxes with crops > {base.max_side}")
    jobs = []
    for d, ds in enumerate(datasets):
        picked: dict[int, list[int]] = {}
        for _, dd, s, i in chosen:
            if dd == d:
                picked.setdefault(s, []).append(i)
        if picked:
            jobs.append(
                (ds, [ds.scene_boxes[s].select(sorted(i)) for s, i in sorted(picked.items())])
            )
    tallies: dict[tuple[str, int], Score] = {}  # boxes pooled over the data sets
    for cap in CAPS:
        methods = ["box", "crf", "grabcut"] if cap == base.max_side else ["crf", "grabcut"]
        options = replace(base, max_side=cap)
        outcomes, wall = run_and_score(jobs, methods, work / f"caps_{cap}", options, args.workers)
        log(f"caps: max_side={cap} took {wall:.1f} s")
        for found in outcomes:
            for m, score in found.items():
                tallies.setdefault((m, cap), Score(np.zeros((0, 0)))).add(score)
    rows = []
    for m in ("crf", "grabcut"):
        ref = tallies[(m, base.max_side)]
        for cap in CAPS:
            t = tallies[(m, cap)]
            rows.append([
                METHOD_LABEL[m], f"{cap} (uncapped)" if cap == UNCAPPED else cap,
                pct(t.mean_box_iou), points(t.mean_box_iou - ref.mean_box_iou),
                pct(t.pooled_box_iou), share(t.fallbacks, t.boxes), ms(t.per_box),
                f"{t.per_box / ref.per_box:.2f}",
            ])  # fmt: skip
    b = tallies[("box", base.max_side)]
    rows.append(
        ["BOX", "any", pct(b.mean_box_iou), "", pct(b.pooled_box_iou), "", ms(b.per_box), ""]
    )
    sides = [c[0] for c in chosen]
    sources = ", ".join(f"{name} {n}" for name, n in per_source.items())
    header = (
        "method | max_side | mean box IoU % | vs 512 | pooled IoU % | fell back | ms/box | "
        "time vs 512"
    )
    results.add(
        "### 3. Capped resolution (`ProposalOptions.max_side`)\n\n"
        f"{len(chosen)} boxes spread by crop size over the {sum(per_source.values())} whose crop "
        f"exceeds {base.max_side} px ({sources}); crop sides {min(sides)}-{max(sides)} px, median "
        f"{int(np.median(sides))}; {args.workers} workers.\n\n"
        + markdown_table(header, rows, align="lrrrrrrr")
    )


def part_crf(
    nwpu: Dataset,
    others: Sequence[Dataset],
    reference: dict[str, dict[str, Score]],
    args,
    work: Path,
    results: Results,
) -> None:
    datasets = [nwpu, *others]
    base = ProposalOptions()
    default = (base.crf.fg_prob, base.crf.bilateral_sxy)
    grid = [(f, s) for f in args.fg_probs for s in args.sxys]
    if default not in grid:
        grid.insert(0, default)
    log(f"crf: {len(grid)} settings on {len(nwpu.scene_boxes)} NWPU images and the others")
    jobs = [(ds, ds.scene_boxes) for ds in datasets]
    found: dict[tuple[float, float], list[Score]] = {}
    for fg, sxy in grid:
        options = replace(base, crf=replace(base.crf, fg_prob=fg, bilateral_sxy=sxy))
        outcomes, _ = run_and_score(jobs, ["crf"], work / "crf", options, args.workers)
        found[(fg, sxy)] = [o["crf"] for o in outcomes]
        first = found[(fg, sxy)][0]
        log(
            f"crf: fg_prob={fg:g} sxy={sxy:g}: NWPU mIoU {pct(first.miou)}, "
            f"{first.fallbacks} fell back"
        )
    missing = [ds for ds in datasets if ds.name not in reference]
    if missing:
        log(f"crf: BOX and GrabCut references for {', '.join(ds.name for ds in missing)}")
        refs, _ = run_and_score(
            [(ds, ds.scene_boxes) for ds in missing], ["box", "grabcut"], work / "crf_ref", base,
            args.workers,
        )  # fmt: skip
        reference = {**reference, **{ds.name: r for ds, r in zip(missing, refs, strict=True)}}
    by_nwpu = max(grid, key=lambda k: found[k][0].miou)
    by_mean = max(grid, key=lambda k: np.mean([o.miou for o in found[k]]))
    ref_miou = found[default][0].miou

    def cells(outcomes: Sequence[Score]) -> list[str]:
        n = outcomes[0]
        out = [pct(n.miou), points(n.miou - ref_miou), pct(n.mean_box_iou)]
        out += [share(n.fallbacks, n.boxes), ms(n.per_box)]
        for o in outcomes[1:]:
            out += [pct(o.miou), share(o.fallbacks, o.boxes)]
        out.append(pct(float(np.mean([o.miou for o in outcomes]))))
        return out

    rows = []
    for key in grid:
        marks = ((default, "default"), (by_nwpu, "**best on NWPU**"), (by_mean, "best mean"))
        notes = ", ".join(note for k, note in marks if k == key)
        rows.append([f"{key[0]:g}", f"{key[1]:g}", *cells(found[key]), notes])
    for m in ("box", "grabcut"):
        cells_m = cells([reference[ds.name][m] for ds in datasets])
        rows.append([f"({METHOD_LABEL[m]})", "", *cells_m, "reference"])
    header = ["fg_prob", "bilateral_sxy", "NWPU mIoU %", "vs default", "NWPU mean box IoU %",
              "NWPU fell back", "NWPU ms/box"]  # fmt: skip
    for ds in others:
        header += [f"{ds.name} mIoU %", f"{ds.name} fell back"]
    header += ["mean mIoU %", ""]
    results.add(
        "### 4. CRF settings (`CRFOptions.fg_prob` x `bilateral_sxy`)\n\n"
        f"{len(nwpu.scene_boxes)} NWPU images ({args.subset_text}, {nwpu.boxes} boxes), the iSAID "
        f"images and the SpaceNet tile; {args.workers} workers.\n\n"
        + markdown_table(header, rows, align="r" * (len(header) - 1) + "l")
    )
    results.add(size_table(nwpu, by_nwpu[0], args.sxys, found, reference[nwpu.name]))


#: Box size classes (longer side, pixels) of the CRF sweep's per-size table.
SIZE_EDGES = (48, 96, 192)


def size_table(
    nwpu: Dataset,
    fg_prob: float,
    sxys: Sequence[float],
    found: dict[tuple[float, float], list[Score]],
    reference: dict[str, Score],
) -> str:
    """Mean box IoU on NWPU by box size, for each bilateral_sxy at one fg_prob."""
    sides = np.array(
        [max(c1 - c0, r1 - r0) for sb in nwpu.scene_boxes for c0, r0, c1, r1 in pixel_boxes(sb)]
    )
    bins = np.digitize(sides, SIZE_EDGES)
    edges = (0, *SIZE_EDGES, None)
    labels = [
        f"{lo}-{hi - 1} px ({int((bins == k).sum())})"
        if hi
        else f">= {lo} px ({int((bins == k).sum())})"
        for k, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True))
    ]

    def row(name: str, outcome: Score) -> list[str]:
        ious = np.array(outcome.box_ious, np.float64)
        return [
            name,
            *(
                pct(float(np.nanmean(ious[bins == k]))) if (bins == k).any() else "n/a"
                for k in range(len(labels))
            ),
        ]

    rows = [
        row(f"CRF sxy {sxy:g}", found[(fg_prob, sxy)][0]) for sxy in sxys if (fg_prob, sxy) in found
    ]
    rows += [row(METHOD_LABEL[m], reference[m]) for m in ("box", "grabcut")]
    return (
        f"NWPU mean box IoU (%) by box size (longer side; boxes in brackets), CRF at fg_prob "
        f"{fg_prob:g}:\n\n" + markdown_table(["method", *labels], rows)
    )


# --- main -------------------------------------------------------------------------------------

PARTS = ("quality", "speed", "caps", "crf")


def parse_args(argv: Sequence[str] | None = None):
    parser = bench_parser(
        "Benchmark BOX / CRF / GrabCut proposals on the real dev data.",
        PARTS,
        "Folder for intermediate files, kept (default: a temporary folder, deleted).",
    )
    add = parser.add_argument
    add("--data", type=Path, default=DEFAULT_DATA, help="The shared data folder.")
    add("--limit", type=int, help="Only the first N NWPU images in sorted order (default: all "
        "520); the speed and CRF parts take their subset from these.")  # fmt: skip
    add("--subset", type=int, default=100, help="NWPU images (evenly spaced) of parts 2 and 4.")
    add("--cap-boxes", type=int, default=40, help="Largest boxes compared in the max_side part.")
    add("--workers", type=int, default=2, help="Processes for the quality, cap and CRF parts.")
    add("--fg-probs", type=_floats, help="CRF sweep fg_prob values, comma-separated.")
    add("--sxys", type=_floats, help="CRF sweep bilateral_sxy values, comma-separated.")
    args = parser.parse_args(argv)
    grid = (QUICK_FG_PROBS, QUICK_SXYS) if args.quick else (FG_PROBS, SXYS)
    args.fg_probs = args.fg_probs or grid[0]
    args.sxys = args.sxys or grid[1]
    if args.quick:  # NWPU --limit 40, smaller sweeps
        args.limit = args.limit or 40
        args.subset = min(args.subset, 40)
        args.cap_boxes = min(args.cap_boxes, 12)
    if args.limit is not None:
        args.subset = min(args.subset, args.limit)
    return args


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give numbers separated by commas") from None


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
        nwpu_all = load_nwpu(args.data, work)
        nwpu = nwpu_all.head(args.limit) if args.limit else nwpu_all
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
        reference: dict[str, dict[str, Score]] = {}
        for part in (p for p in PARTS if p in args.parts):
            start = time.perf_counter()
            if part == "quality":
                found = part_quality([nwpu, isaid, spacenet], args, work, results)
                reference.update({k: v for k, v in found.items() if k != nwpu.name})
            elif part == "speed":
                reference[small.name] = part_speed(small, args, work, results)
            elif part == "caps":
                part_caps([nwpu_all, isaid, spacenet], args, work, results)
            else:
                part_crf(small, [isaid, spacenet], reference, args, work, results)
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
        load=SHARED_CORES,
    )
    title = "## Proposals: BOX, dense CRF, GrabCut (`bench/proposals.py`)"
    section = "\n\n".join([title, head, *results.blocks])
    log(f"updated {update_section(SECTION, section, args.output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
