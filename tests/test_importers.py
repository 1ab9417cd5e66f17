import json

import geopandas as gpd
import numpy as np
import pytest
from conftest import needs_shared_data, write_scene

from jmlnet_geo.errors import InputFileError
from jmlnet_geo.io.importers import _decode_rle_string, _rle_to_mask, import_coco, import_dota
from jmlnet_geo.io.raster import PlainImageWarning, open_scenes
from jmlnet_geo.io.vector import boxes_for_scenes, read_boxes

NWPU_COUNTS = {
    "airplane": 562,
    "ship": 237,
    "storage_tank": 624,
    "baseball_diamond": 328,
    "tennis_court": 446,
    "basketball_court": 143,
    "ground_track_field": 132,
    "harbor": 162,
    "bridge": 94,
    "vehicle": 450,
}


def _encode_rle_string(counts):
    """COCO's compressed RLE encoder (reference algorithm), to test our decoder against."""
    out = []
    for i, value in enumerate(counts):
        x = value - counts[i - 2] if i > 2 else value
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def _coco(tmp_path, with_images=True):
    images = tmp_path / "imgs"
    images.mkdir()
    if with_images:
        for name in ("one.png", "two.png"):
            write_scene(images / name, np.zeros((3, 40, 50), np.uint8), crs=None)
    mask = np.zeros((40, 50), bool)
    mask[10:20, 5:9] = True  # a 4 x 10 block: RLE runs down the columns
    flat = mask.T.ravel()
    change = np.flatnonzero(np.diff(np.r_[False, flat, not flat[-1]]))
    counts = np.diff(np.r_[0, change]).tolist()
    data = {
        "images": [
            {"id": 1, "file_name": "one.png", "width": 50, "height": 40},
            {"id": 2, "file_name": "sub/two.png", "width": 50, "height": 40},
        ],
        "categories": [{"id": 7, "name": "tank"}, {"id": 9, "name": "car"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 7,
                "bbox": [10, 5, 20, 10],
                "segmentation": [[10, 5, 30, 5, 30, 15, 10, 15]],
                "iscrowd": 0,
            },
            {
                "id": 2,
                "image_id": 1,
                "category_id": 9,
                "bbox": [5, 10, 4, 10],
                "segmentation": {"size": [40, 50], "counts": _encode_rle_string(counts)},
                "iscrowd": 1,
            },
            {
                "id": 3,
                "image_id": 2,
                "category_id": 9,
                "bbox": [0, 0, 3, 3],
                "segmentation": [[0, 0, 3, 0, 3, 3, 0, 3]],
                "iscrowd": 0,
            },
        ],
    }
    (images / "sub").mkdir()
    if with_images:
        (images / "two.png").rename(images / "sub" / "two.png")
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path, images


def test_rle_string_roundtrip():
    counts = [3, 17, 250, 2, 900, 1, 40000, 5]
    assert _decode_rle_string(_encode_rle_string(counts)) == counts
    mask = _rle_to_mask({"size": [2, 3], "counts": [1, 2, 3]}, 2, 3)
    np.testing.assert_array_equal(mask, [[False, True, False], [True, False, False]])


def test_coco_import_boxes_truth_and_plain_scenes(tmp_path):
    path, images = _coco(tmp_path)
    summary = import_coco(path, images, tmp_path / "boxes.gpkg", tmp_path / "truth.gpkg")
    assert (summary.boxes, summary.truth, summary.per_class) == (3, 3, {"car": 2, "tank": 1})
    boxes = gpd.read_file(tmp_path / "boxes.gpkg")
    assert boxes.crs is None and list(boxes["image"]) == ["one.png", "one.png", "two.png"]
    assert boxes.geometry.iloc[0].bounds == (10, 5, 30, 15)
    truth = gpd.read_file(tmp_path / "truth.gpkg").set_index("annotation_id")
    assert truth.geometry.loc[1].area == pytest.approx(200)
    assert truth.geometry.loc[2].bounds == (5, 10, 9, 20) and truth.geometry.loc[2].area == 40
    with pytest.warns(PlainImageWarning, match="2 scene"):
        scenes = open_scenes([images / "one.png", images / "sub" / "two.png"])
    one, two = boxes_for_scenes(read_boxes(tmp_path / "boxes.gpkg"), scenes)
    np.testing.assert_allclose(one.xyxy, [[10, 5, 30, 15], [5, 10, 9, 20]])
    np.testing.assert_allclose(two.xyxy, [[0, 0, 3, 3]])


def test_coco_with_missing_images_is_an_error(tmp_path):
    path, images = _coco(tmp_path, with_images=False)
    with pytest.raises(InputFileError, match=r"instances.json names 2 of 2 images that are not in"):
        import_coco(path, images, tmp_path / "boxes.gpkg")
    assert not (tmp_path / "boxes.gpkg").exists()


@pytest.mark.shared_data
def test_nwpu_import_gives_exactly_the_readme_counts(tmp_path):
    root = needs_shared_data("nwpu_vhr10_train")
    summary = import_coco(
        root / "NWPU_instances_train.json", root / "imgs", tmp_path / "b.gpkg", tmp_path / "t.gpkg"
    )
    assert summary.boxes == 3178 and summary.images == 520 and summary.truth == 3178
    assert summary.per_class == NWPU_COUNTS
    layer = read_boxes(tmp_path / "b.gpkg")
    assert len(layer.frame) == 3178 and len(layer.classes) == 10


