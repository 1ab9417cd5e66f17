"""Tiles of scenes for training and full-coverage passes, built on torchgeo samplers.

Each scene is its own :class:`SceneTiles` (a torchgeo ``GeoDataset`` with one index entry), so
unrelated plain images are never mosaicked together. A tile sample holds, for one window:

=============  ==============================  ===========================================
key            value                           meaning
=============  ==============================  ===========================================
``image``      float32 tensor (C, H, W)        raw band values (no normalisation yet)
``valid``      bool tensor (H, W)              False at nodata / alpha / outside the scene
``boxes``      float32 tensor (N, 4)           x_min, y_min, x_max, y_max in tile pixels
``labels``     int64 tensor (N,)               class ids 1..K of those boxes
``<extra>``    uint8 tensor (H, W)             each aligned raster (proposals, truth);
                                               255 outside the scene and where it is nodata
``scene``      int                             index of the scene in the list
``window``     int64 tensor (4,)               col_off, row_off, width, height in the scene
=============  ==============================  ===========================================

Queries are torchgeo slices in the *tiling space* of a scene: its map coordinates when the scene
is north-up, else pixel coordinates with y flipped (x = column, y = -row), so torchgeo always sees
north-up bounds. :func:`window_of` turns a query into a pixel window.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
import torch
from affine import Affine
from rasterio.windows import Window
from torch.utils.data import Dataset
from torchgeo.datasets import GeoDataset
from torchgeo.samplers import GridGeoSampler, RandomGeoSampler, Units

from jmlnet_geo.errors import InputFileError, display_path
from jmlnet_geo.io.raster import Scene, open_dataset, read_padded, read_window
from jmlnet_geo.io.vector import SceneBoxes
from jmlnet_geo.vocabulary import IGNORE

#: A torchgeo query: (x slice, y slice, t slice) in a scene's tiling space.
GeoSlice = tuple[slice, slice, slice]

_ALL_TIME = pd.Interval(pd.Timestamp.min, pd.Timestamp.max, closed="both")


def tiling_transform(scene: Scene) -> Affine:
    """Pixel -> tiling-space transform of a scene (north-up; see module docstring)."""
    t = scene.transform
    if t.e < 0:
        return t
    return Affine(abs(t.a), 0.0, 0.0, 0.0, -abs(t.e), 0.0)


def window_of(scene: Scene, query: GeoSlice) -> Window:
    """The pixel window (integer offsets and sizes) of a query in ``scene``'s tiling space."""
    x, y = query[0], query[1]
    inv = ~tiling_transform(scene)
    col0, row0 = inv @ (x.start, y.stop)
    col1, row1 = inv @ (x.stop, y.start)
    col0, row0 = round(col0), round(row0)
    return Window(col0, row0, round(col1) - col0, round(row1) - row0)


@dataclass(frozen=True)
class IgnoreBoxes:
    """Boxes whose pixels become ignore (255) in every aligned raster of a scene's tiles.

    Attributes:
        dropped: int64 (M, 4) ``col0, row0, col1, row1`` (scene pixels, end exclusive): painted
            255 (e.g. the boxes ``jmlgeo train --drop-doubtful`` drops).
        kept: int64 (K, 4) boxes whose pixels keep their values even inside a dropped box.
    """

    dropped: np.ndarray
    kept: np.ndarray

    def paint(self, layer: np.ndarray, window: Window) -> np.ndarray:
        """``layer`` (uint8 (H, W), the raster read at ``window``) with the dropped boxes 255."""
        offset = np.array([window.col_off, window.row_off] * 2)
        dropped = self.dropped - offset
        inside = (dropped[:, 2] > 0) & (dropped[:, 3] > 0)
        inside &= (dropped[:, 0] < layer.shape[1]) & (dropped[:, 1] < layer.shape[0])
        if not inside.any():
            return layer
        out = layer.copy()
        for c0, r0, c1, r1 in dropped[inside].clip(0):
            out[r0:r1, c0:c1] = IGNORE
        for c0, r0, c1, r1 in (self.kept - offset).clip(0):
            out[r0:r1, c0:c1] = layer[r0:r1, c0:c1]
        return out


