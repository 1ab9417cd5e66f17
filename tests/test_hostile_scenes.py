"""Hostile scenes and options: truncated files, NaN pixels, same names, option ranges."""

import errno
import os

import numpy as np
import pytest
import rasterio
import torch
from conftest import pixel_box, write_boxes, write_scene
from hostile import assert_refused, real_bundle

FRACTIONS = [0.05, 0.3, 0.6, 0.95, 0.995]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return real_bundle(tmp_path_factory.mktemp("bundle") / "m.safetensors")


def _scene(tmp_path, name="s.tif", dtype=np.uint8, size=64):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, (3, size, size)).astype(dtype)
    return write_scene(tmp_path / name, data)


def _truncate(path, fraction):
    raw = path.read_bytes()
    cut = path.with_name(f"cut{int(fraction * 1000)}.tif")
    cut.write_bytes(raw[: int(len(raw) * fraction)])
    return cut


@pytest.mark.parametrize("fraction", FRACTIONS)
def test_truncated_geotiff_info(jmlgeo, tmp_path, fraction):
    cut = _truncate(_scene(tmp_path, size=200), fraction)
    assert_refused(jmlgeo("info", cut), cut.name)


@pytest.mark.parametrize("fraction", FRACTIONS)
def test_truncated_geotiff_predict(jmlgeo, tmp_path, bundle, fraction):
    cut = _truncate(_scene(tmp_path, size=200), fraction)
    out = tmp_path / "out"
    result = jmlgeo("predict", bundle, cut, "--out", out, "--progress", "none")
    assert_refused(result, cut.name, outputs=(out / f"{cut.stem}.classes.tif",))
    assert not out.exists() or not [p for p in out.iterdir() if p.name.startswith(".")]


def test_same_file_name_twice_in_predict(jmlgeo, tmp_path, bundle):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = _scene(tmp_path / "a"), _scene(tmp_path / "b")
    out = tmp_path / "out"
    result = jmlgeo("predict", bundle, first, second, "--out", out)
    assert_refused(result, "a/s.tif", "b/s.tif", outputs=(out / "s.classes.tif",))


@pytest.mark.parametrize("declared", [None, -9999.0])
def test_nan_pixels_are_nodata_in_predict(jmlgeo, tmp_path, bundle, declared):
    data = np.random.default_rng(0).normal(100, 20, (3, 64, 64)).astype(np.float32)
    data[:, 10:20, 10:20] = np.nan
    data[1, 40, 40] = np.inf
    scene = write_scene(tmp_path / "f.tif", data, nodata=declared)
    out = tmp_path / "out"
    result = jmlgeo("predict", bundle, scene, "--out", out, "--progress", "none")
    assert result.code == 0, result.err
    with rasterio.open(out / "f.classes.tif") as ds:
        classes = ds.read(1)
    assert (classes[10:20, 10:20] == 255).all() and classes[40, 40] == 255
    valid = np.ones_like(classes, bool)
    valid[10:20, 10:20] = valid[40, 40] = False
    assert (classes[valid] != 255).all()


def test_nan_pixels_do_not_spoil_statistics(tmp_path):
    from jmlnet_geo.io.raster import band_statistics, open_scene

    data = np.full((1, 30, 30), 5.0, np.float32)
    data[0, :10] = np.nan
    stats = band_statistics(open_scene(write_scene(tmp_path / "f.tif", data)))
    assert stats[0].mean == 5.0 and abs(stats[0].valid_fraction - 2 / 3) < 1e-6


TRAIN_OPTIONS = [
    ["--lr", "-1"], ["--lr", "0"], ["--lr", "nan"], ["--lr", "inf"], ["--lr", "1e30"],
    ["--tile-size", "0"], ["--batch-size", "0"], ["--batch-size", "1"], ["--stage1-steps", "-1"],
    ["--box-tiles", "2"],
    ["--rounds", "0"], ["--warmup", "-5"], ["--box-loss-weight", "-1"],
    ["--masks-fraction", "2"], ["--val-every", "0"], ["--checkpoint-every", "0"],
    ["--devices", "0"], ["--workers", "-1"], ["--loader-workers", "-2"],
    ["--proposals", "detcam", "--tau-low", "0.9", "--tau-high", "0.1"],
    ["--proposals", "detcam", "--detector-steps", "0"],
]  # fmt: skip


