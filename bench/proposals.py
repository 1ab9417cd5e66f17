"""Benchmark of the box proposals (BOX, dense CRF, GrabCut) on the real dev data.

Four measurements, printed as Markdown tables and written to the ``proposals`` section of
BENCHMARKS.md (with the command, the machine and the date):

1. Quality: proposals from the true boxes of every image of NWPU VHR-10 train (COCO bbox ->
   ``jmlnet_geo.io.importers.import_coco``), the three iSAID images (tight box of each instance)
   and the SpaceNet GeoTIFF (envelope of each building polygon), scored against the true masks:
   confusion matrices summed over the images of a data set, mIoU (background included), IoU per
   class, mean IoU of the object inside each box, and the boxes that fell back to the BOX mask.
2. Speed: seconds per box per method and boxes per second (wall clock, all three methods) with
   1 and 2 worker processes on the same NWPU subset, and whether the rasters are byte-identical.
3. Capped resolution: on the largest boxes (crop longer than 512 px), object IoU and time per box
   of CRF and GrabCut with ``max_side`` 128, 256, 512 (the default) and 4096 (uncapped).
4. CRF settings: ``fg_prob`` x ``bilateral_sxy`` sweep on an NWPU subset plus the iSAID and
   SpaceNet images (mIoU and fallbacks), with BOX and GrabCut on the same images for reference.

The NWPU subset of parts 2 and 4 (``--subset``, default 100 images) is spread evenly over the
sorted file list, because NWPU files are grouped by class (the first 100 are mostly airplanes).

The data come from ``../shared/data`` (see its README.md); the script exits without writing
anything when that folder is absent. Intermediate files (box layers, truth rasters, proposals)
go to ``--work`` (default: a temporary folder under /tmp, deleted at the end).

Commands, from the repository root::

    .venv/bin/python bench/proposals.py            # full run (see below)
    .venv/bin/python bench/proposals.py --quick    # NWPU --limit 40, smaller sweeps: ~4-8 min
    .venv/bin/python bench/proposals.py --limit 100 --no-update   # print only, no BENCHMARKS.md
    .venv/bin/python bench/proposals.py --parts crf --sxys 10,20 --fg-probs 0.6,0.7   # a probe

Only a run of all four parts updates BENCHMARKS.md (``--parts`` picks some for a quick look).
The full run needs about 23 CPU-minutes (2 workers): 37 min wall clock were measured on 2 cores
shared with other jobs (load average 4-7), roughly 15 min are expected on 2 idle cores; the CRF
sweep (16 settings) is more than half of it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import filecmp
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from rasterio.errors import NotGeoreferencedWarning

from jmlnet_geo.io.vector import SceneBoxes
from jmlnet_geo.proposals.compose import (
    CLASSIC_METHODS,
    ProposalOptions,
    SceneSummary,
    pixel_boxes,
    write_proposals,
)

if __package__ in (None, ""):  # run as a file (python bench/proposals.py)
    sys.path.insert(0, os.fspath(Path(__file__).resolve().parents[1]))

from bench.data import Dataset, Score, load_isaid, load_nwpu, load_spacenet, score_folder
from bench.report import (
    REPO,
    Results,
    code_version,
    command_line,
    cpu_seconds,
    elapsed,
    load_text,
    log,
    machine_description,
    markdown_table,
    ms,
    package_versions,
    pct,
    share,
    update_section,
)

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


@dataclass
class Run:
    """The summaries of one data set's scenes from a ``write_proposals`` call."""

    summaries: list[SceneSummary]
    wall: float  # of the whole call (which may have covered other data sets too)
    cpu: float  # CPU seconds of this process and its workers during the call
    out: Path

    def boxes(self, method: str) -> int:
        return sum(s.methods[method].boxes for s in self.summaries)

    def fallbacks(self, method: str) -> int:
        return sum(s.methods[method].fallbacks for s in self.summaries)

    def seconds_per_box(self, method: str) -> float:
        n = self.boxes(method)
        return sum(s.methods[method].seconds for s in self.summaries) / n if n else math.nan


Job = tuple["Dataset", Sequence[SceneBoxes]]