class SceneTiles(GeoDataset):
    """One scene, its boxes and any aligned rasters, indexed by torchgeo slices.

    Not for mosaics: one scene per dataset. Use :class:`ScenesTiles` for many.
    """

    def __init__(
        self,
        scene: Scene,
        boxes: SceneBoxes | None = None,
        extras: Mapping[str, str | os.PathLike[str]] | None = None,
        min_box_pixels: float = 1.0,
        ignore: IgnoreBoxes | None = None,
    ) -> None:
        """Index a scene.

        Args:
            scene: The scene.
            boxes: Its boxes in scene pixels (from :func:`jmlnet_geo.io.vector.boxes_for_scene`).
            extras: Name -> single-band uint8 raster on the scene's exact grid.
            min_box_pixels: Boxes whose part inside a tile is thinner than this are left out.
            ignore: Boxes painted 255 in every extra raster (None: none).

        Raises:
            InputFileError: An extra raster is not on the scene's grid.
        """
        self.scene = scene
        self.boxes = boxes
        self.extras = {name: os.fspath(p) for name, p in (extras or {}).items()}
        self.min_box_pixels = min_box_pixels
        self.ignore = ignore
        for name, path in self.extras.items():
            _check_aligned(scene, name, path)
        transform = tiling_transform(scene)
        left, top = transform @ (0, 0)
        right, bottom = transform @ (scene.width, scene.height)
        self.index = gpd.GeoDataFrame(
            {"path": [scene.path]},
            geometry=[shapely.box(left, bottom, right, top)],
            index=pd.IntervalIndex([_ALL_TIME], name="datetime"),
            crs=scene.crs if transform is scene.transform else None,
        )
        self._res = (abs(transform.a), abs(transform.e))
        self._handles: dict[str, Any] = {}
        self._pid = -1

    def __getitem__(self, query: GeoSlice) -> dict[str, Any]:
        """Read the tile of a query (see the module docstring for the keys)."""
        return self.read(window_of(self.scene, self._disambiguate_slice(query)))

    def read(self, window: Window) -> dict[str, Any]:
        """Read the tile of a pixel window; it may reach past the scene edges."""
        image, valid = read_window(self._dataset("image"), self.scene, window)
        sample: dict[str, Any] = {
            "image": torch.from_numpy(image.astype(np.float32)),
            "valid": torch.from_numpy(valid),
            "window": torch.tensor(
                [window.col_off, window.row_off, window.width, window.height], dtype=torch.int64
            ),
        }
        boxes, labels = self._boxes_in(window)
        sample["boxes"] = torch.from_numpy(boxes)
        sample["labels"] = torch.from_numpy(labels)
        for name in self.extras:
            layer = read_padded(self._dataset(name), [1], window, IGNORE)[0]
            layer[~valid] = IGNORE
            if self.ignore is not None:
                layer = self.ignore.paint(layer, window)
            sample[name] = torch.from_numpy(layer.astype(np.uint8))
        return sample

    def _boxes_in(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        if self.boxes is None or len(self.boxes) == 0:
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.int64)
        shifted = self.boxes.xyxy - [window.col_off, window.row_off] * 2
        shifted[:, [0, 2]] = shifted[:, [0, 2]].clip(0, window.width)
        shifted[:, [1, 3]] = shifted[:, [1, 3]].clip(0, window.height)
        size = shifted[:, 2:] - shifted[:, :2]
        keep = (size >= self.min_box_pixels).all(axis=1)
        return shifted[keep].astype(np.float32), self.boxes.class_ids[keep].astype(np.int64)

    def _dataset(self, name: str) -> rasterio.DatasetReader:
        """Open files once per process (DataLoader workers fork after __init__)."""
        if self._pid != os.getpid():
            self._handles, self._pid = {}, os.getpid()
        if name not in self._handles:
            if name == "image":
                self._handles[name] = open_dataset(self.scene)
            else:
                self._handles[name] = rasterio.open(self.extras[name])
        return self._handles[name]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"], state["_pid"] = {}, -1
        return state


def _check_aligned(scene: Scene, name: str, path: str) -> None:
    shown = display_path(path)
    if not os.path.exists(path):
        raise InputFileError(f"{shown}: {name} raster not found; check the path")
    with rasterio.open(path) as ds:
        same = (
            ds.width == scene.width
            and ds.height == scene.height
            and ds.transform.almost_equals(scene.transform)
        )
        if not same:
            raise InputFileError(
                f"{shown}: {name} raster is {ds.width}x{ds.height} on another grid than "
                f"{display_path(scene.path)} ({scene.width}x{scene.height}); "
                "make it on the scene's grid (jmlgeo proposals does)"
            )


