"""Choosing the torch device from the ``--device`` option."""

from __future__ import annotations

import torch

from jmlnet_geo.errors import OptionError

DEVICE_NAMES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda``.

    Raises:
        OptionError: An unknown name, or ``cuda`` on a machine without CUDA.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in DEVICE_NAMES:
        raise OptionError(f"unknown device '{name}'; choose from {', '.join(DEVICE_NAMES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise OptionError("--device cuda: no CUDA device is available here; use --device cpu")
    return torch.device(name)