@pytest.mark.shared_data
def test_dota_import_gives_one_envelope_per_quadrilateral(tmp_path):
    root = needs_shared_data("dota_devkit_examples")
    quads = {}
    for txt in sorted((root / "labelTxt").glob("*.txt")):
        lines = [ln.split() for ln in txt.read_text().splitlines()]
        quads[txt.stem] = [ln for ln in lines if len(ln) >= 9]
    summary = import_dota(root / "labelTxt", root / "images", tmp_path / "d.gpkg")
    assert summary.boxes == sum(len(q) for q in quads.values()) == 600
    frame = gpd.read_file(tmp_path / "d.gpkg")
    first = quads["P0706"][0]
    xs, ys = [float(v) for v in first[0:8:2]], [float(v) for v in first[1:8:2]]
    assert frame.geometry.iloc[0].bounds == (min(xs), min(ys), max(xs), max(ys))
    assert frame["difficult"].iloc[0] == int(first[9]) and frame["class"].iloc[0] == first[8]
    assert frame["gsd"].iloc[0] == pytest.approx(0.255589285596)
    assert set(frame["image"]) == {"P0706.png", "P1888.png"}


def test_dota_errors(tmp_path):
    labels = tmp_path / "labelTxt"
    labels.mkdir()
    (tmp_path / "images").mkdir()
    (labels / "P1.txt").write_text("imagesource:x\n1 2 3 4 5 6 7 8 ship 0\n")
    with pytest.raises(
        InputFileError, match=r"1 of 1 label files have no image .* \(e.g. P1.png\)"
    ):
        import_dota(labels, tmp_path / "images", tmp_path / "d.gpkg")
    write_scene(tmp_path / "images" / "P1.png", np.zeros((3, 9, 9), np.uint8), crs=None)
    (labels / "P1.txt").write_text("1 2 3 4 ship\n")
    with pytest.raises(InputFileError, match=r"P1.txt:1: expected 'x1 y1 ... x4 y4 class"):
        import_dota(labels, tmp_path / "images", tmp_path / "d.gpkg")
    assert not (tmp_path / "d.gpkg").exists()


def write_isaid(folder, name="P0001"):
    """A 6 x 8 iSAID sample: two small vehicles (ids 1, 2) and one plane (id 300)."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    ids = np.zeros((6, 8), np.int64)
    ids[1:3, 1:4] = 1
    ids[4:6, 0:2] = 2
    ids[0:4, 5:8] = 300
    colour = np.zeros((6, 8, 3), np.uint8)
    colour[(ids == 1) | (ids == 2)] = (0, 0, 127)  # small_vehicle
    colour[ids == 300] = (0, 127, 255)  # plane
    packed = np.stack([ids % 256, (ids // 256) % 256, ids // 65536], axis=-1).astype(np.uint8)
    for suffix, rgb in (
        ("", colour),
        ("_instance_color_RGB", colour),
        ("_instance_id_RGB", packed),
    ):
        cv2.imwrite(str(folder / f"{name}{suffix}.png"), rgb[:, :, ::-1])
    return ids


def test_isaid_import_boxes_truth_and_rasters(tmp_path):
    import rasterio

    from jmlnet_geo.io.isaid import import_isaid

    write_isaid(tmp_path / "data" / "val" / "images")
    out, truth, rasters = tmp_path / "b.gpkg", tmp_path / "t.gpkg", tmp_path / "truth"
    summary = import_isaid(tmp_path / "data", out, truth=truth, truth_rasters=rasters)
    assert (summary.boxes, summary.images) == (3, 1)
    assert summary.per_class == {"small_vehicle": 2, "plane": 1}
    frame = gpd.read_file(out)
    assert frame["class"].tolist() == ["small_vehicle", "small_vehicle", "plane"]
    assert set(frame["image"]) == {"P0001.png"} and frame.crs is None
    assert [tuple(g.bounds) for g in frame.geometry] == [(1, 1, 4, 3), (0, 4, 2, 6), (5, 0, 8, 4)]
    with rasterio.open(rasters / "P0001.tif") as ds:
        classes = ds.read(1)
    assert classes.sum() == 12 * 1 + 10 * 2  # plane id 1, small_vehicle id 2 (sorted names)
    polygons = gpd.read_file(truth)
    assert sorted(polygons["class"]) == ["plane", "small_vehicle", "small_vehicle"]
    assert summary.truth == 3 and polygons.area.sum() == 22


def test_isaid_errors(tmp_path):
    from jmlnet_geo.io.isaid import import_isaid

    with pytest.raises(InputFileError, match="iSAID folder not found"):
        import_isaid(tmp_path / "nope", tmp_path / "b.gpkg")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFileError, match="no image with an iSAID mask"):
        import_isaid(tmp_path / "empty", tmp_path / "b.gpkg")


def test_isaid_import_gives_exactly_the_readme_counts(tmp_path):
    from jmlnet_geo.io.isaid import import_isaid

    folder = needs_shared_data("isaid_devkit_samples")
    summary = import_isaid(folder, tmp_path / "b.gpkg")
    assert (summary.boxes, summary.images) == (306, 3)
    assert summary.per_class == {"large_vehicle": 231, "small_vehicle": 74, "storage_tank": 1}
