"""One way to fit a Lightning task: trainer set-up, quiet logging, checkpoints, progress.

Both the segmenter stages (:mod:`jmlnet_geo.train.stage`) and the detector
(:mod:`jmlnet_geo.train.detector`) train through :func:`fit_task`: one long epoch of ``steps``
batches, a resumable ``last.ckpt`` every ``checkpoint_every`` steps, CSV logs (and TensorBoard
when asked for and installed), AMP on CUDA, no progress bar of Lightning's own: the caller's
``progress(done, total)`` is called after every step instead. A fit resumed from ``last.ckpt``
repeats the uninterrupted one (same tiles, random numbers, one continued ``metrics.csv``; see
:mod:`jmlnet_geo.train.resume`).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch.utils.data import DataLoader

from jmlnet_geo.io.write import write_bytes
from jmlnet_geo.train.resume import ExactResume, SkippingSampler, set_log_aside
from jmlnet_geo.vocabulary import Progress

#: File name of the resumable checkpoint in a stage's folder.
CHECKPOINT = "last.ckpt"

# Lightning warnings that say nothing to a user of this pipeline.
_QUIET_WARNINGS = (
    ".*does not have many workers.*",
    ".*not resumable.*",  # it is: jmlnet_geo.train.resume
    ".*save_top_k=0.*",
    ".*LeafSpec.*",  # Lightning's own deprecation
    ".*dirpath has changed.*",  # a moved folder
    ".*Experiment logs directory.*",  # a resumed fit continues metrics.csv (train.resume)
    ".*Checkpoint directory.*exists and is not empty.*",  # a resumed fit's own folder
    ".*no `val_dataloader`.*",
)


@dataclass(frozen=True)
class FitSettings:
    """How a task is fitted.

    Attributes:
        steps: Optimiser steps (one epoch of that many batches).
        folder: Where ``last.ckpt`` goes (and is resumed from when it exists).
        log_dir: Parent folder of the logs.
        log_name: Logs go to ``log_dir/log_name/metrics.csv`` (TensorBoard: ``.../tb``).
        checkpoint_every: Save ``last.ckpt`` every this many steps.
        accelerator: ``cpu`` or ``cuda`` (:func:`jmlnet_geo.devices.resolve_device`).
        devices: Devices (processes) for distributed training, per node.
        num_nodes: Machines (Lightning's ``num_nodes``).
        strategy: Lightning strategy (``auto``, ``ddp``, ...).
        precision: Lightning precision; ``auto``: 16-mixed on CUDA, 32-true on the CPU.
        top_k: Lightning's ``save_top_k`` (None: Lightning's default).
        tensorboard: Also log to TensorBoard when it is installed.
        gradient_clip: Clip gradients to this norm (None: no clipping).
        val_every: Validate every this many steps (None: never).
        seed: The run's seed: every step's random numbers come from (seed, step), so a resumed
            fit repeats the uninterrupted one (:mod:`jmlnet_geo.train.resume`).
    """

    steps: int
    folder: Path
    log_dir: Path
    log_name: str
    checkpoint_every: int
    accelerator: str = "cpu"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "auto"
    top_k: int | None = None
    tensorboard: bool = False
    gradient_clip: float | None = None
    val_every: int | None = None
    seed: int = 0


def quiet_lightning() -> None:
    """Silence Lightning's info logging (its banners would interleave with our progress)."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)


def seed_fit(seed: int) -> None:
    """Quiet Lightning and seed Python, NumPy and torch (workers included) before building."""
    quiet_lightning()
    L.seed_everything(seed, workers=True, verbose=False)


def resolve_precision(precision: str, accelerator: str) -> str:
    """``auto`` -> ``16-mixed`` on CUDA, ``32-true`` elsewhere; other values unchanged."""
    if precision == "auto":
        return "16-mixed" if accelerator == "cuda" else "32-true"
    return precision


def takes_loss(progress: Callable[..., None]) -> bool:
    """Whether a progress callback accepts a ``loss=`` keyword (or any keyword)."""
    try:
        parameters = inspect.signature(progress).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is p.VAR_KEYWORD or p.name == "loss" for p in parameters)


