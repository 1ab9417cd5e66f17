"""Band normalisation: per-band standardisation from the scenes' statistics.

The training scenes' pooled mean and std per band (:func:`scene_normalization`) are stored in the
bundle and the detector file; :meth:`Normalization.apply` standardises raw float32 tiles
(N, C, H, W) with them, on the tiles' device. Used by training, prediction and DetCAM alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from jmlnet_geo.errors import InputFileError, display_path
from jmlnet_geo.io.raster import BandStats, Scene, band_statistics


@dataclass(frozen=True)
class Normalization:
    """Per-band standardisation: ``(value - mean) / std``; stored in the bundle.

    Attributes:
        mean: One value per band, in the scenes' units.
        std: One value per band (never 0).
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def apply(self, image: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """float32 (N, C, H, W) raw values -> standardised; invalid pixels become 0."""
        mean = torch.tensor(self.mean, dtype=image.dtype, device=image.device)[:, None, None]
        std = torch.tensor(self.std, dtype=image.dtype, device=image.device)[:, None, None]
        out = (image - mean) / std
        if valid is not None:  # where, not a product: NaN * 0 is NaN
            out = torch.where(valid.unsqueeze(1), out, torch.zeros((), dtype=out.dtype))
        return out


def scene_normalization(
    scenes: Sequence[Scene], statistics: Sequence[Sequence[BandStats]] | None = None
) -> Normalization:
    """Mean and std per band over the valid pixels of all scenes (pooled, weighted by size).

    ``statistics``: each scene's :func:`~jmlnet_geo.io.raster.band_statistics`, when known.

    Raises:
        InputFileError: The scenes do not all have the same number of bands.
    """
    counts = {s.count for s in scenes}
    if len(counts) != 1:
        listing = ", ".join(f"{display_path(s.path)} ({s.count})" for s in scenes)
        raise InputFileError(f"scenes have different band counts: {listing}; train on one kind")
    total = [0.0] * scenes[0].count
    sums = [0.0] * scenes[0].count
    squares = [0.0] * scenes[0].count
    if statistics is None:
        statistics = [band_statistics(scene) for scene in scenes]
    for scene, stats in zip(scenes, statistics, strict=True):
        for i, stat in enumerate(stats):
            if math.isnan(stat.mean):
                continue
            weight = scene.width * scene.height * stat.valid_fraction
            total[i] += weight
            sums[i] += weight * stat.mean
            squares[i] += weight * (stat.std**2 + stat.mean**2)
    mean, std = [], []
    for n, s, q in zip(total, sums, squares, strict=True):
        m = s / n if n else 0.0
        mean.append(m)
        std.append(max(math.sqrt(max(q / n - m * m, 0.0)), 1e-6) if n else 1.0)
    return Normalization(tuple(mean), tuple(std))