@pytest.mark.parametrize("option", TRAIN_OPTIONS, ids=lambda o: " ".join(o))
def test_train_option_ranges(jmlgeo, tmp_path, option):
    scene = _scene(tmp_path)
    boxes = write_boxes(tmp_path / "b.gpkg", [pixel_box(2, 2, 20, 20)], ["x"])
    out = tmp_path / "run"
    result = jmlgeo("train", scene, "--boxes", boxes, "--out", out, *option)
    assert result.code != 0 and "Traceback" not in result.err, result.err
    assert option[-2].split("-")[-1] in result.err.lower() or option[-2] in result.err
    assert not (out / "model.safetensors").exists()


PREDICT_OPTIONS = [
    ["--window", "0"], ["--window", "-5"], ["--overlap", "-1"], ["--batch-size", "0"],
    ["--tta", "rotate"], ["--amp", "fp8"], ["--device", "tpu"], ["--loader-workers", "-1"],
    ["--overlap", "5000"],
]  # fmt: skip


@pytest.mark.parametrize("option", PREDICT_OPTIONS, ids=lambda o: " ".join(o))
def test_predict_option_ranges(jmlgeo, tmp_path, bundle, option):
    scene = _scene(tmp_path)
    out = tmp_path / "out"
    result = jmlgeo("predict", bundle, scene, "--out", out, *option)
    assert result.code != 0 and "Traceback" not in result.err, result.err
    assert not (out / "s.classes.tif").exists()


CORRUPT_STATE = [b"", b"{", b"[]", b'{"stages": 3}', b"\xff\xfe", b"null", b'"x"']


@pytest.mark.parametrize("raw", CORRUPT_STATE)
def test_corrupt_run_json_names_it_and_the_way_out(jmlgeo, tmp_path, raw):
    scene = _scene(tmp_path)
    boxes = write_boxes(tmp_path / "b.gpkg", [pixel_box(2, 2, 20, 20)], ["x"])
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_bytes(raw)
    result = jmlgeo("train", scene, "--boxes", boxes, "--out", out, "--resume")
    assert_refused(result, "run.json", "--force", outputs=(out / "model.safetensors",))


def test_corrupt_checkpoint_names_it_and_the_way_out(tmp_path):
    from jmlnet_geo.errors import JmlGeoError
    from jmlnet_geo.train.fit import check_checkpoint

    bad = tmp_path / "last.ckpt"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(JmlGeoError, match="last.ckpt.*--force"):
        check_checkpoint(bad)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EIO])
def test_os_errors_become_one_line_naming_the_path(jmlgeo, tmp_path, bundle, monkeypatch, code):
    import jmlnet_geo.predict as predict

    def full(src, dst):
        raise OSError(code, os.strerror(code), str(dst))

    monkeypatch.setattr(predict, "copy_to_cog", full)
    out = tmp_path / "out"
    result = jmlgeo("predict", bundle, _scene(tmp_path), "--out", out, "--progress", "none")
    assert_refused(result, "s.classes.tif", os.strerror(code), outputs=(out / "s.classes.tif",))


def test_outputs_follow_the_umask(tmp_path, bundle):
    from jmlnet_geo.bundle import load_bundle, save_bundle

    old = os.umask(0o022)
    try:
        state, card = load_bundle(bundle)
        save_bundle(tmp_path / "copy.safetensors", state, card)
    finally:
        os.umask(old)
    assert (tmp_path / "copy.safetensors").stat().st_mode & 0o777 == 0o644


def test_stale_partials_of_dead_runs_are_removed(tmp_path):
    import subprocess

    from jmlnet_geo.io.write import partial_prefix, remove_stale_partials

    dead = subprocess.run(["true"]).args and subprocess.Popen(["true"])
    dead.wait()
    stale_dir = tmp_path / f".s.jmlgeo-{dead.pid}-abc"
    stale_dir.mkdir()
    (stale_dir / "classes.tif").write_bytes(b"x")
    stale_file = tmp_path / f".s.classes.jmlgeo-{dead.pid}-x.partial.tif"
    stale_file.write_bytes(b"x")
    live = tmp_path / f"{partial_prefix('s')}live"
    live.mkdir()
    foreign = tmp_path / ".s.other.partial.tif"
    foreign.write_bytes(b"x")
    removed = remove_stale_partials(tmp_path, "s")
    assert sorted(removed) == sorted([str(stale_dir), str(stale_file)])
    assert live.exists() and foreign.exists()


