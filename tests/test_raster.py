import warnings

import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import write_scene
from rasterio.windows import Window

from jmlnet_geo.errors import InputFileError
from jmlnet_geo.io.raster import (
    PlainImageWarning,
    band_statistics,
    open_dataset,
    open_scene,
    open_scenes,
    read_window,
)


def test_uint16_four_band_scene_with_nodata_reads_correctly(tmp_path):
    data = np.arange(4 * 30 * 40, dtype=np.uint16).reshape(4, 30, 40) + 100
    data[:, :5, :7] = 0  # nodata corner
    path = write_scene(tmp_path / "ms.tif", data, nodata=0)
    scene = open_scene(path)
    assert (scene.count, scene.dtype, scene.nodata) == (4, "uint16", 0)
    assert (scene.width, scene.height, scene.res) == (40, 30, (0.5, 0.5))
    assert scene.crs_name == "EPSG:32632" and scene.georeferenced
    with open_dataset(scene) as ds:
        image, valid = read_window(ds, scene, Window(0, 0, 40, 30))
    assert image.dtype == np.uint16 and image.shape == (4, 30, 40)
    np.testing.assert_array_equal(image, data)
    assert not valid[:5, :7].any() and valid[5:, :].all() and valid[:, 7:].all()
    stats = band_statistics(scene)
    band1 = data[0][data[0] > 0]
    assert stats[0].minimum == band1.min() and stats[0].maximum == band1.max()
    assert stats[0].mean == pytest.approx(band1.mean())
    assert stats[3].valid_fraction == pytest.approx(1 - 35 / 1200)
    assert not stats[0].approximate


def test_window_past_the_edge_is_padded_and_invalid(rgb_scene):
    scene = open_scene(rgb_scene)
    with open_dataset(scene) as ds:
        image, valid = read_window(ds, scene, Window(90, 70, 20, 20))
        inside, _ = read_window(ds, scene, Window(90, 70, 10, 10))
    assert image.shape == (3, 20, 20)
    assert valid[:10, :10].all() and not valid[10:, :].any() and not valid[:, 10:].any()
    np.testing.assert_array_equal(image[:, :10, :10], inside)


def test_alpha_band_is_a_mask_not_a_band(tmp_path):
    data = np.full((4, 10, 10), 50, np.uint8)
    data[3, :, :5] = 0
    path = write_scene(tmp_path / "rgba.tif", data)
    with rasterio.open(path, "r+") as ds:
        ds.colorinterp = [
            rasterio.enums.ColorInterp.red,
            rasterio.enums.ColorInterp.green,
            rasterio.enums.ColorInterp.blue,
            rasterio.enums.ColorInterp.alpha,
        ]
    scene = open_scene(path)
    assert scene.bands == (1, 2, 3)
    with open_dataset(scene) as ds:
        _, valid = read_window(ds, scene, Window(0, 0, 10, 10))
    assert not valid[:, :5].any() and valid[:, 5:].all()


def test_plain_png_is_pixel_space_with_one_warning(tmp_path):
    a = write_scene(tmp_path / "a.png", np.zeros((3, 20, 30), np.uint8), crs=None)
    b = write_scene(tmp_path / "b.png", np.zeros((3, 20, 30), np.uint8), crs=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scenes = open_scenes([a, b])
    ours = [w for w in caught if issubclass(w.category, PlainImageWarning)]
    assert len(ours) == 1 and "a.png, b.png" in str(ours[0].message)
    assert not [w for w in caught if "NotGeoreferenced" in w.category.__name__]
    assert scenes[0].transform == Affine.identity() and scenes[0].crs is None
    assert not scenes[0].georeferenced and scenes[0].crs_name == "pixel coordinates"


def test_large_scene_statistics_are_decimated(tmp_path):
    data = np.full((1, 400, 500), 7, np.float32)
    scene = open_scene(write_scene(tmp_path / "f.tif", data))
    stats = band_statistics(scene, max_pixels=10_000)
    assert stats[0].approximate and stats[0].mean == 7 and stats[0].std == 0


@pytest.mark.parametrize("case", ["missing", "folder", "not_raster", "rotated"])
def test_bad_scenes_raise_one_clear_error(tmp_path, case):
    path = tmp_path / "bad.tif"
    if case == "folder":
        path.mkdir()
    elif case == "not_raster":
        path.write_text("hello")
    elif case == "rotated":
        write_scene(
            path, np.zeros((1, 5, 5), np.uint8), transform=Affine(0.5, 0.1, 0, 0.1, -0.5, 0)
        )
    with pytest.raises(InputFileError) as err:
        open_scene(path)
    message = str(err.value)
    assert "bad.tif" in message and "\n" not in message
    assert {
        "missing": "not found",
        "folder": "folder",
        "not_raster": "cannot be read",
        "rotated": "gdalwarp",
    }[case] in message


@pytest.mark.parametrize("col, row", [(-40, -10), (50, 60), (90, -5), (-300, 10), (0, 0)])
def test_read_padded_matches_a_boundless_read(tmp_path, col, row):
    from jmlnet_geo.io.raster import read_padded

    data = np.random.default_rng(1).integers(1, 250, (3, 100, 120), dtype=np.uint8)
    data[:, :10, :10] = 0
    path = write_scene(tmp_path / "s.tif", data, nodata=0)
    window = Window(col, row, 64, 48)
    with rasterio.open(path) as ds:
        for masks, fill in ((False, 7), (True, 0)):
            ours = read_padded(ds, [1, 2, 3], window, fill, masks=masks)
            if masks:
                theirs = ds.read_masks([1, 2, 3], window=window, boundless=True)
            else:
                theirs = ds.read([1, 2, 3], window=window, boundless=True, fill_value=fill)
            assert ours.shape == (3, 48, 64) and ours.dtype == theirs.dtype
            np.testing.assert_array_equal(ours, theirs)
