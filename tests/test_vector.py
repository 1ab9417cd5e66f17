import warnings

import numpy as np
import pytest
from conftest import UTM, pixel_box, write_boxes, write_scene
from pyproj import Transformer
from shapely.geometry import LineString, Point, box

from jmlnet_geo.errors import BoxLayerError, CRSMismatchError, InputFileError, NoOverlapError
from jmlnet_geo.io.raster import open_scene
from jmlnet_geo.io.vector import (
    BoxesDroppedWarning,
    boxes_for_scene,
    boxes_for_scenes,
    read_boxes,
)


def _lonlat_box(scene, col0, row0, col1, row1):
    """The lon/lat envelope of a pixel rectangle of the scene."""
    to_ll = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    xs, ys = scene.transform @ (
        np.array([col0, col1, col1, col0]),
        np.array([row0, row0, row1, row1]),
    )
    lon, lat = to_ll.transform(xs, ys)
    return box(min(lon), min(lat), max(lon), max(lat))


def _expected_pixels(scene, lonlat):
    """Independent answer: densely sampled lon/lat rectangle edges -> UTM -> pixels -> envelope."""
    to_utm = Transformer.from_crs("EPSG:4326", UTM, always_xy=True)
    edge = np.asarray(lonlat.exterior.segmentize(lonlat.length / 4000).coords)
    x, y = to_utm.transform(edge[:, 0], edge[:, 1])
    cols, rows = ~scene.transform @ (x, y)
    return np.array([cols.min(), rows.min(), cols.max(), rows.max()])


@pytest.mark.parametrize("easting", [500_000.0, 680_000.0])  # on and 2 degrees off the meridian
def test_lonlat_boxes_land_within_one_pixel_on_utm_scene(tmp_path, easting):
    from affine import Affine

    transform = Affine(0.5, 0, easting, 0, -0.5, 5_000_000.0)
    scene = open_scene(
        write_scene(tmp_path / "s.tif", np.zeros((1, 400, 400), np.uint8), transform=transform)
    )
    rects = [(20, 30, 60, 50), (100.5, 200.25, 390, 380), (0, 0, 12, 9)]
    lonlat = [_lonlat_box(scene, *r) for r in rects]
    path = write_boxes(tmp_path / "b.gpkg", lonlat, ["car", "roof", "car"], crs="EPSG:4326")
    got = boxes_for_scene(read_boxes(path), scene)
    assert len(got) == 3
    for xyxy, ll in zip(got.xyxy, lonlat, strict=True):
        np.testing.assert_allclose(xyxy, _expected_pixels(scene, ll).clip(0, 400), atol=1.0)
    if easting == 500_000.0:  # on the central meridian the round trip is exact to 1 px
        np.testing.assert_allclose(got.xyxy, np.array(rects, float), atol=1.0)


def test_classes_map_to_stable_ids(tmp_path, rgb_scene):
    geoms = [pixel_box(1, 1, 10, 10)] * 3
    layer = read_boxes(write_boxes(tmp_path / "s.gpkg", geoms, ["tank", "car", "tank"]))
    assert layer.classes.names == ("car", "tank")
    assert list(layer.frame["class_id"]) == [2, 1, 2]
    ints = read_boxes(write_boxes(tmp_path / "i.gpkg", geoms, [10, 2, 10]))
    assert ints.classes.names == ("2", "10")  # numeric order, not "10" < "2"
    assert list(ints.frame["class_id"]) == [2, 1, 2]
    floats = read_boxes(write_boxes(tmp_path / "f.gpkg", geoms, [3.0, 1.0, 3.0]))
    assert floats.classes.names == ("1", "3")
    fixed = read_boxes(tmp_path / "s.gpkg", classes=["tank", "car", "ship"])
    assert list(fixed.frame["class_id"]) == [1, 2, 1]
    with pytest.raises(BoxLayerError, match="classes tank are not among the expected"):
        read_boxes(tmp_path / "s.gpkg", classes=["car", "ship"])


def test_boxes_are_clipped_dropped_and_counted(tmp_path, rgb_scene):
    scene = open_scene(rgb_scene)  # 100 x 80 px
    geoms = [
        pixel_box(10, 10, 20, 20),  # inside
        pixel_box(90, 70, 130, 95),  # partly outside: clipped
        pixel_box(200, 200, 220, 220),  # entirely outside
        pixel_box(30, 30, 31, 40),  # 1 px wide: degenerate
        pixel_box(99, 10, 120, 20),  # 1 px left after clipping: degenerate
        Point(0, 0).buffer(0).buffer(0),  # empty geometry
    ]
    layer = read_boxes(write_boxes(tmp_path / "b.gpkg", geoms, ["a"] * 6))
    assert layer.empty == 1
    with pytest.warns(BoxesDroppedWarning, match=r"dropped 4 box\(es\).*1 with empty.*kept 2"):
        (got,) = boxes_for_scenes(layer, [scene])
    np.testing.assert_allclose(got.xyxy, [[10, 10, 20, 20], [90, 70, 100, 80]])
    assert got.clipped == 1 and list(got.features) == [0, 1]


