"""Optimiser and per-step learning-rate schedule shared by the segmenter and the detector.

The schedule is a linear warm-up from ``lr / 100`` over ``warmup`` steps, then the paper's poly
decay ``lr * (1 - t / T) ** power`` over the remaining steps. ``warmup=0`` is the plain poly
schedule of DeepLab (and of the JMLNet paper).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class OptimizerSettings:
    """How a Lightning task builds its optimiser and per-step schedule.

    Attributes:
        name: ``adamw`` or ``sgd`` (with ``momentum``).
        lr: Peak learning rate.
        steps: Total optimiser steps of the run (the schedule ends at 0 there).
        momentum: SGD momentum (ignored by AdamW).
        weight_decay: Weight decay (decoupled for AdamW).
        poly_power: Exponent of the poly decay.
        warmup: Steps of linear warm-up before the decay.
    """

    name: str
    lr: float
    steps: int
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    warmup: int = 0

    def __post_init__(self) -> None:
        check_optimizer(self.name)

    def configure(self, params: Iterable[torch.nn.Parameter]) -> dict:
        """Lightning's ``configure_optimizers`` answer for ``params``, the schedule per step."""
        import torch

        if self.name == "sgd":
            optimizer = torch.optim.SGD(
                params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
            )
        else:
            optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        factor = warmup_poly(self.steps, self.warmup, self.poly_power)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
