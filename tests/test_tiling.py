import math

import numpy as np
import pytest
import torch
from conftest import pixel_box, write_boxes, write_scene
from torch.utils.data import DataLoader

from jmlnet_geo.errors import InputFileError
from jmlnet_geo.io.raster import open_scene
from jmlnet_geo.io.vector import boxes_for_scene, read_boxes
from jmlnet_geo.tiling import (
    GridTiles,
    RandomTiles,
    ScenesTiles,
    SceneTiles,
    SnappedGridGeoSampler,
    collate_tiles,
    window_of,
)


def _scene(tmp_path, width, height, name="s.tif", crs="EPSG:32632"):
    data = (np.arange(width * height, dtype=np.uint32).reshape(1, height, width) % 251).astype(
        np.uint8
    )
    return open_scene(write_scene(tmp_path / name, np.repeat(data, 2, axis=0), crs=crs)), data[0]


@pytest.mark.parametrize(
    ("width", "height", "size", "stride"),
    [
        (256, 192, 64, 64),
        (300, 257, 64, 64),
        (300, 257, 64, 48),
        (40, 30, 64, 64),
        (64, 100, 64, 40),
    ],
)
@pytest.mark.parametrize("crs", ["EPSG:32632", None])
def test_grid_covers_the_scene_once_up_to_overlap(tmp_path, width, height, size, stride, crs):
    name = "s.tif" if crs else "s.png"
    scene, _ = _scene(tmp_path, width, height, name=name, crs=crs)
    sampler = SnappedGridGeoSampler(SceneTiles(scene), size, stride)
    windows = [window_of(scene, q) for q in sampler]
    per_axis = [1 if n <= size else math.ceil((n - size) / stride) + 1 for n in (height, width)]
    assert len(windows) == len(sampler) == per_axis[0] * per_axis[1]
    cover = np.zeros((height, width), int)
    for w in windows:
        assert (w.width, w.height) == (size, size)
        if width >= size:
            assert w.col_off >= 0 and w.col_off + size <= width  # never falls off the edge
        else:
            assert w.col_off == 0
        if height >= size:
            assert w.row_off >= 0 and w.row_off + size <= height
        else:
            assert w.row_off == 0
        cover[max(w.row_off, 0) : w.row_off + size, max(w.col_off, 0) : w.col_off + size] += 1
    assert cover.min() >= 1
    if stride == size and width % size == 0 and height % size == 0:
        assert cover.max() == 1
    # overlap only from the stride and from the one snapped last row/column per axis
    assert cover.max() <= (math.ceil(size / stride) + 1) ** 2


def test_tile_holds_image_valid_boxes_and_aligned_extras(tmp_path):
    scene, data = _scene(tmp_path, 100, 80)
    layer = read_boxes(
        write_boxes(
            tmp_path / "b.gpkg", [pixel_box(10, 10, 30, 20), pixel_box(55, 60, 90, 79)], ["a", "b"]
        )
    )
    extra = np.full((1, 80, 100), 3, np.uint8)
    extra[0, 70:, 90:] = 7
    extra_path = write_scene(tmp_path / "proposal.tif", extra)
    ds = SceneTiles(scene, boxes_for_scene(layer, scene), extras={"grabcut": extra_path})
    grid = list(SnappedGridGeoSampler(ds, 64, 64))
    windows = [window_of(scene, q) for q in grid]
    # last column and row snapped: windows at cols 0 and 36, rows 0 and 16
    assert sorted({(w.col_off, w.row_off) for w in windows}) == [(0, 0), (0, 16), (36, 0), (36, 16)]
    sample = ds[grid[windows.index(next(w for w in windows if (w.col_off, w.row_off) == (36, 16)))]]
    assert sample["image"].dtype == torch.float32 and sample["image"].shape == (2, 64, 64)
    np.testing.assert_array_equal(sample["image"][0].numpy(), data[16:80, 36:100])
    assert sample["valid"].all()
    np.testing.assert_allclose(sample["boxes"].numpy(), [[19, 44, 54, 63]])  # (55-36, 60-16, ...)
    assert sample["labels"].tolist() == [2]
    assert sample["grabcut"].dtype == torch.uint8 and sample["grabcut"][54:, 54:].eq(7).all()
    past_edge = ds.read(__import__("rasterio").windows.Window(80, 60, 32, 32))
    assert not past_edge["valid"][20:, :].any() and past_edge["grabcut"][20:, :].eq(255).all()
    assert past_edge["boxes"].tolist() == [[0.0, 0.0, 10.0, 19.0]]


def test_extra_raster_on_another_grid_is_an_error(tmp_path):
    scene, _ = _scene(tmp_path, 100, 80)
    other = write_scene(tmp_path / "other.tif", np.zeros((1, 80, 99), np.uint8))
    with pytest.raises(InputFileError, match="other.tif: grabcut raster is 99x80 on another grid"):
        SceneTiles(scene, extras={"grabcut": other})


def test_plain_images_are_not_mosaicked(tmp_path):
    a = open_scene(write_scene(tmp_path / "a.png", np.full((3, 70, 90), 10, np.uint8), crs=None))
    b = open_scene(write_scene(tmp_path / "b.png", np.full((3, 50, 60), 200, np.uint8), crs=None))
    data = ScenesTiles([SceneTiles(a), SceneTiles(b)])
    grid = GridTiles(data, 32, 32)
    seen = {0: 0, 1: 0}
    for index, query in grid:
        tile = data[(index, query)]
        assert tile["scene"] == index
        expected = 10 if index == 0 else 200
        assert tile["image"][:, tile["valid"]].eq(expected).all()
        seen[index] += 1
    assert seen == {0: 9, 1: 4} and len(grid) == 13


def test_random_tiles_are_inside_reproducible_and_batch(tmp_path):
    big, _ = _scene(tmp_path, 300, 200, name="big.tif")
    small, _ = _scene(tmp_path, 40, 30, name="small.tif")
    layer = read_boxes(write_boxes(tmp_path / "b.gpkg", [pixel_box(5, 5, 25, 25)], ["a"]))
    data = ScenesTiles([SceneTiles(s, boxes_for_scene(layer, s)) for s in (big, small)])

    def draw(seed):
        return list(RandomTiles(data, 64, 40, generator=torch.Generator().manual_seed(seed)))

    first = draw(1)
    assert [(i, q[0], q[1]) for i, q in first] == [(i, q[0], q[1]) for i, q in draw(1)]
    assert {i for i, _ in first} == {0, 1}  # both scenes, weighted by area
    for index, query in first:
        w = window_of(data.datasets[index].scene, query)
        scene = data.datasets[index].scene
        if index == 0:
            assert 0 <= w.col_off <= 300 - 64 and 0 <= w.row_off <= 200 - 64
        else:
            assert (w.col_off, w.row_off) == (0, 0)
        assert (w.width, w.height) == (64, 64) and scene.width > 0
    loader = DataLoader(
        data, batch_size=4, sampler=first[:8], collate_fn=collate_tiles, num_workers=2
    )
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 2, 64, 64) and batch["valid"].shape == (4, 64, 64)
    assert len(batch["boxes"]) == 4 and batch["window"].shape == (4, 4)
