"""`jmlgeo train` end to end on tiny data: stages, caching, resume after a kill, DDP, bundles."""

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from conftest import assert_one_line_error, pixel_box, write_boxes, write_scene

from jmlnet_geo.bundle import ModelCard, build_model, load_bundle, save_bundle
from jmlnet_geo.errors import InputFileError
from jmlnet_geo.normalization import scene_normalization
from jmlnet_geo.train import fingerprint
from jmlnet_geo.train.data import box_masks, random_flips
from jmlnet_geo.train.fingerprint import file_digest, file_stamps

FAST = ["--tile-size", "64", "--batch-size", "2", "--loader-workers", "0", "--workers", "1"]
FAST += ["--progress", "none"]


@pytest.fixture
def tiny(tmp_path):
    """A 96 x 96 scene with two bright discs and two dark squares, boxes and truth polygons."""
    return make_tiny(tmp_path)


def make_tiny(tmp_path):
    """The ``tiny`` data in ``tmp_path``: (scene, boxes, truth) paths."""
    rng = np.random.default_rng(0)
    data = rng.normal(100, 15, (3, 96, 96))
    rows, cols = np.mgrid[:96, :96]
    truth = []
    for r, c in [(24, 24), (70, 60)]:
        disc = (rows + 0.5 - r) ** 2 + (cols + 0.5 - c) ** 2 <= 10**2
        data[:, disc] = 220
        truth.append(pixel_box(c - 10, r - 10, c + 10, r + 10).buffer(-3))
    squares = [(60, 10), (15, 65)]
    for r, c in squares:
        data[:, r : r + 12, c : c + 12] = 20
    scene = write_scene(tmp_path / "tiny.tif", np.clip(data, 0, 255).astype(np.uint8))
    boxes = [pixel_box(c - 11, r - 11, c + 11, r + 11) for r, c in [(24, 24), (70, 60)]]
    boxes += [pixel_box(c - 1, r - 1, c + 13, r + 13) for r, c in squares]
    names = ["tank", "tank", "pond", "pond"]
    box_path = write_boxes(tmp_path / "boxes.gpkg", boxes, names)
    truth += [pixel_box(c, r, c + 12, r + 12) for r, c in squares]
    truth_path = write_boxes(tmp_path / "truth.gpkg", truth, names)
    return scene, box_path, truth_path


def train_args(tiny, out, *more):
    scene, boxes, truth = tiny
    return ["train", scene, "--boxes", boxes, "--out", out, *FAST, *more]