def _empty_scene(tmp_path, kind):
    if kind == "nodata-0":
        return write_scene(tmp_path / "empty.tif", np.zeros((3, 64, 64), np.uint8), nodata=0)
    if kind == "nodata-float":
        data = np.full((3, 64, 64), -9999.0, np.float32)
        return write_scene(tmp_path / "empty.tif", data, nodata=-9999.0)
    if kind == "all-nan":
        return write_scene(tmp_path / "empty.tif", np.full((3, 64, 64), np.nan, np.float32))
    data = np.zeros((3, 64, 64), np.float32)
    data[0] = np.inf
    data[1, ::2] = np.nan
    data[2, 1::2] = np.nan
    return write_scene(tmp_path / "empty.tif", data)  # every pixel has a non-finite band


EMPTY = ["nodata-0", "nodata-float", "all-nan", "nan-or-inf-everywhere"]
ONE_STEP = ["--stage1-steps", "1", "--stage2-steps", "1", "--tile-size", "32", "--batch-size", "2"]
ONE_STEP += ["--workers", "1", "--loader-workers", "0", "--progress", "none"]


@pytest.mark.parametrize("kind", EMPTY)
def test_train_refuses_a_scene_without_valid_pixels(jmlgeo, tmp_path, kind):
    scene = _empty_scene(tmp_path, kind)
    boxes = write_boxes(tmp_path / "b.gpkg", [pixel_box(2, 2, 20, 20)], ["x"])
    out = tmp_path / "run"
    result = jmlgeo("train", scene, "--boxes", boxes, "--out", out, *ONE_STEP)
    assert_refused(result, "empty.tif", "no valid pixel", outputs=(out / "model.safetensors",))


def test_train_skips_an_empty_scene_beside_a_usable_one(jmlgeo, tmp_path):
    empty = _empty_scene(tmp_path, "all-nan")
    good = _scene(tmp_path, "good.tif")
    boxes = write_boxes(tmp_path / "b.gpkg", [pixel_box(2, 2, 20, 20)], ["x"])
    out = tmp_path / "run"
    result = jmlgeo("train", empty, good, "--boxes", boxes, "--out", out, *ONE_STEP)
    assert result.code == 0, result.err
    warned = [line for line in result.err.splitlines() if "empty.tif" in line]
    assert warned and "skipped" in warned[0] and "warning" in warned[0].lower()
    assert (out / "model.safetensors").exists()
    assert not (out / "proposals" / "empty.grabcut.tif").exists()


def test_train_on_nan_pixels_without_nodata_stays_finite(jmlgeo, tmp_path):
    from safetensors.torch import load_file

    data = np.random.default_rng(0).normal(100, 20, (3, 64, 64)).astype(np.float32)
    data[:, :30, :30] = np.nan  # no nodata value declared: NaN is nodata all the same
    scene = write_scene(tmp_path / "f.tif", data)
    boxes = write_boxes(tmp_path / "b.gpkg", [pixel_box(34, 34, 60, 60)], ["x"])
    out = tmp_path / "run"
    result = jmlgeo("train", scene, "--boxes", boxes, "--out", out, *ONE_STEP)
    assert result.code == 0, result.err
    weights = load_file(out / "model.safetensors")
    assert all(bool(torch.isfinite(t.float()).all()) for t in weights.values())


def test_a_diverging_loss_stops_with_no_bundle(jmlgeo, tmp_path, monkeypatch):
    import jmlnet_geo.train.segmenter as segmenter

    def nan_loss(name, logits, *args):
        return logits.sum() * float("nan")

    monkeypatch.setattr(segmenter, "multi_label_loss", nan_loss)
    scene = _scene(tmp_path)
    boxes = write_boxes(tmp_path / "b.gpkg", [pixel_box(2, 2, 20, 20)], ["x"])
    out = tmp_path / "run"
    result = jmlgeo("train", scene, "--boxes", boxes, "--out", out, *ONE_STEP)
    assert_refused(result, "diverged", "no bundle", outputs=(out / "model.safetensors",))
    assert not (out / "stage1" / "weights.safetensors").exists()
