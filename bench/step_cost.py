"""Cost of one training step of the segmenter per stage-2 loss, against plain CE (issue 17).

One step = forward, loss, backward and the optimiser step of the fast preset's segmenter on a
batch of the preset's size, through :class:`jmlnet_geo.train.segmenter.SegmenterTask`'s own
``training_step`` (flips, label stack, box mask, loss). The variants run interleaved, ``--rounds``
times ``--steps`` steps each, so a load that changes during the run hits them alike; the table
gives the median seconds per step and the ratio to CE. Tiles are random pixels (the cost of
these layers does not depend on the content); each tile holds ``--boxes`` boxes of NWPU's median
size (about 50 px), since the box-consistency loss loops over boxes.

    .venv/bin/python bench/step_cost.py [--boxes 1,4] [--steps 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.report import Run, log, package_versions, update_section  # noqa: E402
from jmlnet_geo.config import SegmenterConfig  # noqa: E402
from jmlnet_geo.evaluate.report import markdown_table  # noqa: E402
from jmlnet_geo.models import build_segmenter  # noqa: E402
from jmlnet_geo.normalization import Normalization  # noqa: E402
from jmlnet_geo.train.segmenter import SegmenterTask  # noqa: E402

#: (label, stage-2 loss, number of proposals, box-consistency loss weight, its pairwise weight)
VARIANTS = [
    ("CE on one proposal", "ce", 1, 0.0, 1.0),
    ("CE + box-consistency loss", "ce", 1, 1.0, 1.0),
    ("CE + box loss without pairwise", "ce", 1, 1.0, 0.0),
    ("MA over 3 proposals", "ma", 3, 0.0, 1.0),
    ("BMM over 3 proposals", "bmm", 3, 0.0, 1.0),
    ("BMM over 3 + box-consistency loss", "bmm", 3, 1.0, 1.0),
]
CLASSES = 11  # NWPU: 10 classes and background


def batch(seg: SegmenterConfig, proposals: int, boxes: int, generator: torch.Generator) -> dict:
    """A collated batch as :func:`jmlnet_geo.tiling.collate_tiles` makes it."""
    n, size = seg.batch_size, seg.tile_size
    out: dict = {"image": torch.rand((n, 3, size, size), generator=generator) * 255}
    out["valid"] = torch.ones((n, size, size), dtype=torch.bool)
    for z in range(proposals):
        out[f"p{z}"] = torch.randint(0, CLASSES, (n, size, size), generator=generator).byte()
    corners = torch.rand((n, boxes, 2), generator=generator) * (size - 50)
    out["boxes"] = [torch.cat([c, c + 50], dim=1) for c in corners]
    out["labels"] = [torch.randint(1, CLASSES, (boxes,), generator=generator) for _ in range(n)]
    return out


def without_trainer(task: SegmenterTask, optimizer: torch.optim.Optimizer):
    """Let ``task.training_step`` run with no Lightning trainer: no logging, this optimiser."""
    task.log = lambda *args, **kwargs: None
    task.optimizers = lambda: optimizer
    return optimizer


def seconds_per_step(task: SegmenterTask, optimizer, data: dict, steps: int) -> float:
    """Median wall seconds of ``steps`` steps (the first of each call is not timed)."""
    times = []
    for step in range(steps + 1):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        task.training_step(data, step).backward()
        optimizer.step()
        if step:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--boxes", default="1,4", help="Boxes per tile, comma-separated.")
    add("--steps", type=int, default=5, help="Timed steps per variant and round.")
    add("--rounds", type=int, default=3, help="Interleaved rounds over the variants.")
    add("--no-update", action="store_true", help="Print the table only.")
    add("--output", default="BENCHMARKS.md", help="Markdown file to update.")
    args = parser.parse_args(argv)
    run, seg = Run(), SegmenterConfig()
    generator = torch.Generator().manual_seed(0)
    rows = []
    for boxes in [int(b) for b in args.boxes.split(",")]:
        tasks = []
        for label, loss, proposals, weight, pairwise in VARIANTS:
            model = build_segmenter("fast", CLASSES, 3, weights=None, head=seg.head)
            names = [f"p{z}" for z in range(proposals)]
            task = SegmenterTask(model, CLASSES, Normalization((127.0,) * 3, (50.0,) * 3), names,
                                 loss, 100, seg.lr, "adamw", box_loss_weight=weight,
                                 box_pairwise_weight=pairwise)  # fmt: skip
            optimizer = without_trainer(task, torch.optim.AdamW(model.parameters(), seg.lr))
            tasks.append((label, task, optimizer, batch(seg, proposals, boxes, generator)))
        times: dict[str, list[float]] = {label: [] for label, *_ in tasks}
        for r in range(args.rounds):
            for label, task, optimizer, data in tasks:
                times[label].append(seconds_per_step(task, optimizer, data, args.steps))
                log(f"{boxes} box(es)/tile, round {r + 1}: {label} {times[label][-1]:.2f} s")
        ce = statistics.median(times[VARIANTS[0][0]])
        for label, values in times.items():
            s = statistics.median(values)
            rows.append([str(boxes), label, f"{s:.2f}", f"{s / ce:.2f}"])
    text = "\n".join(
        [
            run.head(
                package_versions(["torch"]),
                f"{run.minutes:.1f} min",
                f"- Batch {seg.batch_size} x {seg.tile_size}² px, fast preset ({seg.head}), "
                f"{torch.get_num_threads()} torch threads; median of {args.rounds} rounds x "
                f"{args.steps} steps",
            ),
            "",
            markdown_table(["boxes / tile", "stage-2 loss", "s / step", "x CE"], rows),
        ]
    )
    print(text)
    if not args.no_update:
        title = "## Cost of a training step per loss (`bench/step_cost.py`)"
        update_section("step-cost", f"{title}\n\n{text}", args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