def test_tiny_run_writes_a_bundle_and_reuses_its_stages(jmlgeo, tmp_path, tiny):
    out = tmp_path / "run"
    steps = ["--stage1-steps", "2", "--stage2-steps", "2", "--truth", tiny[2], "--val-every", "2"]
    steps += [
        "--proposals",
        "grabcut,crf",
        "--loss",
        "bmm",
    ]  # a multi-label stage 2, not the default
    result = jmlgeo(*train_args(tiny, out, *steps))
    assert result.code == 0, result.err
    state, card = load_bundle(out / "model.safetensors")
    assert card.classes == ["pond", "tank"] and card.bands == 3 and card.tile_size == 64
    assert card.architecture["num_classes"] == 3
    assert card.training_data["boxes_per_class"] == {"pond": 2, "tank": 2}
    assert 0.0 <= card.validation["miou"] <= 1.0
    assert card.config["segmenter"]["loss"] == "bmm"
    model = build_model(card, state)
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 3, 64, 64)
    for name in ("run.json", "training_curve.png", "proposals/tiny.grabcut.tif"):
        assert (out / name).exists(), name
    assert (out / "logs" / "stage1" / "metrics.csv").exists()

    again = jmlgeo(*train_args(tiny, out, *steps))
    assert again.code == 0, again.err
    reused = "proposals:grabcut, proposals:crf, truth, stage1, stage2, bundle"
    assert f"reused finished stages: {reused}" in again.err
    os.utime(tiny[0], ns=(10**18, 10**18))  # same pixels, new time: a copy, a re-synced share
    touched = jmlgeo(*train_args(tiny, out, *steps))
    assert f"reused finished stages: {reused}" in touched.err
    before = tiny[1].read_bytes()
    frame = gpd.read_file(tiny[1])
    tiny[1].unlink()
    frame.to_file(tiny[1], driver="GPKG")  # the same features saved again: other bytes
    assert tiny[1].read_bytes() != before
    resaved = jmlgeo(*train_args(tiny, out, *steps))
    assert f"reused finished stages: {reused}" in resaved.err
    moved = frame.copy()
    moved.geometry = moved.geometry.translate(2, 0)  # 2 m: 4 pixels of the 0.5 m scene
    moved.to_file(tmp_path / "moved.gpkg", driver="GPKG")
    shifted = jmlgeo("train", tiny[0], "--boxes", tmp_path / "moved.gpkg", "--out", out, *FAST,
                     *steps)  # fmt: skip
    assert_one_line_error(shifted, "other inputs or settings", "--resume", "--force")

    other = jmlgeo(*train_args(tiny, out, *steps, "--loss", "ma"))
    assert_one_line_error(other, "other inputs or settings", "--resume", "--force")
    resumed = jmlgeo(*train_args(tiny, out, *steps, "--loss", "ma", "--resume"))
    assert resumed.code == 0, resumed.err
    assert "stage1" in resumed.err and "stage2" not in resumed.err.split("reused")[1]
    state_ma, card_ma = load_bundle(out / "model.safetensors")
    assert card_ma.config["segmenter"]["loss"] == "ma"
    # stage 2 trained again from stage 1: the finished bmm stage's checkpoint is not "resumed"
    assert any(not torch.equal(state[k], state_ma[k]) for k in state if k.endswith("weight"))
    metrics = (out / "logs" / "stage2" / "metrics.csv").read_text()
    assert metrics.count("\n") > 1, "stage 2 logged no training step"

    # other stage-2 proposals keep stage 1 (it trains on grabcut alone), and redo stage 2
    fewer = jmlgeo(
        *train_args(tiny, out, *steps, "--loss", "ma", "--proposals", "grabcut", "--resume")
    )
    assert fewer.code == 0, fewer.err
    reused = fewer.err.split("reused finished stages:")[1].splitlines()[0]
    assert "stage1" in reused and "stage2" not in reused


