"""Resuming a killed fit exactly: the same batches, random numbers and log as the uninterrupted fit.

A fit is one long epoch (:mod:`jmlnet_geo.train.fit`). Lightning restores the weights, the
optimiser, the schedule and the step count from ``last.ckpt``, but not where the epoch's sampler
was, nor the random generators, and its CSV logger starts ``metrics.csv`` afresh. Three things
make a resumed fit reproduce the uninterrupted one weight for weight (on the CPU; CUDA kernels
that are not deterministic differ between two uninterrupted runs already):

* the tile order: :class:`SkippingSampler` draws the ``global_step x batch_size`` tiles already
  trained on from the freshly seeded sampler and drops them, so the next batch is the one the
  uninterrupted fit took (no pixel is read for a skipped tile: 0.1-0.2 ms a tile, measured);
* the random numbers of a step (dropout, random flips): before every step, the global generators
  (Python, NumPy, torch on every device) and the task's own ``torch.Generator`` attributes are
  seeded from ``(seed, global step)`` alone, so what ran between two steps (validation, a
  restart) does not matter;
* the log: the rows of the steps before the checkpoint are put back into ``metrics.csv``, later
  rows (steps trained again after the kill) are dropped, and the fit appends to it.

DataLoader worker processes draw no random numbers of their own here (tiles are read, not
augmented, in the workers), so their number does not change the batches.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import os
import random
from collections.abc import Iterator, Sized
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

#: Suffix of the copy of ``metrics.csv`` kept while a resumed fit puts its rows back.
BEFORE_RESUME = ".before-resume"


class SkippingSampler:
    """A sampler whose first ``start`` items are drawn as usual but not yielded.

    Wraps a sampler (:class:`~jmlnet_geo.tiling.RandomTiles`, :class:`~jmlnet_geo.box_sampler.
    BoxTiles`) whose order depends only on its generator's seed. ``len`` stays the full
    length (the epoch's batch count in Lightning's progress), the iterator just ends sooner.
    """

    def __init__(self, sampler: Sized) -> None:
        self.sampler, self.start = sampler, 0

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(iter(self.sampler), self.start, None)

    def __len__(self) -> int:
        return len(self.sampler)


def step_seed(seed: int, step: int) -> int:
    """A 63-bit seed of (run seed, global step), different for every pair."""
    mixed = np.random.SeedSequence([seed & 0xFFFFFFFF, seed >> 32 & 0xFFFFFFFF, step])
    return int(mixed.generate_state(2, np.uint64)[0] >> np.uint64(1))


def seed_step(seed: int, step: int, module: torch.nn.Module) -> None:
    """Seed Python, NumPy, torch (all devices) and ``module``'s generators for one step."""
    value = step_seed(seed, step)
    random.seed(value)
    np.random.seed(value % 2**32)
    torch.manual_seed(value)
    for name, generator in sorted(vars(module).items()):
        if isinstance(generator, torch.Generator):
            generator.manual_seed(step_seed(value & 0x7FFFFFFF, sum(map(ord, name))))


def kept_rows(path: Path, step: int) -> list[dict[str, float | int]]:
    """Rows of a Lightning ``metrics.csv`` logged before global step ``step``, empty cells out."""
    rows = []
    with contextlib.suppress(OSError, csv.Error, ValueError), open(path, newline="") as file:
        for row in csv.DictReader(file):
            values = {k: _number(v) for k, v in row.items() if k and v not in ("", None)}
            if "step" in values and int(values["step"]) < step:
                rows.append(values)
    return rows


def _number(text: str) -> float | int:
    try:
        return int(text)
    except ValueError:
        return float(text)


class ExactResume(Callback):
    """Seeds every step from (seed, step); on a resume, skips the tiles done and keeps the log.

    Args:
        seed: The run's seed.
        sampler: The training loader's sampler (its ``start`` is set on a resume), or None.
        batch_size: Tiles per training batch.
        logger: The CSV logger whose ``metrics.csv`` is continued, or None.
        before: Rows of that log before the resume (the copy made by :func:`set_log_aside`).
    """

    def __init__(
        self,
        seed: int,
        sampler: SkippingSampler | None,
        batch_size: int,
        logger: L.pytorch.loggers.CSVLogger | None = None,
        before: Path | None = None,
    ) -> None:
        self.seed, self.sampler, self.batch_size = seed, sampler, batch_size
        self.logger, self.before = logger, before

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Skip the tiles of the checkpoint's steps; put the log's earlier rows back."""
        step = int(checkpoint.get("global_step", 0))
        if self.sampler is not None:
            self.sampler.start = step * self.batch_size
        if self.logger is None or self.before is None or not self.before.exists():
            return
        for row in kept_rows(self.before, step):
            at = int(row.pop("step"))
            self.logger.log_metrics(row, step=at)
        self.logger.save()
        self.before.unlink()

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object
    ) -> None:
        """Seed this step's random numbers from (seed, global step)."""
        seed_step(self.seed, trainer.global_step, pl_module)


def set_log_aside(metrics: Path) -> Path | None:
    """Before a resumed fit: move ``metrics.csv`` aside (Lightning's logger would delete it).

    A copy left by a resume that was itself killed before putting the rows back is the fuller
    record and is kept. Returns the copy (None when there is no log to continue).
    """
    before = metrics.with_name(metrics.name + BEFORE_RESUME)
    if before.exists():
        return before
    if not metrics.exists():
        return None
    os.replace(metrics, before)
    return before