def test_plain_images_take_boxes_by_image_column(tmp_path):
    a = open_scene(write_scene(tmp_path / "a.png", np.zeros((3, 50, 60), np.uint8), crs=None))
    b = open_scene(write_scene(tmp_path / "b.png", np.zeros((3, 50, 60), np.uint8), crs=None))
    geoms = [box(1, 2, 11, 22), box(5, 5, 25, 15), box(30, 30, 40, 45)]
    path = write_boxes(
        tmp_path / "p.gpkg", geoms, ["x", "y", "x"], crs=None, image=["a.png", "b", "b.png"]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every box is used: no warning
        got_a, got_b = boxes_for_scenes(read_boxes(path), [a, b])
    np.testing.assert_allclose(got_a.xyxy, [[1, 2, 11, 22]])  # y is the row (y down)
    np.testing.assert_allclose(got_b.xyxy, [[5, 5, 25, 15], [30, 30, 40, 45]])
    no_column = write_boxes(tmp_path / "n.gpkg", geoms, ["x"] * 3, crs=None)
    with pytest.raises(BoxLayerError, match="no 'image' column"):
        boxes_for_scenes(read_boxes(no_column), [a, b])


def test_crs_mismatches_are_explained(tmp_path, rgb_scene):
    scene = open_scene(rgb_scene)
    no_crs = write_boxes(tmp_path / "n.gpkg", [pixel_box(1, 1, 9, 9)], ["a"], crs=None)
    with pytest.raises(
        CRSMismatchError, match=r"n.gpkg: the box layer has no CRS while .* EPSG:32632"
    ):
        boxes_for_scene(read_boxes(no_crs), scene)
    png = open_scene(write_scene(tmp_path / "p.png", np.zeros((1, 9, 9), np.uint8), crs=None))
    with_crs = write_boxes(tmp_path / "c.gpkg", [pixel_box(1, 1, 9, 9)], ["a"])
    with pytest.raises(
        CRSMismatchError, match="p.png: has no georeferencing but c.gpkg is in EPSG:32632"
    ):
        boxes_for_scene(read_boxes(with_crs), png)


def test_no_overlap_gives_both_extents(tmp_path, rgb_scene):
    far = write_boxes(tmp_path / "far.gpkg", [box(0, 0, 10, 10)], ["a"])
    with pytest.raises(NoOverlapError) as err:
        boxes_for_scenes(read_boxes(far), [open_scene(rgb_scene)])
    message = str(err.value)
    assert "(0, 0, 10, 10)" in message and "(500000, 4.99996e+06, 500050, 5e+06)" in message
    assert "EPSG:32632" in message and "\n" not in message


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing", "box file not found"),
        ("empty", "has no features"),
        ("no_field", "no class field 'class' (columns: kind, feature_id)"),
        ("points", "box layers need polygons, found 1 Point, 1 LineString"),
        ("null_class", "1 feature(s) have no value in 'class'"),
        ("not_vector", "cannot be read as a vector layer"),
    ],
)
def test_bad_box_layers(tmp_path, case, expected):
    path = tmp_path / "boxes.gpkg"
    if case == "empty":
        write_boxes(path, [], [])
    elif case == "no_field":
        import geopandas as gpd

        gpd.GeoDataFrame(
            {"kind": ["a"], "feature_id": [1]}, geometry=[box(0, 0, 1, 1)], crs=UTM
        ).to_file(path)
    elif case == "points":
        write_boxes(path, [Point(1, 1), LineString([(0, 0), (1, 1)]), box(0, 0, 2, 2)], ["a"] * 3)
    elif case == "null_class":
        write_boxes(path, [box(0, 0, 2, 2), box(0, 0, 3, 3)], ["a", None])
    elif case == "not_vector":
        path.write_text("not a geopackage")
    with pytest.raises((BoxLayerError, InputFileError)) as err:
        read_boxes(path)
    assert expected in str(err.value) and "boxes.gpkg" in str(err.value)


@pytest.mark.shared_data
def test_spacenet_labels_in_lonlat_land_where_the_utm_ones_do(tmp_path):
    from conftest import needs_shared_data

    root = needs_shared_data("spacenet_solaris_sample")
    scene = open_scene(root / "sample_geotiff.tif")
    assert (scene.crs_name, scene.dtype, scene.count) == ("EPSG:32616", "uint16", 1)
    utm = boxes_for_scene(
        read_boxes(root / "geotiff_labels.geojson", class_field="building"), scene
    )
    import geopandas as gpd

    lonlat = gpd.read_file(root / "geotiff_labels.geojson").to_crs("EPSG:4326")
    lonlat.to_file(tmp_path / "ll.gpkg")
    moved = boxes_for_scene(read_boxes(tmp_path / "ll.gpkg", class_field="building"), scene)
    assert len(utm) == len(moved) == 43
    np.testing.assert_allclose(moved.xyxy, utm.xyxy, atol=1.0)


def test_select_keeps_the_chosen_boxes_of_the_scene(tmp_path):
    scene = open_scene(write_scene(tmp_path / "a.png", np.zeros((3, 50, 60), np.uint8), crs=None))
    geoms = [box(1, 2, 11, 22), box(5, 5, 25, 15), box(30, 30, 40, 45)]
    layer = read_boxes(write_boxes(tmp_path / "p.gpkg", geoms, ["x", "y", "x"], crs=None))
    (sb,) = boxes_for_scenes(layer, [scene])
    picked = sb.select([2, 0])
    assert picked.scene is sb.scene and len(picked) == 2
    np.testing.assert_array_equal(picked.xyxy, sb.xyxy[[2, 0]])
    np.testing.assert_array_equal(picked.class_ids, sb.class_ids[[2, 0]])
    assert list(picked.features) == [2, 0]