def test_file_stamps_follow_content_not_time(tmp_path):
    first = tmp_path / "a.tif"
    first.write_bytes(bytes(range(256)) * 64)
    copy = tmp_path / "copy" / "a.tif"
    copy.parent.mkdir()
    copy.write_bytes(first.read_bytes())
    assert file_digest(copy) == file_digest(first)
    stat = first.stat()
    first.write_bytes(b"x" + first.read_bytes()[1:])  # one byte edited, size and time kept
    os.utime(first, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert first.stat().st_size == stat.st_size
    fingerprint._digest.cache_clear()  # as in the next process: the memo lives one process
    [[path, size, digest]] = file_stamps([first])
    assert path == str(first) and size == stat.st_size and digest != file_digest(copy)


def test_full_supervision_from_masks(jmlgeo, tmp_path, tiny):
    out = tmp_path / "full"
    args = ["--masks", tiny[2], "--stage1-steps", "1", "--stage2-steps", "1"]
    result = jmlgeo(*train_args(tiny, out, *args))
    assert result.code == 0, result.err
    assert "1 of 1 scene(s) train on true masks" in result.out + result.err
    assert (out / "mask" / "tiny.mask.tif").exists()


def test_detcam_and_camcut_proposals_train_a_detector_first(jmlgeo, tmp_path, tiny):
    out = tmp_path / "detcam"
    args = ["--proposals", "grabcut,detcam,camcut", "--stage1-proposal", "camcut"]
    args += ["--stage1-steps", "1", "--stage2-steps", "1", "--detector-steps", "1"]
    args += ["--detector-tile-size", "64", "--detector-batch-size", "2", "--device", "cpu"]
    result = jmlgeo(*train_args(tiny, out, *args))
    assert result.code == 0, result.err
    assert (out / "detector" / "detector.safetensors").exists()
    scene = rasterio.open(tiny[0])
    for method in ("grabcut", "detcam", "camcut"):
        with rasterio.open(out / "proposals" / f"tiny.{method}.tif") as src:
            assert src.transform == scene.transform and src.shape == scene.shape
            assert set(np.unique(src.read(1))) <= {0, 1, 2}
    card = load_bundle(out / "model.safetensors")[1]
    assert card.config["segmenter"]["proposals"] == ["grabcut", "detcam", "camcut"]
    assert card.config["detector"]["steps"] == 1

    again = jmlgeo(*train_args(tiny, out, *args))
    assert again.code == 0, again.err
    assert "proposals:grabcut, detector, proposals:camcut, proposals:detcam, stage1" in again.err
    other = jmlgeo(*train_args(tiny, out, *args, "--tau-low", "0.05", "--resume"))
    assert other.code == 0, other.err
    reused = other.err.split("reused finished stages:")[1].splitlines()[0]
    assert "proposals:grabcut, detector" in reused  # only what the thresholds touch is redone
    assert "proposals:detcam" not in reused and "stage1" not in reused


def test_bad_training_inputs_are_one_clear_line(jmlgeo, tmp_path, tiny):
    out = tmp_path / "bad"
    assert_one_line_error(
        jmlgeo(*train_args(tiny, out, "--proposals", "grabcut,snake")), "snake", "grabcut"
    )
    assert_one_line_error(jmlgeo(*train_args(tiny, out, "--loss", "dice")), "dice", "bmm")
    assert_one_line_error(jmlgeo(*train_args(tiny, out, "--preset", "huge")), "huge", "paper")
    assert_one_line_error(jmlgeo(*train_args(tiny, out, "--head", "unet")), "unet", "deeplabv3")
    assert_one_line_error(jmlgeo(*train_args(tiny, out, "--optimizer", "adam")), "adam", "adamw")
    paper_plus = train_args(tiny, out, "--preset", "paper", "--head", "deeplabv3plus")
    assert_one_line_error(jmlgeo(*paper_plus), "deeplabv3plus", "paper")
    taus = ["--proposals", "detcam", "--tau-low", "0.9", "--tau-high", "0.5"]
    assert_one_line_error(jmlgeo(*train_args(tiny, out, *taus)), "--tau-low", "--tau-high")
    plane = write_boxes(tmp_path / "m.gpkg", [pixel_box(1, 1, 9, 9)], ["plane"])
    assert_one_line_error(jmlgeo(*train_args(tiny, out, "--masks", plane)), "plane")
    assert not out.exists() or not list(out.rglob("*.tif"))
    (tmp_path / "notrun").mkdir()
    (tmp_path / "notrun" / "x.txt").write_text("mine")
    assert_one_line_error(jmlgeo(*train_args(tiny, tmp_path / "notrun")), "not a jmlgeo run")


def test_resume_after_the_process_was_killed(tmp_path, tiny):
    out = tmp_path / "killed"
    exe = Path(sys.executable).with_name("jmlgeo")
    args = train_args(tiny, out, "--stage1-steps", "60", "--stage2-steps", "1")
    args += ["--checkpoint-every", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([exe, *map(str, args)], env=env, cwd=tmp_path)
    checkpoint = out / "stage1" / "last.ckpt"
    deadline = time.time() + 120
    while not checkpoint.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert checkpoint.exists() and not (out / "model.safetensors").exists()

    again = subprocess.run([exe, *map(str, args)], capture_output=True, text=True, cwd=tmp_path)
    assert again.returncode == 1 and "interrupted; pass --resume" in again.stderr
    resumed = subprocess.run(
        [exe, *map(str, args), "--resume"], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert resumed.returncode == 0, resumed.stderr
    assert load_bundle(out / "model.safetensors")[1].classes == ["pond", "tank"]


def test_bundle_round_trips_bit_exactly(tmp_path):
    card = ModelCard(
        classes=["a"],
        colours=[[1, 2, 3]],
        bands=4,
        band_names=["b", "g", "r", "nir"],
        normalization={"mean": [1.0] * 4, "std": [2.0] * 4},
        tile_size=64,
        resolution=[0.5, 0.5],
        crs_units="metre",
        architecture={"preset": "fast", "num_classes": 2, "in_channels": 4},
    )
    state = {"w": torch.randn(3, 5), "b": torch.arange(7, dtype=torch.int64)}
    save_bundle(tmp_path / "m.safetensors", state, card)
    loaded, card2 = load_bundle(tmp_path / "m.safetensors")
    assert card2 == card
    for key, value in state.items():
        assert torch.equal(loaded[key], value) and loaded[key].dtype == value.dtype


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {Path.cwd() / 'pwned'}",))


def test_a_malicious_pickle_is_refused_without_running_it(tmp_path):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(pickle.dumps(_Exploit()))
    torch.save({"x": _Exploit()}, tmp_path / "model.ckpt")
    for path in (bad, tmp_path / "model.ckpt"):
        with pytest.raises(InputFileError, match="not a jmlgeo bundle"):
            load_bundle(path)
    assert not (tmp_path / "pwned").exists()


def test_box_masks_flips_and_normalization(tmp_path, tiny):
    boxes = [torch.tensor([[1.0, 2.0, 3.0, 5.0]]), torch.zeros((0, 4))]
    mask = box_masks(boxes, 6, 4)
    expected = np.zeros((6, 4), bool)
    expected[2:5, 1:3] = True
    np.testing.assert_array_equal(mask[0].numpy(), expected)
    assert not mask[1].any()
    image = torch.arange(2 * 1 * 6 * 4, dtype=torch.float32).reshape(2, 1, 6, 4)
    batch = {"image": image, "valid": mask, "boxes": boxes, "labels": []}
    for seed in range(4):  # every flip keeps the box on its masked pixels
        out = random_flips(batch, ["valid"], torch.Generator().manual_seed(seed))
        np.testing.assert_array_equal(box_masks(out["boxes"], 6, 4)[0], out["valid"][0])
    from jmlnet_geo.io.raster import open_scene

    norm = scene_normalization([open_scene(tiny[0])])
    assert len(norm.mean) == 3 and all(s > 0 for s in norm.std)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without distributed")
def test_ddp_with_two_cpu_processes(tmp_path, tiny):
    out = tmp_path / "ddp"
    exe = Path(sys.executable).with_name("jmlgeo")
    args = train_args(tiny, out, "--stage1-steps", "2", "--stage2-steps", "2")
    args += ["--device", "cpu", "--devices", "2", "--strategy", "ddp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [exe, *map(str, args)], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "[rank1]" not in done.stderr, done.stderr[-3000:]
    assert (done.stdout + done.stderr).count("bundle:") == 1  # the second process is silent
    state, card = load_bundle(out / "model.safetensors")
    assert card.config["devices"] == 2 and card.config["strategy"] == "ddp"


def test_optimizers_and_their_warm_up_poly_schedule():
    from jmlnet_geo.errors import OptionError
    from jmlnet_geo.train.optim import OptimizerSettings, warmup_poly

    plain = warmup_poly(steps=100, warmup=0, power=0.9)
    assert plain(0) == 1.0 and plain(100) == 0.0 and plain(50) == pytest.approx(0.5**0.9)
    warm = warmup_poly(steps=100, warmup=10, power=1.0)
    assert warm(0) == pytest.approx(0.01) and warm(5) == pytest.approx(0.505)
    assert warm(10) == 1.0 and warm(55) == pytest.approx(0.5) and warm(100) == 0.0
    weight = torch.nn.Parameter(torch.ones(3))
    for name, kind in (("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW)):
        setup = OptimizerSettings(name, 0.1, 100, warmup=10).configure([weight])
        assert isinstance(setup["optimizer"], kind)
        assert setup["optimizer"].param_groups[0]["lr"] == pytest.approx(0.001)  # warm-up start
        assert setup["lr_scheduler"]["interval"] == "step"
    with pytest.raises(OptionError, match="adamw"):
        OptimizerSettings("adam", 0.1, 100)


def test_masks_fraction_picks_a_seeded_share_of_scenes():
    from types import SimpleNamespace

    from jmlnet_geo.config import preset_config
    from jmlnet_geo.errors import OptionError
    from jmlnet_geo.train.checks import mask_scenes as _mask_scenes

    scenes = [SimpleNamespace(path=f"s{i}.tif") for i in range(10)]
    config = preset_config("fast")
    half = config.__class__(**{**config.__dict__, "masks_fraction": 0.5})
    picked = _mask_scenes(scenes, half, have_masks=True)
    assert len(picked) == 5 and picked == _mask_scenes(scenes, half, have_masks=True)
    assert len(_mask_scenes(scenes, config, have_masks=True)) == 10  # --masks alone: all
    assert _mask_scenes(scenes, config, have_masks=False) == set()
    tenth = config.__class__(**{**config.__dict__, "masks_fraction": 0.1})
    with pytest.raises(OptionError, match="rounds to no scene"):
        _mask_scenes(scenes[:2], tenth, have_masks=True)
    with pytest.raises(OptionError, match="needs --masks"):
        _mask_scenes(scenes, tenth, have_masks=False)


def test_detector_defaults_of_the_fast_preset_are_the_library_defaults():
    from jmlnet_geo.config import preset_config
    from jmlnet_geo.proposals import detcam
    from jmlnet_geo.train import detector

    det = preset_config("fast").detector
    assert (det.steps, det.batch_size, det.tile_size, det.lr) == (
        detector.DEFAULT_STEPS,
        detector.DEFAULT_BATCH_SIZE,
        detector.DEFAULT_TILE_SIZE,
        detector.DEFAULT_LR,
    )
    assert (det.tau_low, det.tau_high) == (detcam.TAU_LOW, detcam.TAU_HIGH)


def test_the_box_projection_loss_is_on_in_fast_and_off_in_paper():
    from jmlnet_geo.config import preset_config

    fast, paper = preset_config("fast").segmenter, preset_config("paper").segmenter
    # fast: CE on GrabCut plus the box loss's projection term (BENCHMARKS.md, issue 17 rows)
    assert (fast.loss, fast.proposals, fast.box_loss_weight, fast.box_pairwise_weight) == (
        "ce",
        ("grabcut",),
        1.0,
        0.0,
    )
    assert (paper.loss, paper.box_loss_weight) == ("bmm", 0.0)  # the paper's recipe, unchanged


@pytest.mark.parametrize(
    "key", ["box_loss_weight", "box_pairwise_weight", "box_margin", "box_outside_weight"]
)
@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_box_loss_weights_outside_their_range_are_refused(key, value):
    from jmlnet_geo.config import override, preset_config
    from jmlnet_geo.errors import OptionError
    from jmlnet_geo.train.checks import check_config

    check_config(override(preset_config("fast"), **{key: 0.0}))  # 0 is allowed: off
    flag = "--" + key.replace("_", "-")
    with pytest.raises(OptionError, match=f"^{flag} .*give a finite value >= 0"):
        check_config(override(preset_config("fast"), **{key: value}))
