"""Hostile truth layers and full disks: `evaluate` off the raster, ENOSPC during `train`."""

import builtins
import errno
import os

import numpy as np
import pytest
from conftest import pixel_box, write_boxes, write_scene
from hostile import assert_refused
from shapely.geometry import box

ONE_STEP = ["--stage1-steps", "1", "--stage2-steps", "1", "--tile-size", "32", "--batch-size", "2"]
ONE_STEP += ["--workers", "1", "--loader-workers", "0", "--progress", "none"]
ONE_STEP += ["--checkpoint-every", "1"]


def _classes(path, value=1):
    data = np.zeros((1, 40, 40), np.uint8)
    data[0, 5:20, 5:20] = value
    return write_scene(path, data)


FAR_TRUTH = {  # a truth layer that does not overlap the raster (UTM 32N near 500000, 5000000)
    "far-away": dict(geometries=[box(0, 0, 10, 10)]),
    "wgs84-where-utm-is": dict(geometries=[box(9.0, 45.0, 9.001, 45.001)], crs="EPSG:4326"),
    "utm-read-as-wgs84": dict(geometries=[pixel_box(5, 5, 20, 20)], crs="EPSG:4326"),
    "other-utm-zone": dict(geometries=[pixel_box(5, 5, 20, 20)], crs="EPSG:32633"),
}


@pytest.mark.parametrize("name", sorted(FAR_TRUTH))
def test_evaluate_truth_off_the_raster_is_refused(jmlgeo, tmp_path, name):
    pred = _classes(tmp_path / "p.classes.tif")
    spec = FAR_TRUTH[name]
    truth = write_boxes(tmp_path / "truth.gpkg", spec["geometries"], ["x"], crs=spec.get("crs"))
    out = tmp_path / "report.json"
    result = jmlgeo("evaluate", pred, "--truth", truth, "--out", out)
    assert_refused(result, "truth.gpkg", outputs=(out,))
    assert "mIoU" not in result.out


def test_evaluate_pooled_truth_off_every_raster_is_refused(jmlgeo, tmp_path):
    preds = tmp_path / "preds"
    preds.mkdir()
    for stem in ("a", "b"):
        _classes(preds / f"{stem}.classes.tif")
    truth = write_boxes(tmp_path / "truth.gpkg", [box(0, 0, 10, 10)], ["x"])
    result = jmlgeo("evaluate", preds, "--truth", truth)
    assert_refused(result, "truth.gpkg", "2 class rasters")


def test_evaluate_truth_on_one_raster_of_two_still_scores(jmlgeo, tmp_path):
    preds = tmp_path / "preds"
    preds.mkdir()
    _classes(preds / "a.classes.tif")
    far = np.zeros((1, 40, 40), np.uint8)
    from affine import Affine

    write_scene(preds / "b.classes.tif", far, transform=Affine(0.5, 0, 600_000, 0, -0.5, 5e6))
    truth = write_boxes(tmp_path / "truth.gpkg", [pixel_box(5, 5, 20, 20)], ["x"])
    result = jmlgeo("evaluate", preds, "--truth", truth)
    assert result.code == 0, result.err
    assert "no truth polygon for b.classes.tif" in result.err  # stated, not silent


@pytest.fixture
def small(tmp_path):
    rng = np.random.default_rng(0)
    scene = write_scene(tmp_path / "s.tif", rng.integers(0, 255, (3, 48, 48), np.uint8))
    boxes = write_boxes(tmp_path / "b.gpkg", [pixel_box(4, 4, 24, 24)], ["x"])
    return scene, boxes


def _no_final_outputs(run):
    assert not (run / "model.safetensors").exists()
    hidden = [p for p in run.rglob(".*") if "partial" in p.name or "jmlgeo-" in p.name]
    assert hidden == [], hidden


def _full_safetensors(monkeypatch, which):
    import safetensors.torch
    from safetensors import SafetensorError

    real = safetensors.torch.save_file

    def save_file(tensors, filename, metadata=None):
        if which in os.path.basename(filename):
            raise SafetensorError(
                "Error while serializing: I/O error: No space left on device (os error 28)"
            )
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)


@pytest.mark.parametrize("which,named", [("weights", "stage1/weights.safetensors"),
                                         ("model", "model.safetensors")])  # fmt: skip
def test_full_disk_writing_weights_during_train(jmlgeo, tmp_path, small, monkeypatch, which, named):
    _full_safetensors(monkeypatch, which)
    run = tmp_path / "run"
    result = jmlgeo("train", *small[:1], "--boxes", small[1], "--out", run, *ONE_STEP)
    line = assert_refused(result, named, os.strerror(errno.ENOSPC), "free some space")
    assert "os error" not in line
    _no_final_outputs(run)
    assert not (run / named).exists()


def test_full_disk_writing_a_checkpoint_during_train(jmlgeo, tmp_path, small, monkeypatch):
    import jmlnet_geo.io.write as write

    real = builtins.open

    class Full:
        def __init__(self, file):
            self.file = file

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def full_open(path, mode="r", *args, **kwargs):
        handle = real(path, mode, *args, **kwargs)
        return Full(handle) if "ckpt" in str(path) and "w" in mode else handle

    monkeypatch.setattr(write, "open", full_open, raising=False)
    run = tmp_path / "run"
    result = jmlgeo("train", *small[:1], "--boxes", small[1], "--out", run, *ONE_STEP)
    line = assert_refused(result, ".ckpt", os.strerror(errno.ENOSPC))
    assert "stage1" in line and "/tmp/tmp" not in line
    _no_final_outputs(run)
    assert not list(run.rglob("*.ckpt"))
