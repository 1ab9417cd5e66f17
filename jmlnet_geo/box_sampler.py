"""Box-aware training tiles: tiles placed on boxes, class-balanced, mixed with random tiles.

Random tiles (:class:`jmlnet_geo.tiling.RandomTiles`) rarely hold the small or rare objects of a
large scene; a segmenter trained on them can lose whole classes. :class:`BoxTiles` draws a
``box_tiles`` share of its tiles on boxes instead:

1. a class, each class present in the boxes with equal probability;
2. a box of that class, uniformly among the boxes of that class in all scenes;
3. the tile's position, uniformly among the pixel offsets that keep the whole box inside the
   tile (jitter: the box lands anywhere in the tile, not always in its middle) and the tile
   inside the scene. A box larger than a tile gets a tile inside the box; a scene narrower or
   shorter than a tile gets offset 0 on that axis (the tile is padded when read, as
   :class:`~jmlnet_geo.tiling.RandomTiles` does).

The other tiles are :class:`~jmlnet_geo.tiling.RandomTiles`' (scene by area, torchgeo's
``RandomGeoSampler``), so background and context are still learned. With ``box_tiles=0`` the
tiles are exactly :class:`~jmlnet_geo.tiling.RandomTiles`' for the same generator.

Positions are whole pixels in each scene's own pixel space, turned into queries of its tiling
space (:func:`jmlnet_geo.tiling.tiling_transform`), so scenes of any size, CRS or none mix
freely. Nodata is handled as for random tiles: the tile is read as it is and its ``valid`` mask
is False at nodata, which every loss ignores.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torchgeo.samplers import GeoSampler

from jmlnet_geo.tiling import GeoSlice, RandomTiles, ScenesTiles, SceneTiles, tiling_transform


def box_offset(
    low: float, high: float, extent: int, size: int, generator: torch.Generator | None = None
) -> int:
    """A random tile offset along one axis that keeps the box [low, high) in the tile.

    Args:
        low: Box start, scene pixels (column or row; float).
        high: Box end, scene pixels (exclusive; float).
        extent: Scene width or height, pixels.
        size: Tile side, pixels.
        generator: Random generator (CPU).

    Returns:
        The tile's first pixel, an int in ``[0, extent - size]`` (0 when the scene is smaller
        than the tile). Uniform among the offsets whose tile contains the whole box, or, for a
        box longer than the tile, whose tile lies inside the box.
    """
    if extent <= size:
        return 0
    if high - low <= size:
        first, last = math.ceil(high - size), math.floor(low)
    else:
        first, last = math.ceil(low), math.floor(high - size)
    first, last = max(first, 0), min(last, extent - size)
    if first > last:  # fractional box edges within a pixel of the tile size
        return min(max(round((low + high - size) / 2), 0), extent - size)
    return first + int(torch.randint(last - first + 1, (1,), generator=generator))


def pixel_query(dataset: SceneTiles, col_off: int, row_off: int, size: int) -> GeoSlice:
    """The torchgeo query of the pixel window (col_off, row_off, size, size) of a scene."""
    transform = tiling_transform(dataset.scene)
    left, top = transform * (col_off, row_off)
    right, bottom = transform * (col_off + size, row_off + size)
    interval = dataset.index.index[0]
    return slice(left, right), slice(bottom, top), slice(interval.left, interval.right)


class BoxGeoSampler(GeoSampler):
    """torchgeo sampler of one scene: ``length`` tiles on its boxes, classes balanced.

    For a single :class:`~jmlnet_geo.tiling.SceneTiles`; :class:`BoxTiles` does the same across
    many scenes (balancing classes over all of them) and mixes in random tiles.
    """

    def __init__(
        self,
        dataset: SceneTiles,
        size: int,
        length: int,
        generator: torch.Generator | None = None,
    ) -> None:
        """Tiles of ``size`` pixels; ``dataset.boxes`` must hold at least one box.

        Raises:
            ValueError: The scene has no boxes.
        """
        super().__init__(dataset)
        if dataset.boxes is None or len(dataset.boxes) == 0:
            raise ValueError(f"{dataset.scene.path}: no boxes to place tiles on")
        self.dataset, self.size, self.length, self.generator = dataset, size, length, generator

    def query(self, box: int) -> GeoSlice:
        """A tile holding box number ``box`` of the scene (row of ``boxes.xyxy``), jittered."""
        scene = self.dataset.scene
        col0, row0, col1, row1 = (float(v) for v in self.dataset.boxes.xyxy[box])
        col = box_offset(col0, col1, scene.width, self.size, self.generator)
        row = box_offset(row0, row1, scene.height, self.size, self.generator)
        return pixel_query(self.dataset, col, row, self.size)

    def __iter__(self) -> Iterator[GeoSlice]:
        """Yield ``length`` queries: a class uniformly, a box of it uniformly, a jittered tile."""
        ids = self.dataset.boxes.class_ids
        classes = np.unique(ids)
        for _ in range(self.length):
            k = classes[int(torch.randint(len(classes), (1,), generator=self.generator))]
            members = np.flatnonzero(ids == k)
            pick = int(torch.randint(len(members), (1,), generator=self.generator))
            yield self.query(int(members[pick]))

    def __len__(self) -> int:
        return self.length


class BoxTiles:
    """Training tiles over many scenes: a ``box_tiles`` share on boxes, the rest random.

    Yields ``(scene index, query)`` pairs like :class:`~jmlnet_geo.tiling.RandomTiles`, for a
    ``DataLoader`` over the same :class:`~jmlnet_geo.tiling.ScenesTiles`.
    """

    def __init__(
        self,
        data: ScenesTiles,
        size: int,
        length: int,
        box_tiles: float,
        generator: torch.Generator | None = None,
    ) -> None:
        """``length`` tiles of ``size`` pixels per epoch, reproducible with ``generator``.

        Args:
            data: The scenes, with their boxes.
            size: Tile side, pixels.
            length: Tiles per epoch.
            box_tiles: Share of tiles placed on boxes, 0..1 (0: exactly ``RandomTiles``).
                Without any box in the scenes, every tile is random.
            generator: Random generator (CPU) of every draw.

        Raises:
            ValueError: ``box_tiles`` outside 0..1.
        """
        if not 0.0 <= box_tiles <= 1.0:
            raise ValueError(f"box_tiles {box_tiles}: give a share in 0..1")
        self.size, self.length, self.box_tiles, self.generator = size, length, box_tiles, generator
        self.random = RandomTiles(data, size, length, generator=generator)
        self.samplers: dict[int, BoxGeoSampler] = {}
        scene_of, box_of, class_of = [], [], []
        for index, ds in enumerate(data.datasets):
            if ds.boxes is None or len(ds.boxes) == 0:
                continue
            self.samplers[index] = BoxGeoSampler(ds, size, 1, generator=generator)
            scene_of.append(np.full(len(ds.boxes), index, np.int64))
            box_of.append(np.arange(len(ds.boxes), dtype=np.int64))
            class_of.append(np.asarray(ds.boxes.class_ids, np.int64))
        #: Every box of every scene: its scene index, its row in that scene's boxes, its class.
        self.scene_of = np.concatenate(scene_of) if scene_of else np.zeros(0, np.int64)
        self.box_of = np.concatenate(box_of) if box_of else np.zeros(0, np.int64)
        self.class_of = np.concatenate(class_of) if class_of else np.zeros(0, np.int64)
        self.classes = np.unique(self.class_of)

    def __iter__(self) -> Iterator[tuple[int, GeoSlice]]:
        """Yield ``length`` (scene index, query) pairs."""
        if self.box_tiles == 0.0 or len(self.classes) == 0:
            yield from self.random
            return
        for _ in range(self.length):
            if float(torch.rand((), generator=self.generator)) < self.box_tiles:
                yield self.box_tile()
            else:
                pick = torch.multinomial(self.random.weights, 1, generator=self.generator)
                index = int(pick)
                yield index, next(iter(self.random.samplers[index]))

    def box_tile(self) -> tuple[int, GeoSlice]:
        """One tile on a box: class uniformly, then one of its boxes uniformly, then jitter."""
        k = self.classes[int(torch.randint(len(self.classes), (1,), generator=self.generator))]
        members = np.flatnonzero(self.class_of == k)
        pick = members[int(torch.randint(len(members), (1,), generator=self.generator))]
        index = int(self.scene_of[pick])
        return index, self.samplers[index].query(int(self.box_of[pick]))

    def __len__(self) -> int:
        return self.length
