"""Hostile box data sets: malformed COCO and DOTA files give one line and write nothing."""

import json

import numpy as np
import pytest
from conftest import write_scene
from hostile import assert_refused


def _coco(**changes):
    data = {
        "images": [{"id": 1, "file_name": "a.png", "height": 20, "width": 30}],
        "categories": [{"id": 1, "name": "car"}],
        "annotations": [
            {"id": 5, "image_id": 1, "category_id": 1, "bbox": [1, 2, 5, 6],
             "segmentation": [[1, 2, 6, 2, 6, 8, 1, 8]]}
        ],
    }  # fmt: skip
    for key, value in changes.items():
        if key.startswith("ann_"):
            data["annotations"][0][key[4:]] = value
        elif key.startswith("img_"):
            data["images"][0][key[4:]] = value
        else:
            data[key] = value
    return data


BAD_COCO = {
    "bbox-inf": _coco(ann_bbox=[1, 2, 1e999, 3]),
    "bbox-nan": _coco(ann_bbox=[float("nan"), 2, 3, 3]),
    "bbox-strings": _coco(ann_bbox=["1", "2", "3", "4"]),
    "bbox-three": _coco(ann_bbox=[1, 2, 3]),
    "bbox-five": _coco(ann_bbox=[1, 2, 3, 4, 5]),
    "bbox-negative-size": _coco(ann_bbox=[1, 2, -3, 4]),
    "bbox-null": _coco(ann_bbox=None),
    "bbox-object": _coco(ann_bbox={"x": 1}),
    "bbox-bool": _coco(ann_bbox=[True, 2, 3, 4]),
    "no-bbox": _coco(ann_bbox=None) | {"annotations": [{"id": 5, "image_id": 1, "category_id": 1}]},
    "unknown-image": _coco(ann_image_id=9),
    "unknown-category": _coco(ann_category_id=9),
    "no-image-id": _coco() | {"annotations": [{"id": 5, "category_id": 1, "bbox": [1, 2, 3, 4]}]},
    "image-no-file-name": _coco(images=[{"id": 1, "height": 20, "width": 30}]),
    "images-not-list": _coco(images={"id": 1}),
    "annotations-not-list": _coco(annotations="x"),
    "categories-no-name": _coco(categories=[{"id": 1}]),
    "top-level-list": [1, 2],
    "top-level-number": 3,
    "missing-annotations": {"images": [], "categories": []},
    "ann-string": _coco(annotations=["x"]),
    "rle-overrun": _coco(ann_segmentation={"size": [20, 30], "counts": [10, 10**6]}),
    "rle-huge": _coco(ann_segmentation={"size": [100_000, 100_000], "counts": [1, 2]}),
    "rle-negative": _coco(ann_segmentation={"size": [20, 30], "counts": [-5, 10]}),
    "rle-strings-in-list": _coco(ann_segmentation={"size": [20, 30], "counts": ["a", 1]}),
    "rle-size-strings": _coco(ann_segmentation={"size": ["x", 30], "counts": [1]}),
    "polygon-nan": _coco(ann_segmentation=[[1, 2, float("nan"), 2, 6, 8]]),
    "polygon-odd": _coco(ann_segmentation=[[1, 2, 6, 2, 6, 8, 1]]),
    "polygon-strings": _coco(ann_segmentation=[["a", "b", "c", "d", "e", "f"]]),
}


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    write_scene(folder / "a.png", np.zeros((3, 20, 30), np.uint8), crs=None)
    return folder


@pytest.mark.parametrize("name", sorted(BAD_COCO))
def test_malformed_coco_writes_nothing(jmlgeo, tmp_path, images, name):
    src = tmp_path / "inst.json"
    src.write_text(json.dumps(BAD_COCO[name]))  # Python writes NaN/Infinity, as some tools do
    boxes, truth = tmp_path / "b.gpkg", tmp_path / "t.gpkg"
    result = jmlgeo("import", "coco", src, "--images", images, "--out", boxes, "--truth", truth)
    assert_refused(result, "inst.json", outputs=(boxes, truth))


@pytest.mark.parametrize("raw", [b"\xff\xfe{\x00", b"{", b"", b"null"])
def test_unreadable_coco_bytes(jmlgeo, tmp_path, images, raw):
    src = tmp_path / "inst.json"
    src.write_bytes(raw)
    result = jmlgeo("import", "coco", src, "--images", images, "--out", tmp_path / "b.gpkg")
    assert_refused(result, "inst.json", outputs=(tmp_path / "b.gpkg",))


def test_a_sound_coco_still_imports(jmlgeo, tmp_path, images):
    src = tmp_path / "inst.json"
    src.write_text(json.dumps(_coco()))
    out, truth = tmp_path / "b.gpkg", tmp_path / "t.gpkg"
    result = jmlgeo("import", "coco", src, "--images", images, "--out", out, "--truth", truth)
    assert result.code == 0, result.err
    assert out.exists() and truth.exists()


def test_coco_truth_failing_leaves_no_box_layer(jmlgeo, tmp_path, images):
    src = tmp_path / "inst.json"
    src.write_text(json.dumps(_coco()))
    out = tmp_path / "b.gpkg"
    result = jmlgeo("import", "coco", src, "--images", images, "--out", out, "--truth",
                    tmp_path / "t.txt")  # fmt: skip
    assert_refused(result, "t.txt", outputs=(out,))


BAD_DOTA = {
    "strings": "a b c d e f g h car\n",
    "seven-numbers": "1 2 3 4 5 6 7 car\n",
    "no-class": "1 2 3 4 5 6 7 8\n",
    "nan": "nan 2 3 4 5 6 7 8 car\n",
    "inf": "1 2 inf 4 5 6 7 8 car\n",
    "difficult-word": "1 2 3 4 5 6 7 8 car hard\n",
    "empty": "",
    "header-only": "imagesource:x\ngsd:0.5\n",
}


@pytest.mark.parametrize("name", sorted(BAD_DOTA))
def test_malformed_dota_writes_nothing(jmlgeo, tmp_path, images, name):
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "a.txt").write_text(BAD_DOTA[name])
    out = tmp_path / "b.gpkg"
    result = jmlgeo("import", "dota", labels, "--images", images, "--out", out)
    assert_refused(result, "a" if name in ("empty", "header-only") else "a.txt", outputs=(out,))


def test_non_utf8_dota(jmlgeo, tmp_path, images):
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "a.txt").write_bytes(b"1 2 3 4 5 6 7 8 \xe9\xff\n")
    out = tmp_path / "b.gpkg"
    result = jmlgeo("import", "dota", labels, "--images", images, "--out", out)
    assert_refused(result, "a.txt", "UTF-8", outputs=(out,))
