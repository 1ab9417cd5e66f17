"""Training data: band normalisation from scene statistics, tile loaders, flips and box masks.

Batches come from :mod:`jmlnet_geo.tiling` (``collate_tiles``): ``image`` float32 (N, C, H, W) raw
band values, ``valid`` bool (N, H, W), ``boxes`` a list of float32 (n_i, 4) in tile pixels,
``labels`` a list of int64 (n_i,), and one uint8 (N, H, W) tensor per aligned raster (proposals,
truth; 255 = ignore).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from jmlnet_geo.errors import InputFileError, display_path
from jmlnet_geo.io.raster import Scene, band_statistics
from jmlnet_geo.io.vector import SceneBoxes
from jmlnet_geo.tiling import GridTiles, RandomTiles, ScenesTiles, SceneTiles, collate_tiles


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
        if valid is not None:
            out = out * valid.unsqueeze(1).to(out.dtype)
        return out


def scene_normalization(scenes: Sequence[Scene]) -> Normalization:
    """Mean and std per band over the valid pixels of all scenes (pooled, weighted by size).

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
    for scene in scenes:
        for i, stat in enumerate(band_statistics(scene)):
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


def box_masks(boxes: Sequence[torch.Tensor], height: int, width: int) -> torch.Tensor:
    """Box mask, bool (N, H, W): pixels whose centre is inside any box of their tile (P+ of Eq. 4).

    Args:
        boxes: Per tile, float (n_i, 4) boxes (x_min, y_min, x_max, y_max) in tile pixels.
        height: Tile rows.
        width: Tile columns.
    """
    device = boxes[0].device if boxes else torch.device("cpu")
    out = torch.zeros((len(boxes), height, width), dtype=torch.bool, device=device)
    cols = torch.arange(width, device=device) + 0.5
    rows = torch.arange(height, device=device) + 0.5
    for i, b in enumerate(boxes):
        if len(b) == 0:
            continue
        inside_x = (cols[None, :] >= b[:, 0:1]) & (cols[None, :] < b[:, 2:3])  # (n, W)
        inside_y = (rows[None, :] >= b[:, 1:2]) & (rows[None, :] < b[:, 3:4])  # (n, H)
        out[i] = (inside_y[:, :, None] & inside_x[:, None, :]).any(0)
    return out


def random_flips(
    batch: Mapping[str, object], keys: Sequence[str], generator: torch.Generator | None = None
) -> dict:
    """Flip each tile left-right and/or up-down at random (p = 0.5 each), boxes included.

    Args:
        batch: A collated batch.
        keys: The (N, ..., H, W) tensors to flip together with the image (valid, proposals).
        generator: Random generator (CPU) for reproducible flips.

    Returns:
        A new batch dict; untouched keys are shared with ``batch``.
    """
    out = dict(batch)
    image = batch["image"]
    n, height, width = image.shape[0], image.shape[-2], image.shape[-1]
    flips = torch.rand((n, 2), generator=generator) < 0.5
    names = ["image", *keys]
    for name in names:
        out[name] = batch[name].clone()
    boxes = [b.clone() for b in batch["boxes"]]
    for i in range(n):
        for axis, flip in ((-1, flips[i, 0]), (-2, flips[i, 1])):
            if not flip:
                continue
            for name in names:
                out[name][i] = out[name][i].flip(axis)
            if axis == -1:
                boxes[i][:, [0, 2]] = width - boxes[i][:, [2, 0]]
            else:
                boxes[i][:, [1, 3]] = height - boxes[i][:, [3, 1]]
    out["boxes"] = boxes
    return out


def tiles_dataset(
    scene_boxes: Sequence[SceneBoxes], extras: Sequence[Mapping[str, str]]
) -> ScenesTiles:
    """One tile dataset over the scenes, each with its boxes and aligned rasters (by name)."""
    return ScenesTiles(
        [SceneTiles(sb.scene, sb, extra) for sb, extra in zip(scene_boxes, extras, strict=True)]
    )


def train_loader(
    data: ScenesTiles, tile_size: int, steps: int, batch_size: int, workers: int, seed: int
) -> DataLoader:
    """Random tiles for ``steps`` batches (one long epoch), reproducible from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    sampler = RandomTiles(data, tile_size, steps * batch_size, generator=generator)
    return DataLoader(
        data,
        sampler=sampler,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate_tiles,
        persistent_workers=workers > 0,
        drop_last=True,
    )


def grid_loader(data: ScenesTiles, tile_size: int, batch_size: int, workers: int) -> DataLoader:
    """Every tile of every scene once (validation)."""
    return DataLoader(
        data,
        sampler=GridTiles(data, tile_size),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate_tiles,
        persistent_workers=workers > 0,
    )
