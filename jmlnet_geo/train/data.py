"""Training data: tile loaders, random flips and box masks.

Band normalisation lives in :mod:`jmlnet_geo.normalization`.

Batches come from :mod:`jmlnet_geo.tiling` (``collate_tiles``): ``image`` float32 (N, C, H, W) raw
band values, ``valid`` bool (N, H, W), ``boxes`` a list of float32 (n_i, 4) in tile pixels,
``labels`` a list of int64 (n_i,), and one uint8 (N, H, W) tensor per aligned raster (proposals,
truth; 255 = ignore).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence

import torch
from torch.utils.data import DataLoader

from jmlnet_geo.children import loader_worker_init
from jmlnet_geo.io.vector import SceneBoxes
from jmlnet_geo.tiling import (
    GridTiles,
    IgnoreBoxes,
    RandomTiles,
    ScenesTiles,
    SceneTiles,
    collate_tiles,
)
from jmlnet_geo.train.resume import SkippingSampler


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
    scene_boxes: Sequence[SceneBoxes],
    extras: Sequence[Mapping[str, str]],
    ignore: Sequence[IgnoreBoxes | None] | None = None,
) -> ScenesTiles:
    """One tile dataset over the scenes, each with its boxes and aligned rasters (by name).

    ``ignore``: per scene, boxes painted 255 in its rasters (:class:`IgnoreBoxes`), or None.
    """
    ignore = ignore if ignore is not None else [None] * len(scene_boxes)
    return ScenesTiles(
        [
            SceneTiles(sb.scene, sb, extra, ignore=drop)
            for sb, extra, drop in zip(scene_boxes, extras, ignore, strict=True)
        ]
    )


def train_loader(
    data: ScenesTiles,
    tile_size: int,
    steps: int,
    batch_size: int,
    workers: int,
    seed: int,
    box_tiles: float = 0.0,
) -> DataLoader:
    """Training tiles for ``steps`` batches (one long epoch), reproducible from ``seed``.

    ``box_tiles``: share of tiles placed on boxes (:class:`jmlnet_geo.box_sampler.BoxTiles`);
    0 gives :class:`~jmlnet_geo.tiling.RandomTiles`' tiles exactly. The sampler is wrapped in a
    :class:`~jmlnet_geo.train.resume.SkippingSampler` (``loader.sampler.sampler`` is the tiles'
    sampler), so a resumed fit can skip the tiles trained on before the checkpoint.
    """
    generator = torch.Generator().manual_seed(seed)
    if box_tiles > 0:
        from jmlnet_geo.box_sampler import BoxTiles

        sampler = BoxTiles(data, tile_size, steps * batch_size, box_tiles, generator=generator)
    else:
        sampler = RandomTiles(data, tile_size, steps * batch_size, generator=generator)
    return DataLoader(
        data,
        sampler=SkippingSampler(sampler),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate_tiles,
        persistent_workers=workers > 0,
        drop_last=True,
        worker_init_fn=functools.partial(loader_worker_init, os.getpid()),
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
        worker_init_fn=functools.partial(loader_worker_init, os.getpid()),
    )
