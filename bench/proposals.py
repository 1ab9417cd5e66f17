"""Benchmark of the box proposals (BOX, dense CRF, GrabCut) on the real dev data.

Proposal quality on NWPU VHR-10 train, the iSAID samples and the SpaceNet tile against their true
masks; a run updates the ``proposals`` section of BENCHMARKS.md, where the method and the
readings are written. The settled ``speed`` (1 vs 2 workers; ``bench/distributed.py`` measures
it now), ``caps`` (``max_side``) and ``crf`` (``CRFOptions``) parts left the script; their
tables stay in BENCHMARKS.md and the script in git history.

    .venv/bin/python bench/proposals.py [--quick] [--limit N] [--workers N] [--no-update]
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a file (python bench/proposals.py); this checkout first
    sys.path.insert(0, os.fspath(Path(__file__).resolve().parents[1]))

from bench.data import SHARED, classic_scores, load_isaid, load_nwpu, load_spacenet
from bench.report import (
    SHARED_CORES,
    Results,
    Run,
    bench_parser,
    cpu_seconds,
    elapsed,
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
from jmlnet_geo.proposals.options import CLASSIC_METHODS, ProposalOptions  # noqa: E402

SECTION = "proposals"
PARTS = ("quality",)
METHOD_LABEL = {"box": "BOX", "crf": "CRF", "grabcut": "GrabCut"}


def options_text(options: ProposalOptions) -> str:
    """The proposal settings that matter here, as they are in the library."""
    crf = options.crf
    return (
        f"max_side {options.max_side}, margin {options.margin:g}, min_fraction "
        f"{options.min_fraction:g}; CRF fg_prob {crf.fg_prob:g}, bilateral_sxy "
        f"{crf.bilateral_sxy:g}, srgb {crf.bilateral_srgb:g}, compat {crf.bilateral_compat:g}, "
        f"{crf.iterations} iterations; GrabCut {options.grabcut.iterations} iterations"
    )


def part_quality(datasets, args, work: Path, results: Results) -> None:
    """Each data set's proposals (library defaults) scored: the summary and per-class tables."""
    summary_rows, per_class = [], []
    for ds in datasets:
        log(f"quality: {ds.name}, {len(ds.scene_boxes)} images, {ds.boxes} boxes")
        out = work / "quality" / ds.name.replace(" ", "_")
        found = classic_scores(ds, ds.scene_boxes, out, CLASSIC_METHODS, args.workers)
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


def parse_args(argv: Sequence[str] | None = None):
    parser = bench_parser(
        "Benchmark BOX / CRF / GrabCut proposals on the real dev data.",
        PARTS,
        "Folder for intermediate files, kept (default: a temporary folder, deleted).",
    )
    add = parser.add_argument
    add("--data", type=Path, default=SHARED, help="The shared data folder.")
    add("--limit", type=int, help="Only the first N NWPU images in sorted order (default: all).")
    add("--workers", type=int, default=2, help="Processes of write_proposals.")
    args = parser.parse_args(argv)
    if args.quick:  # NWPU --limit 40
        args.limit = args.limit or 40
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
        isaid = load_isaid(args.data, work)
        spacenet = load_spacenet(args.data, work)
        part_quality([nwpu, isaid, spacenet], args, work, results)
    runtime, cpu_total = elapsed(), cpu_seconds()
    print(f"\nRuntime {runtime / 60:.1f} min, CPU {cpu_total / 60:.1f} min", flush=True)
    if args.no_update:
        log(f"{args.output} not updated (--no-update)")
        return 0
    versions = package_versions(["numpy", "opencv-python-headless", "pydensecrf2", "rasterio"])
    head = run.head(
        versions,
        f"runtime {runtime / 60:.1f} min, CPU time {cpu_total / 60:.1f} min (this process and "
        "its workers)",
        f"- Data: ../shared/data: NWPU VHR-10 train ({len(nwpu.scene_boxes)} images), iSAID "
        f"samples ({len(isaid.scene_boxes)} images), SpaceNet tile (1 GeoTIFF)",
        f"- Proposal options (the library defaults): {options_text(ProposalOptions())}; "
        f"{args.workers} workers",
        load=SHARED_CORES,
    )
    title = "## Proposals: BOX, dense CRF, GrabCut (`bench/proposals.py`)"
    section = "\n\n".join([title, head, *results.blocks])
    log(f"updated {update_section(SECTION, section, args.output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
