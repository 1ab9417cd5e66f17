"""Optimiser and per-step learning-rate schedule shared by the segmenter and the detector.

The schedule is a linear warm-up from ``lr / 100`` over ``warmup`` steps, then the paper's poly
decay ``lr * (1 - t / T) ** power`` over the remaining steps. ``warmup=0`` is the plain poly
schedule of DeepLab (and of the JMLNet paper).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from jmlnet_geo.errors import OptionError

if TYPE_CHECKING:  # torch is imported when an optimiser is built, not to validate options
    import torch

OPTIMIZERS = ("adamw", "sgd")


def check_optimizer(name: str) -> None:
    """Raise a one-line :class:`OptionError` when ``name`` is not in :data:`OPTIMIZERS`."""
    if name not in OPTIMIZERS:
        raise OptionError(f"unknown optimizer '{name}'; choose from {', '.join(OPTIMIZERS)}")


def warmup_poly(steps: int, warmup: int, power: float) -> Callable[[int], float]:
    """The factor of the peak learning rate at each step (a function of the step index)."""
    steps, warmup = max(1, steps), max(0, warmup)

    def factor(step: int) -> float:
        if step < warmup:
            return 0.01 + 0.99 * step / warmup
        return max(0.0, 1.0 - (step - warmup) / max(1, steps - warmup)) ** power

    return factor


def optimizer_and_schedule(
    params: Iterable[torch.nn.Parameter],
    name: str,
    lr: float,
    steps: int,
    *,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    poly_power: float = 0.9,
    warmup: int = 0,
) -> dict:
    """Lightning's ``configure_optimizers`` answer: ``adamw`` or ``sgd``, schedule per step.

    Args:
        params: The parameters to train.
        name: ``adamw`` or ``sgd`` (with ``momentum``).
        lr: Peak learning rate.
        steps: Total optimiser steps of the run (the schedule ends at 0 there).
        momentum: SGD momentum (ignored by AdamW).
        weight_decay: Weight decay (decoupled for AdamW).
        poly_power: Exponent of the poly decay.
        warmup: Steps of linear warm-up before the decay.
    """
    import torch

    check_optimizer(name)
    if name == "sgd":
        optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_poly(steps, warmup, poly_power))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