def run_proposals(
    jobs: Sequence[Job],
    methods: Sequence[str],
    out: Path,
    options: ProposalOptions,
    workers: int,
) -> list[Run]:
    """One ``write_proposals`` call (one worker pool) for the scenes of one or more data sets.

    Scenes of several data sets share the call to save the pool's start-up; their class ids
    then mean different things, so the rasters' class-name tag is generic (scoring uses each
    data set's names).
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
    runs, k = [], 0
    for _, sbs in jobs:
        runs.append(Run(summaries[k : k + len(sbs)], wall, cpu, out))
        k += len(sbs)
    return runs


@dataclass
class Outcome:
    """A method's proposals for a data set: scores and the run's counts."""

    score: Score
    run: Run
    method: str

    @property
    def fallbacks(self) -> int:
        return self.run.fallbacks(self.method)

    @property
    def boxes(self) -> int:
        return self.run.boxes(self.method)

    @property
    def per_box(self) -> float:
        return self.run.seconds_per_box(self.method)


def run_and_score(
    jobs: Sequence[Job], methods: Sequence[str], out: Path, options: ProposalOptions, workers: int
) -> list[dict[str, Outcome]]:
    """Proposals of ``methods`` for each job, scored: one ``{method: Outcome}`` per job."""
    runs = run_proposals(jobs, methods, out, options, workers)
    return [
        {m: Outcome(score_folder(ds, sbs, run.out, m), run, m) for m in methods}
        for (ds, sbs), run in zip(jobs, runs, strict=True)
    ]


def identical_outputs(a: Path, b: Path) -> tuple[bool, int]:
    """Whether every GeoTIFF in ``a`` has a byte-identical twin in ``b`` (and the count)."""
    names = sorted(p.name for p in a.glob("*.tif"))
    same = names == sorted(p.name for p in b.glob("*.tif"))
    same = same and all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)
    return same, len(names)


def crop_side(sb: SceneBoxes, box: Sequence[int], options: ProposalOptions) -> int:
    """Longer side of the crop that ``read_crop`` takes around a box (before any shrinking)."""
    col0, row0, col1, row1 = box
    pad = max(options.min_margin, math.ceil(options.margin * max(col1 - col0, row1 - row0)))
    width = min(sb.scene.width, col1 + pad) - max(0, col0 - pad)
    height = min(sb.scene.height, row1 + pad) - max(0, row0 - pad)
    return max(width, height)


def subset(sb: SceneBoxes, keep: Sequence[int]) -> SceneBoxes:
    keep = np.asarray(keep, np.int64)
    return SceneBoxes(sb.scene, sb.xyxy[keep], sb.class_ids[keep], sb.features[keep])


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
) -> dict[str, dict[str, Outcome]]:
    methods = list(CLASSIC_METHODS)
    for ds in datasets:
        log(f"quality: {ds.name}, {len(ds.scene_boxes)} images, {ds.boxes} boxes")
    jobs = [(ds, ds.scene_boxes) for ds in datasets]
    outcomes = run_and_score(jobs, methods, work / "quality", ProposalOptions(), args.workers)
    summary_rows, per_class = [], []
    for ds, found in zip(datasets, outcomes, strict=True):
        for m in methods:
            o = found[m]
            summary_rows.append(
                [
                    ds.name,
                    len(ds.scene_boxes),
                    o.boxes,
                    METHOD_LABEL[m],
                    pct(o.score.miou),
                    pct(o.score.object_miou),
                    pct(o.score.mean_box_iou),
                    share(o.fallbacks, o.boxes),
                    ms(o.per_box),
                ]
            )
        header = ["method", "background", *ds.class_names, "mIoU"]
        rows = [
            [METHOD_LABEL[m], *(pct(v) for v in found[m].score.iou), pct(found[m].score.miou)]
            for m in methods
        ]
        per_class.append(f"{ds.name}, IoU per class (%):\n\n" + markdown_table(header, rows))
        miou = {m: found[m].score.miou for m in methods}
        ranking = " < ".join(
            f"{METHOD_LABEL[m]} {pct(miou[m])}" for m in sorted(miou, key=miou.get)
        )
        verdict = "holds" if miou["box"] < miou["crf"] <= miou["grabcut"] else "does not hold"
        results.findings.append(
            f"Quality, {ds.name}: mIoU {ranking}; the expected BOX < CRF <= GrabCut {verdict}."
        )
    header = [
        "data set",
        "images",
        "boxes",
        "method",
        "mIoU %",
        "object mIoU %",
        "mean box IoU %",
        "fell back to box",
        "ms/box",
    ]
    results.add(
        "### 1. Proposal quality against the true masks\n\n"
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


def part_speed(nwpu: Dataset, args, work: Path, results: Results) -> dict[str, Outcome]:
    methods = list(CLASSIC_METHODS)
    jobs = [(nwpu, nwpu.scene_boxes)]
    runs, loads = {}, {}
    for workers in (1, 2):
        loads[workers] = load_text()
        log(f"speed: {len(nwpu.scene_boxes)} NWPU images, {nwpu.boxes} boxes, {workers} worker(s)")
        (runs[workers],) = run_proposals(
            jobs, methods, work / f"speed_w{workers}", ProposalOptions(), workers
        )
        log(f"speed: {workers} worker(s) took {runs[workers].wall:.1f} s")
    same, files = identical_outputs(runs[1].out, runs[2].out)
    rows = []
    for workers, run in runs.items():
        rows.append(
            [
                workers,
                f"{run.wall:.1f}",
                f"{nwpu.boxes / run.wall:.2f}",
                f"{runs[1].wall / run.wall:.2f}",
                f"{run.cpu:.1f}",
                f"{run.cpu / run.wall:.2f}",
                *(ms(run.seconds_per_box(m)) for m in methods),
                loads[workers],
            ]
        )
    header = [
        "workers",
        "wall s",
        "boxes/s",
        "ratio to 1 worker",
        "CPU s",
        "cores busy",
        *(f"{METHOD_LABEL[m]} ms/box" for m in methods),
        "load average before",
    ]
    ratio = runs[1].wall / runs[2].wall
    results.add(
        "### 2. Speed, 1 vs 2 workers\n\n"
        f"{len(nwpu.scene_boxes)} NWPU images ({args.subset_text}, {nwpu.boxes} boxes), all "
        "three methods in one `write_proposals` call, run one after the other. Wall clock "
        "includes reading, the worker pool's start-up, painting and writing the rasters; "
        "boxes/s counts each box once "
        "(all three methods done). CPU s: user + system time of this process and its workers; "
        "cores busy: CPU s / wall s. ms/box: the method alone, wall clock per process (it grows "
        "when processes compete for cores).\n\n"
        + markdown_table(header, rows, align="rrrrrrrrrl")
        + f"\nboxes/s with 2 workers / with 1 worker: **{ratio:.2f}**. Rasters byte-identical "
        f"between 1 and 2 workers: **{'yes' if same else 'NO'}** ({files} files compared).\n"
    )
    results.findings.append(
        f"Speed: {nwpu.boxes / runs[1].wall:.1f} boxes/s with 1 worker, "
        f"{nwpu.boxes / runs[2].wall:.1f} with 2 (x{ratio:.2f}; "
        f"{runs[2].cpu / runs[2].wall:.2f} cores busy); CPU per box "
        f"{ms(runs[1].cpu / nwpu.boxes)} vs {ms(runs[2].cpu / nwpu.boxes)} ms; rasters "
        f"byte-identical: {'yes' if same else 'no'}."
    )
    scored = {m: score_folder(nwpu, nwpu.scene_boxes, runs[1].out, m) for m in methods}
    return {m: Outcome(score, runs[1], m) for m, score in scored.items()}


@dataclass
class CapTally:
    """Per-box IoUs, pooled pixels, fallbacks and method time of one method at one cap."""

    ious: list[float] = field(default_factory=list)
    inter: int = 0
    union: int = 0
    fallbacks: int = 0
    boxes: int = 0
    seconds: float = 0.0

    def add(self, o: Outcome) -> None:
        self.ious += o.score.box_ious
        self.inter += o.score.box_inter
        self.union += o.score.box_union
        self.fallbacks += o.fallbacks
        self.boxes += o.boxes
        self.seconds += o.per_box * o.boxes if o.boxes else 0.0

    @property
    def mean_iou(self) -> float:
        return float(np.nanmean(self.ious)) if self.ious else math.nan

    @property
    def pooled_iou(self) -> float:
        return self.inter / self.union if self.union else math.nan

    @property
    def per_box(self) -> float:
        return self.seconds / self.boxes if self.boxes else math.nan


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
                side = crop_side(sb, b, options)
                if side > options.max_side:
                    candidates.append((side, d, s, i))
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
                (ds, [subset(ds.scene_boxes[s], sorted(i)) for s, i in sorted(picked.items())])
            )
    tallies: dict[tuple[str, int], CapTally] = {}
    for cap in CAPS:
        methods = ["box", "crf", "grabcut"] if cap == base.max_side else ["crf", "grabcut"]
        options = replace(base, max_side=cap)
        outcomes = run_and_score(jobs, methods, work / f"caps_{cap}", options, args.workers)
        log(f"caps: max_side={cap} took {outcomes[0][methods[0]].run.wall:.1f} s")
        for found in outcomes:
            for m, o in found.items():
                tallies.setdefault((m, cap), CapTally()).add(o)
    rows = []
    for m in ("crf", "grabcut"):
        ref = tallies[(m, base.max_side)]
        for cap in CAPS:
            t = tallies[(m, cap)]
            rows.append(
                [
                    METHOD_LABEL[m],
                    f"{cap} (uncapped)" if cap == UNCAPPED else cap,
                    pct(t.mean_iou),
                    points(t.mean_iou - ref.mean_iou),
                    pct(t.pooled_iou),
                    share(t.fallbacks, t.boxes),
                    ms(t.per_box),
                    f"{t.per_box / ref.per_box:.2f}",
                ]
            )
        up, low = tallies[(m, UNCAPPED)], tallies[(m, CAPS[0])]
        results.findings.append(
            f"Capping, {METHOD_LABEL[m]} ({len(chosen)} boxes with crops > {base.max_side} px): "
            f"max_side {base.max_side} vs uncapped: {points(ref.mean_iou - up.mean_iou)} points "
            f"of mean box IoU in {ref.per_box / up.per_box:.2f}x the time; {CAPS[0]} vs "
            f"{base.max_side}: {points(low.mean_iou - ref.mean_iou)} points in "
            f"{low.per_box / ref.per_box:.2f}x the time."
        )
    b = tallies[("box", base.max_side)]
    rows.append(["BOX", "any", pct(b.mean_iou), "", pct(b.pooled_iou), "", ms(b.per_box), ""])
    sides = [c[0] for c in chosen]
    sources = ", ".join(f"{name} {n}" for name, n in per_source.items())
    header = [
        "method",
        "max_side",
        "mean box IoU %",
        "vs 512",
        "pooled IoU %",
        "fell back",
        "ms/box",
        "time vs 512",
    ]
    results.add(
        "### 3. Capped resolution (`ProposalOptions.max_side`)\n\n"
        f"{len(chosen)} boxes spread evenly by crop size over the {sum(per_source.values())} "
        f"boxes whose crop is longer than {base.max_side} px (all NWPU images; candidates: "
        f"{sources}); crop sides {min(sides)}-{max(sides)} px, median {int(np.median(sides))}. "
        "Mean box IoU: IoU of the box's class inside each box, averaged over boxes; pooled "
        "IoU: the same over all their pixels. ms/box: the method alone; time relative to the "
        f"default cap ({base.max_side}); {args.workers} workers. CRF kernel widths are in crop "
        "pixels, so a cap also changes how wide they are relative to the object.\n\n"
        + markdown_table(header, rows, align="lrrrrrrr")
    )


def part_crf(
    nwpu: Dataset,
    others: Sequence[Dataset],
    reference: dict[str, dict[str, Outcome]],
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
    found: dict[tuple[float, float], list[Outcome]] = {}
    for fg, sxy in grid:
        options = replace(base, crf=replace(base.crf, fg_prob=fg, bilateral_sxy=sxy))
        found[(fg, sxy)] = [
            o["crf"] for o in run_and_score(jobs, ["crf"], work / "crf", options, args.workers)
        ]
        first = found[(fg, sxy)][0]
        log(
            f"crf: fg_prob={fg:g} sxy={sxy:g}: NWPU mIoU {pct(first.score.miou)}, "
            f"{first.fallbacks} fell back"
        )
    missing = [ds for ds in datasets if ds.name not in reference]
    if missing:
        log(f"crf: BOX and GrabCut references for {', '.join(ds.name for ds in missing)}")
        refs = run_and_score(
            [(ds, ds.scene_boxes) for ds in missing],
            ["box", "grabcut"],
            work / "crf_ref",
            base,
            args.workers,
        )
        reference = {**reference, **{ds.name: r for ds, r in zip(missing, refs, strict=True)}}
    by_nwpu = max(grid, key=lambda k: found[k][0].score.miou)
    by_mean = max(grid, key=lambda k: np.mean([o.score.miou for o in found[k]]))
    ref_miou = found[default][0].score.miou

    def cells(outcomes: Sequence[Outcome]) -> list[str]:
        n = outcomes[0]
        out = [
            pct(n.score.miou),
            points(n.score.miou - ref_miou),
            pct(n.score.mean_box_iou),
            share(n.fallbacks, n.boxes),
            ms(n.per_box),
        ]
        for o in outcomes[1:]:
            out += [pct(o.score.miou), share(o.fallbacks, o.boxes)]
        out.append(pct(float(np.mean([o.score.miou for o in outcomes]))))
        return out

    rows = []
    for key in grid:
        notes = []
        if key == default:
            notes.append("default")
        if key == by_nwpu:
            notes.append("**best on NWPU**")
        if key == by_mean:
            notes.append("best mean")
        rows.append([f"{key[0]:g}", f"{key[1]:g}", *cells(found[key]), ", ".join(notes)])
    for m in ("box", "grabcut"):
        rows.append(
            [
                f"({METHOD_LABEL[m]})",
                "",
                *cells([reference[ds.name][m] for ds in datasets]),
                "reference",
            ]
        )
    header = [
        "fg_prob",
        "bilateral_sxy",
        "NWPU mIoU %",
        "vs default",
        "NWPU mean box IoU %",
        "NWPU fell back",
        "NWPU ms/box",
    ]
    for ds in others:
        header += [f"{ds.name} mIoU %", f"{ds.name} fell back"]
    header += ["mean mIoU %", ""]
    best, dflt = found[by_nwpu], found[default]
    gain = points(best[0].score.miou - dflt[0].score.miou)
    edges = [
        f"{name} {value:g} is at the edge of the grid"
        for name, value, tried in (
            ("fg_prob", by_nwpu[0], args.fg_probs),
            ("bilateral_sxy", by_nwpu[1], args.sxys),
        )
        if len(tried) > 1 and value in (min(tried), max(tried))
    ]
    edge = f" The best {' and '.join(edges)}; the optimum may lie beyond." if edges else ""
    others_text = "; ".join(
        f"{ds.name} {pct(b.score.miou)} vs {pct(d.score.miou)}"
        for ds, b, d in zip(others, best[1:], dflt[1:], strict=True)
    )
    results.findings.append(
        f"CRF sweep: best on NWPU ({len(nwpu.scene_boxes)} images, {nwpu.boxes} boxes) fg_prob "
        f"{by_nwpu[0]:g}, bilateral_sxy {by_nwpu[1]:g}: mIoU {pct(best[0].score.miou)} vs "
        f"{pct(dflt[0].score.miou)} with the defaults ({gain} points), "
        f"{best[0].fallbacks} vs {dflt[0].fallbacks} of {best[0].boxes} boxes fell back; same "
        f"setting elsewhere: {others_text}. Best mean over the three data sets: fg_prob "
        f"{by_mean[0]:g}, bilateral_sxy {by_mean[1]:g}.{edge}"
    )
    results.add(
        "### 4. CRF settings (`CRFOptions.fg_prob` x `bilateral_sxy`)\n\n"
        f"{len(nwpu.scene_boxes)} NWPU images ({args.subset_text}, {nwpu.boxes} boxes), plus "
        "the iSAID "
        "images and the SpaceNet tile in full; other CRF options at their defaults (srgb "
        f"{base.crf.bilateral_srgb:g}, compat {base.crf.bilateral_compat:g}, "
        f"{base.crf.iterations} iterations), {args.workers} workers. BOX and GrabCut on the "
        "same images for reference. Mean mIoU: over the three data sets.\n\n"
        + markdown_table(header, rows, align="r" * (len(header) - 1) + "l")
    )
    results.add(size_table(nwpu, by_nwpu[0], args.sxys, found, reference[nwpu.name]))


#: Box size classes (longer side, pixels) of the CRF sweep's per-size table.
SIZE_EDGES = (48, 96, 192)


def size_table(
    nwpu: Dataset,
    fg_prob: float,
    sxys: Sequence[float],
    found: dict[tuple[float, float], list[Outcome]],
    reference: dict[str, Outcome],
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

    def row(name: str, outcome: Outcome) -> list[str]:
        ious = np.array(outcome.score.box_ious, np.float64)
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


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark BOX / CRF / GrabCut proposals on the real dev data.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="The shared data folder.")
    parser.add_argument(
        "--work",
        type=Path,
        help="Folder for intermediate files, kept (default: a temporary folder, deleted).",
    )
    parser.add_argument(
        "--quick", action="store_true", help="A few minutes: NWPU --limit 40, smaller sweeps."
    )
    parser.add_argument(
        "--limit",
        type=int,
        help="Only the first N NWPU images in sorted order (default: all 520); the speed and "
        "CRF parts take their subset from these.",
    )
    parser.add_argument(
        "--subset",
        type=int,
        default=100,
        help="NWPU images (evenly spaced) of the speed test and the CRF sweep.",
    )
    parser.add_argument(
        "--cap-boxes", type=int, default=40, help="Largest boxes compared in the max_side part."
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="Processes for the quality, cap and CRF parts."
    )
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help="Comma-separated parts to run; a subset does not update BENCHMARKS.md.",
    )
    parser.add_argument(
        "--fg-probs", type=_floats, help="CRF sweep fg_prob values, comma-separated."
    )
    parser.add_argument(
        "--sxys", type=_floats, help="CRF sweep bilateral_sxy values, comma-separated."
    )
    parser.add_argument("--no-update", action="store_true", help="Print the tables only.")
    parser.add_argument("--output", default="BENCHMARKS.md", help="Markdown file to update.")
    args = parser.parse_args(argv)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}")
    grid = (QUICK_FG_PROBS, QUICK_SXYS) if args.quick else (FG_PROBS, SXYS)
    args.fg_probs = args.fg_probs or grid[0]
    args.sxys = args.sxys or grid[1]
    if args.quick:
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
        print(
            f"skipped: {args.data} lacks {', '.join(missing)} (the shared dev data); "
            "nothing measured"
        )
        return 0
    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
    warnings.filterwarnings("ignore", message=".*no georeferencing.*")
    warnings.filterwarnings("ignore", message=".*dropped .* box.*")
    warnings.filterwarnings("ignore", message="'crs' was not provided")
    command = command_line()
    machine = machine_description()
    code = code_version()  # now: the library is imported at the start
    load_start = load_text()
    started = dt.datetime.now(dt.UTC)
    keep = args.work is not None
    work = args.work or Path(tempfile.mkdtemp(prefix="jmlgeo-bench-proposals-"))
    work.mkdir(parents=True, exist_ok=True)
    log(f"work folder {work}")
    results = Results()
    try:
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
        log(
            f"data: NWPU {len(nwpu.scene_boxes)} images ({nwpu.boxes} boxes), "
            f"iSAID {isaid.boxes} boxes, SpaceNet {spacenet.boxes} boxes"
        )
        reference: dict[str, dict[str, Outcome]] = {}
        for part in PARTS:
            if part not in args.parts:
                continue
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
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    runtime = elapsed()
    cpu_total = cpu_seconds()
    load_end = load_text()
    findings = "\n".join(f"- {f}" for f in results.findings)
    print(
        f"\nFindings:\n{findings}\n\nRuntime {runtime / 60:.1f} min, CPU {cpu_total / 60:.1f} min",
        flush=True,
    )
    if args.no_update or set(args.parts) != set(PARTS):
        log(f"{args.output} not updated (--no-update or a subset of --parts)")
        return 0
    versions = package_versions(["numpy", "opencv-python-headless", "pydensecrf2", "rasterio"])
    section = "\n\n".join(
        [
            "## Proposals: BOX, dense CRF, GrabCut (`bench/proposals.py`)",
            f"- Command: `{command}` (from the repository root)\n"
            f"- Machine: {machine}\n"
            f"- Load average: {load_start} at the start, {load_end} at the end (other jobs "
            "share the cores; times are wall clock)\n"
            f"- Packages: {versions}; code {code}\n"
            f"- Date: {started:%Y-%m-%d %H:%M} UTC; runtime {runtime / 60:.1f} min "
            f"({', '.join(results.timings)} min), CPU time {cpu_total / 60:.1f} min "
            "(this process and its workers)\n"
            f"- Data: ../shared/data: NWPU VHR-10 train ({len(nwpu.scene_boxes)} images), iSAID "
            f"samples ({len(isaid.scene_boxes)} images), SpaceNet tile (1 GeoTIFF)",
            "Findings:\n\n" + findings,
            *results.blocks,
        ]
    )
    path = update_section(SECTION, section, args.output)
    log(f"updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
