import numpy as np
import pytest
import torch
from affine import Affine
from conftest import write_scene

from jmlnet_geo.box_sampler import BoxGeoSampler, BoxTiles, box_offset
from jmlnet_geo.io.raster import open_scene
from jmlnet_geo.io.vector import SceneBoxes
from jmlnet_geo.tiling import RandomTiles, ScenesTiles, SceneTiles, window_of
from jmlnet_geo.train.data import train_loader

SIZE = 64


def _tiles(tmp_path, name, width, height, boxes, classes, crs="EPSG:32632", nodata=None, **kw):
    data = np.full((3, height, width), 100, np.uint8)
    if nodata is not None:
        data[:, :, : width // 4] = nodata
    scene = open_scene(write_scene(tmp_path / name, data, crs=crs, nodata=nodata, **kw))
    xyxy = np.asarray(boxes, np.float64).reshape(-1, 4)
    ids = np.asarray(classes, np.int64)
    return SceneTiles(scene, SceneBoxes(scene, xyxy, ids, np.arange(len(ids))))


def _holds(window, box):
    """Whether the whole box (scene pixels) lies inside the pixel window."""
    c0, r0, c1, r1 = box
    return (
        window.col_off <= c0
        and c1 <= window.col_off + window.width
        and window.row_off <= r0
        and r1 <= window.row_off + window.height
    )


def _windows(data, sampler):
    return [(i, window_of(data.datasets[i].scene, q)) for i, q in sampler]


@pytest.fixture
def mixed(tmp_path):
    """Three scenes of other sizes and CRSs (UTM, Web Mercator at 2 m, a plain PNG), with boxes
    on the edges and corners, one larger than a tile, and a rare class 2 (2 of 10 boxes)."""
    utm = _tiles(
        tmp_path, "utm.tif", 500, 300,
        [(0, 0, 10, 8), (490, 290, 500, 300), (200, 100, 300, 190), (250, 0, 262, 5)],
        [1, 1, 1, 1],
    )  # fmt: skip
    merc = _tiles(
        tmp_path, "merc.tif", 200, 400, [(195, 10, 200, 30), (5, 380, 40, 400)], [1, 2],
        crs="EPSG:3857", transform=Affine(2.0, 0, 1e6, 0, -2.0, 6e6),
    )  # fmt: skip
    png = _tiles(
        tmp_path, "plain.png", 150, 90, [(140, 80, 150, 90), (0, 40, 12, 52), (60, 0, 70, 9)],
        [1, 1, 2], crs=None,
    )  # fmt: skip
    small = _tiles(tmp_path, "small.tif", 40, 30, [(30, 20, 40, 30)], [1])
    return ScenesTiles([utm, merc, png, small])


def test_box_tiles_hold_a_whole_box_inside_the_scene_with_jitter(mixed):
    sampler = BoxTiles(mixed, SIZE, 300, 1.0, generator=torch.Generator().manual_seed(0))
    places = set()
    for index, w in _windows(mixed, sampler):
        ds = mixed.datasets[index]
        scene = ds.scene
        assert (w.width, w.height) == (SIZE, SIZE)
        for offset, extent in ((w.col_off, scene.width), (w.row_off, scene.height)):
            if extent >= SIZE:
                assert 0 <= offset <= extent - SIZE  # snapped inside the scene
            else:
                assert offset == 0
        held = [b for b in ds.boxes.xyxy if _holds(w, b)]
        large = [b for b in ds.boxes.xyxy if b[2] - b[0] > SIZE or b[3] - b[1] > SIZE]
        inside_large = any(
            b[0] <= w.col_off and w.col_off + SIZE <= b[2] for b in large
        )  # a box wider than a tile: the tile lies inside it (across)
        assert held or inside_large or scene.width < SIZE
        if index == 0 and _holds(w, (250, 0, 262, 5)):
            places.add((w.col_off, w.row_off))
    assert len(places) > 5  # jittered, not always the same spot around a box


def test_share_of_box_tiles(tmp_path):
    # one tiny box in a large scene: a random tile almost never holds it
    ds = _tiles(tmp_path, "s.tif", 2000, 2000, [(1000, 1000, 1004, 1004)], [1])
    data = ScenesTiles([ds])
    for share in (0.0, 0.3, 0.7, 1.0):
        sampler = BoxTiles(data, SIZE, 400, share, generator=torch.Generator().manual_seed(3))
        held = np.mean([_holds(w, ds.boxes.xyxy[0]) for _, w in _windows(data, sampler)])
        assert abs(held - share) < 0.08, (share, held)


def test_classes_are_balanced(tmp_path):
    many = [(10 * k, 10, 10 * k + 4, 14) for k in range(40)]  # 40 boxes of class 1, top strip
    rare = [(100, 500, 104, 504), (400, 500, 404, 504)]  # 2 boxes of class 2, far below
    ds = _tiles(tmp_path, "s.tif", 600, 600, many + rare, [1] * 40 + [2] * 2)
    data = ScenesTiles([ds])
    sampler = BoxTiles(data, SIZE, 600, 1.0, generator=torch.Generator().manual_seed(1))
    rare_share = np.mean(
        [any(_holds(w, b) for b in rare) for _, w in _windows(data, sampler)]
    )  # fmt: skip
    assert abs(rare_share - 0.5) < 0.07


def test_deterministic_under_a_seed(mixed):
    def draw(seed):
        g = torch.Generator().manual_seed(seed)
        return [(i, q[0], q[1]) for i, q in BoxTiles(mixed, SIZE, 50, 0.5, generator=g)]

    assert draw(4) == draw(4)
    assert draw(4) != draw(5)


def test_zero_share_gives_the_random_tiles(mixed):
    def random(seed):
        g = torch.Generator().manual_seed(seed)
        return [(i, q[0], q[1]) for i, q in RandomTiles(mixed, SIZE, 60, generator=g)]

    g = torch.Generator().manual_seed(7)
    boxed = [(i, q[0], q[1]) for i, q in BoxTiles(mixed, SIZE, 60, 0.0, generator=g)]
    assert boxed == random(7)
    loader = train_loader(mixed, SIZE, 15, 4, 0, 7)
    assert isinstance(loader.sampler.sampler, RandomTiles)
    assert [(i, q[0], q[1]) for i, q in loader.sampler] == random(7)
    resumed = train_loader(mixed, SIZE, 15, 4, 0, 7).sampler
    resumed.start = 9  # a resume after two batches and one tile: the same tiles, later
    assert [(i, q[0], q[1]) for i, q in resumed] == random(7)[9:]
    boxed = train_loader(mixed, SIZE, 15, 4, 0, 7, box_tiles=0.5).sampler.sampler
    assert isinstance(boxed, BoxTiles)


def test_scenes_without_boxes_fall_back_to_random(tmp_path):
    ds = _tiles(tmp_path, "s.tif", 200, 200, np.zeros((0, 4)), [])
    data = ScenesTiles([ds])
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    boxed = [(i, q[0], q[1]) for i, q in BoxTiles(data, SIZE, 10, 1.0, generator=g1)]
    assert boxed == [(i, q[0], q[1]) for i, q in RandomTiles(data, SIZE, 10, generator=g2)]
    with pytest.raises(ValueError, match="no boxes"):
        BoxGeoSampler(ds, SIZE, 1)
    with pytest.raises(ValueError, match="0..1"):
        BoxTiles(data, SIZE, 10, 1.5)


def test_nodata_is_marked_invalid_in_box_tiles(tmp_path):
    # the left quarter (cols < 50) is nodata; a box on its border gets tiles reaching into it
    ds = _tiles(tmp_path, "s.tif", 200, 100, [(48, 40, 58, 50)], [1], nodata=0)
    data = ScenesTiles([ds])
    for index, query in BoxTiles(data, SIZE, 20, 1.0, generator=torch.Generator().manual_seed(2)):
        tile = data[(index, query)]
        w = window_of(ds.scene, query)
        cols = np.arange(w.col_off, w.col_off + SIZE)
        expected = np.broadcast_to(cols >= 50, (SIZE, SIZE))
        assert np.array_equal(tile["valid"].numpy(), expected)
        assert len(tile["boxes"]) == 1  # the whole box, in tile pixels
        assert tile["boxes"][0].tolist() == [48 - w.col_off, 40 - w.row_off, 58 - w.col_off,
                                             50 - w.row_off]  # fmt: skip


def test_single_scene_geosampler(mixed):
    ds = mixed.datasets[2]  # the plain PNG (pixel tiling space)
    sampler = BoxGeoSampler(ds, SIZE, 30, generator=torch.Generator().manual_seed(0))
    windows = [window_of(ds.scene, q) for q in sampler]
    assert len(windows) == len(sampler) == 30
    assert all(any(_holds(w, b) for b in ds.boxes.xyxy) for w in windows)


@pytest.mark.parametrize(
    ("low", "high", "extent", "expected"),
    [
        (0, 10, 500, range(0, 1)),  # at the start edge: only offset 0
        (490, 500, 500, range(436, 437)),  # at the far edge: only extent - size
        (100, 110, 500, range(46, 101)),  # anywhere that keeps the box in
        (100, 300, 500, range(100, 237)),  # larger than a tile: the tile inside the box
        (5, 15, 40, range(0, 1)),  # scene smaller than a tile
    ],
)
def test_box_offset_range(low, high, extent, expected):
    g = torch.Generator().manual_seed(0)
    got = {box_offset(low, high, extent, SIZE, g) for _ in range(400)}
    assert got <= set(expected)
    assert min(got) == expected[0] and max(got) == expected[-1]


def test_box_tiles_train_end_to_end_and_enter_the_stage_fingerprints(jmlgeo, tmp_path):
    from conftest import pixel_box, write_boxes

    data = np.random.default_rng(0).integers(0, 255, (3, 160, 120)).astype(np.uint8)
    scene = write_scene(tmp_path / "s.tif", data)
    boxes = write_boxes(
        tmp_path / "b.gpkg", [pixel_box(2, 2, 14, 12), pixel_box(100, 140, 118, 158)], ["a", "b"]
    )
    out = tmp_path / "run"
    args = ["train", scene, "--boxes", boxes, "--out", out, "--tile-size", "64"]
    args += ["--batch-size", "2", "--loader-workers", "0", "--workers", "1", "--progress"]
    args += ["none", "--stage1-steps", "1", "--stage2-steps", "1", "--proposals", "grabcut"]
    first = jmlgeo(*args, "--box-tiles", "0.5", "--loss", "ce")
    assert first.code == 0, first.err
    again = jmlgeo(*args, "--box-tiles", "0.5", "--loss", "ce")
    assert "reused finished stages: proposals:grabcut, stage1, stage2, bundle" in again.err
    off = jmlgeo(*args, "--loss", "ce", "--resume")  # box tiles off: both stages again
    assert off.code == 0, off.err
    reused = off.err.split("reused finished stages:")[1].splitlines()[0]
    assert "proposals:grabcut" in reused and "stage1" not in reused and "stage2" not in reused