class SnappedGridGeoSampler(GridGeoSampler):
    """torchgeo's GridGeoSampler with the last row and column snapped inside the scene.

    torchgeo 0.8 lets the last tiles reach past the scene's far edges and skips scenes smaller
    than a tile. Here the last tile of each row and column ends exactly at the edge, so tiles
    cover the scene exactly once up to the overlap; a scene smaller than a tile gets one tile
    anchored at its top-left corner (padded when read).
    """

    def __init__(self, dataset: GeoDataset, size: int, stride: int | None = None) -> None:
        """Grid over ``dataset`` with square tiles of ``size`` pixels every ``stride`` pixels."""
        super().__init__(dataset, size, stride, units=Units.PIXELS)
        self.length = 0
        for xmin, ymin, xmax, ymax in (g.bounds for g in self.index.geometry):
            rows = grid_offsets(ymax - ymin, self.size[0], self.stride[0])
            self.length += len(rows) * len(grid_offsets(xmax - xmin, self.size[1], self.stride[1]))

    def __iter__(self) -> Iterator[GeoSlice]:
        """Yield tiles row by row from the top-left (north-west) corner."""
        for i, geom in enumerate(self.index.geometry):
            xmin, ymin, xmax, ymax = geom.bounds
            t = slice(self.index.index[i].left, self.index.index[i].right)
            for down in grid_offsets(ymax - ymin, self.size[0], self.stride[0]):
                top = ymax - down
                for right in grid_offsets(xmax - xmin, self.size[1], self.stride[1]):
                    left = xmin + right
                    yield slice(left, left + self.size[1]), slice(top - self.size[0], top), t


def grid_offsets(extent: float, size: float, stride: float) -> list[float]:
    """Tile offsets along one axis from the starting edge, the last one snapped to the far edge.

    An extent smaller than a tile gets one tile at offset 0. A tiny tolerance absorbs float
    bounds (e.g. 255.99999 pixels' worth of metres).
    """
    last = max(extent - size, 0.0)
    count = 1 if last <= 1e-9 * size else math.ceil(last / stride - 1e-9) + 1
    return [min(k * stride, last) for k in range(count)]


class ScenesTiles(Dataset):
    """Many scenes behind one ``Dataset``; indexed by ``(scene index, query)`` pairs.

    The samplers below yield such pairs. Each sample also carries ``scene`` (its index).
    """

    def __init__(self, datasets: Sequence[SceneTiles]) -> None:
        """Wrap per-scene datasets (one per scene)."""
        self.datasets = list(datasets)

    def __getitem__(self, item: tuple[int, GeoSlice]) -> dict[str, Any]:
        """Read one tile of one scene."""
        index, query = item
        sample = self.datasets[index][query]
        sample["scene"] = index
        return sample

    def __len__(self) -> int:
        return len(self.datasets)


class GridTiles:
    """Full-coverage pass over every scene: :class:`SnappedGridGeoSampler` per scene, in order."""

    def __init__(self, data: ScenesTiles, size: int, stride: int | None = None) -> None:
        """Tiles of ``size`` pixels every ``stride`` pixels (default: no overlap)."""
        self.samplers = [SnappedGridGeoSampler(ds, size, stride) for ds in data.datasets]

    def __iter__(self) -> Iterator[tuple[int, GeoSlice]]:
        """Yield (scene index, query) pairs."""
        for index, sampler in enumerate(self.samplers):
            for query in sampler:
                yield index, query

    def __len__(self) -> int:
        return sum(len(s) for s in self.samplers)


class RandomTiles:
    """Random tiles for training: a scene picked by its area, then torchgeo's RandomGeoSampler.

    Scenes smaller than a tile are sampled as one tile at their top-left corner (padded).
    """

    def __init__(
        self, data: ScenesTiles, size: int, length: int, generator: torch.Generator | None = None
    ) -> None:
        """``length`` tiles of ``size`` pixels per epoch, reproducible with ``generator``."""
        self.size, self.length, self.generator = size, length, generator
        self.samplers: list[RandomGeoSampler | SnappedGridGeoSampler] = []
        for ds in data.datasets:
            if ds.scene.width >= size and ds.scene.height >= size:
                self.samplers.append(
                    RandomGeoSampler(ds, size, length=1, generator=generator, units=Units.PIXELS)
                )
            else:
                self.samplers.append(SnappedGridGeoSampler(ds, size))
        areas = torch.tensor([float(ds.scene.width * ds.scene.height) for ds in data.datasets])
        self.weights = areas / areas.sum()

    def __iter__(self) -> Iterator[tuple[int, GeoSlice]]:
        """Yield ``length`` (scene index, query) pairs."""
        picks = torch.multinomial(
            self.weights, self.length, replacement=True, generator=self.generator
        )
        for index in picks.tolist():
            yield index, next(iter(self.samplers[index]))

    def __len__(self) -> int:
        return self.length


def collate_tiles(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack tiles into a batch; ``boxes`` and ``labels`` stay lists (N varies per tile)."""
    batch: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if key in ("boxes", "labels"):
            batch[key] = values
        elif key == "scene":
            batch[key] = torch.tensor(values, dtype=torch.int64)
        else:
            batch[key] = torch.stack(values)
    return batch