def check_checkpoint(path: Path) -> None:
    """Refuse a truncated or corrupt ``last.ckpt`` (torch's zip format, every CRC checked).

    Raises:
        JmlGeoError: One line naming the file and the way out (delete it, or --force).
    """
    import zipfile

    from jmlnet_geo.errors import JmlGeoError, display_path

    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        bad = str(err)
    if bad is not None:
        raise JmlGeoError(
            f"{display_path(path)}: corrupt checkpoint ({bad}); delete it to restart this stage "
            "with --resume, or pass --force to start the run over"
        )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written beside their final name and renamed into place.

    Lightning writes a checkpoint to the system's temporary folder and moves it; across file
    systems that move is a copy, so ``kill -9`` or a full disk left a truncated ``last.ckpt``
    under its final name. Here it is all or nothing, and a full disk is an OSError naming
    the checkpoint.
    """

    def save_checkpoint(
        self, checkpoint: dict, path: str | Path, storage_options: object | None = None
    ) -> None:
        """``torch.save`` to memory, then one atomic write of the bytes."""
        import io

        import torch

        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        write_bytes(path, buffer.getbuffer())


class _Report(Callback):
    """Calls ``progress(global step, steps)`` after every training batch.

    A callback that takes ``loss=`` (the CLI's line and JSON displays do) also gets the step's
    ``train_loss`` as a float, so logs show the loss; plain ``(done, total)`` callbacks do not.
    """

    def __init__(self, progress: Callable[..., None], steps: int) -> None:
        self.progress, self.steps = progress, steps
        self.with_loss = takes_loss(progress)

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if not self.with_loss:
            self.progress(trainer.global_step, self.steps)
            return
        loss = trainer.callback_metrics.get("train_loss")
        value = float(loss) if loss is not None else None
        self.progress(trainer.global_step, self.steps, loss=value)


def fit_task(
    task: L.LightningModule,
    settings: FitSettings,
    train_loader: DataLoader,
    val_loader: DataLoader | None = None,
    progress: Progress | None = None,
) -> L.Trainer:
    """Fit ``task``, resuming from ``settings.folder/last.ckpt`` when it exists.

    Args:
        task: The Lightning module.
        settings: How to fit it.
        train_loader: ``settings.steps`` batches.
        val_loader: Validation batches (used when ``settings.val_every`` is set).
        progress: Called with (steps done, steps) after each step.

    Returns:
        The trainer after fitting (``callback_metrics`` holds the last logged values).
    """
    s = settings
    checkpoint = Path(s.folder) / CHECKPOINT
    if checkpoint.exists():
        check_checkpoint(checkpoint)
    csv_log = L.pytorch.loggers.CSVLogger(s.log_dir, name=s.log_name, version="")
    loggers = [csv_log]
    if s.tensorboard:
        with contextlib.suppress(ModuleNotFoundError, ImportError):
            loggers.append(
                L.pytorch.loggers.TensorBoardLogger(s.log_dir, name=s.log_name, version="tb")
            )
    saving = {} if s.top_k is None else {"save_top_k": s.top_k}
    callbacks: list[Callback] = [
        ModelCheckpoint(s.folder, save_last=True, every_n_train_steps=s.checkpoint_every, **saving)
    ]
    before = set_log_aside(Path(csv_log.log_dir) / "metrics.csv") if checkpoint.exists() else None
    sampler = train_loader.sampler if isinstance(train_loader.sampler, SkippingSampler) else None
    batch_size = train_loader.batch_size or 1
    callbacks.append(ExactResume(s.seed, sampler, batch_size, csv_log, before))
    if progress is not None:
        callbacks.append(_Report(progress, s.steps))
    trainer = L.Trainer(
        max_steps=s.steps,
        max_epochs=1,
        accelerator=s.accelerator,
        devices=s.devices,
        num_nodes=s.num_nodes,
        strategy=s.strategy,
        precision=resolve_precision(s.precision, s.accelerator),
        logger=loggers,
        callbacks=callbacks,
        val_check_interval=s.val_every,
        limit_val_batches=None if s.val_every else 0,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        use_distributed_sampler=False,
        gradient_clip_val=s.gradient_clip,
        deterministic=False,
        plugins=[AtomicCheckpointIO()],
    )
    with warnings.catch_warnings():
        for message in _QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        trainer.fit(
            task,
            train_dataloaders=train_loader,
            val_dataloaders=val_loader if s.val_every else None,
            ckpt_path=str(checkpoint) if checkpoint.exists() else None,
        )
    return trainer
