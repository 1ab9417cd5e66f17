"""Streaming prediction: blending, grids, nodata, COG layout, polygons, interruption, bad input."""

import dataclasses
import warnings

import numpy as np
import pytest
import rasterio
import torch
from conftest import assert_one_line_error, write_scene

from jmlnet_geo.bundle import load_bundle, untrained_bundle
from jmlnet_geo.errors import CancelledError, OptionError
from jmlnet_geo.io.raster import open_scene
from jmlnet_geo.predict import (
    Blender,
    PredictOptions,
    Predictor,
    ResolutionWarning,
    WindowWarning,
    strip_outputs,
)
from jmlnet_geo.predict_windows import (
    WindowPlan,
    output_stride,
    panel_columns,
    panel_order,
    plan_windows,
    weight_window,
)
from jmlnet_geo.tiling import GridTiles, ScenesTiles, SceneTiles, window_of
from jmlnet_geo.vectorize import vectorize

CLASSES = ["car", "roof"]


def make_bundle(path, bands=3, tile=64, resolution=0.5, seed=0):
    """A randomly initialised fast segmenter as a bundle (no training needed for these tests)."""
    normalization = {"mean": [100.0] * bands, "std": [40.0] * bands}
    colours = [[255, 0, 0], [0, 0, 255]]
    untrained_bundle(path, CLASSES, colours, normalization, tile, resolution, seed=seed)
    return path


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundle") / "model.safetensors")


def scene_data(height, width, bands=3, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    data = rng.normal(100, 40, (bands, height, width))
    data[:, height // 3 : height // 2, width // 4 : width // 2] += 120  # something to classify
    return np.clip(data, 1, 250).astype(dtype)


def read(path):
    with rasterio.open(path) as ds:
        return ds.read(1), ds.profile, ds


@pytest.mark.parametrize("size", [(70, 100), (30, 40), (128, 128)])
def test_blended_windows_reproduce_a_globally_consistent_field(tmp_path, size):
    """When every window sees the same global logits, blending must return them exactly."""
    height, width = size
    scene = open_scene(write_scene(tmp_path / "s.tif", scene_data(height, width)))
    field = np.random.default_rng(1).normal(0, 1, (3, height, width)).astype(np.float32)
    blender = Blender(scene, 3, tile=32, overlap=8, finish_strip=lambda sums, w: sums / w)
    data = ScenesTiles([SceneTiles(scene)])
    out = np.zeros_like(field)
    strips = []
    for _, query in GridTiles(data, 32, 24):
        w = window_of(scene, data.datasets[0]._disambiguate_slice(query))
        window_logits = np.zeros((3, 32, 32), np.float32)
        h, wd = min(32, height - w.row_off), min(32, width - w.col_off)
        window_logits[:, :h, :wd] = field[:, w.row_off : w.row_off + h, w.col_off : w.col_off + wd]
        strips += list(blender.add([w.col_off, w.row_off, 32, 32], window_logits))
    strips += list(blender.finish())
    for row, strip in strips:
        out[:, row : row + strip.shape[1]] = strip
    assert sum(s.shape[1] for _, s in strips) == height
    np.testing.assert_allclose(out, field, rtol=1e-5, atol=1e-5)


def test_strip_outputs_are_the_blended_argmax_and_softmax():
    rng = np.random.default_rng(2)
    weights = rng.uniform(0.01, 3, (5, 4100)).astype(np.float32)  # wider than one column step
    blended = rng.normal(0, 2, (4, 5, 4100)).astype(np.float32)
    ids, probs = strip_outputs(blended * weights, weights, probabilities=True)
    assert ids.dtype == np.uint8 and probs.dtype == np.uint8 and probs.shape == blended.shape
    np.testing.assert_array_equal(ids, blended.argmax(0))
    softmax = np.exp(blended) / np.exp(blended).sum(0)
    assert np.abs(probs - 255 * softmax).max() <= 0.5 + 1e-3
    assert strip_outputs(blended, weights, probabilities=False)[1] is None


def test_a_reader_process_gives_the_same_prediction(tmp_path, bundle):
    scene = write_scene(tmp_path / "scene.tif", scene_data(150, 170))
    predictor = Predictor(bundle)
    ids = []
    for workers in (0, 1):
        options = PredictOptions(tile=64, loader_workers=workers)
        ids.append(read(predictor.predict(scene, tmp_path / f"w{workers}", options).classes)[0])
    np.testing.assert_array_equal(ids[0], ids[1])


def test_prediction_keeps_the_grid_and_nodata(tmp_path, bundle):
    data = scene_data(100, 140)
    data[:, :, 120:] = 0
    scene = write_scene(tmp_path / "scene.tif", data, nodata=0)
    result = Predictor(bundle).predict(scene, tmp_path / "out", PredictOptions(loader_workers=0))
    classes, profile, _ = read(result.classes)
    with rasterio.open(scene) as src:
        assert profile["crs"] == src.crs and profile["transform"] == src.transform
        assert (profile["width"], profile["height"]) == (src.width, src.height)
    assert (classes[:, 120:] == 255).all() and (classes[:, :120] < 3).all()
    with rasterio.open(result.classes) as ds:
        assert ds.tags()["class_names"] == "car,roof"
        assert ds.colormap(1)[1][:3] == (255, 0, 0)
        assert ds.nodata == 255
    assert result.style.read_text().count("paletteEntry") == 3


def test_windows_and_tta_agree_with_one_whole_forward_where_unaffected(tmp_path, bundle):
    """A window as large as the scene gives the plain forward pass of the model."""
    scene = write_scene(tmp_path / "s.tif", scene_data(64, 64))
    predictor = Predictor(bundle)
    result = predictor.predict(scene, tmp_path / "a", PredictOptions(tile=64, loader_workers=0))
    classes, *_ = read(result.classes)
    with rasterio.open(scene) as ds:
        image = torch.from_numpy(ds.read().astype(np.float32))[None]
    logits = predictor.logits(image, torch.ones(1, 64, 64, dtype=torch.bool))
    np.testing.assert_array_equal(classes, logits.argmax(1)[0].numpy())
    tta = predictor.predict(scene, tmp_path / "b", PredictOptions(tta=True, loader_workers=0))
    assert read(tta.classes)[0].shape == (64, 64)


def test_uint16_multiband_small_scene_probabilities_and_polygons(tmp_path):
    bundle = make_bundle(tmp_path / "ms.safetensors", bands=4)
    scene = write_scene(tmp_path / "ms.tif", scene_data(50, 45, bands=4, dtype=np.uint16))
    options = PredictOptions(probabilities=True, loader_workers=0)
    result = Predictor(bundle).predict(scene, tmp_path / "out", options)
    classes, *_ = read(result.classes)
    assert classes.shape == (50, 45)
    with rasterio.open(result.probabilities) as ds:
        probs = ds.read()
    assert probs.shape == (3, 50, 45)
    assert np.abs(probs.astype(int).sum(0) - 255).max() <= 2
    np.testing.assert_array_equal(probs.argmax(0)[classes < 3], classes[classes < 3])


def test_polygon_areas_match_the_raster(tmp_path):
    rng = np.random.default_rng(3)
    ids = np.zeros((300, 260), np.uint8)
    for _ in range(40):
        r, c = rng.integers(0, 280), rng.integers(0, 240)
        ids[r : r + rng.integers(3, 30), c : c + rng.integers(3, 30)] = rng.integers(1, 3)
    ids[250:] = 255
    path = write_scene(tmp_path / "ids.tif", ids[None], nodata=255)
    with rasterio.open(path, "r+") as ds:
        ds.update_tags(class_names="car,roof")
    frame = vectorize(path, strip_rows=64)  # regions cross strip borders on purpose
    for class_id in (1, 2):
        expected = (ids == class_id).sum() * 0.25
        got = frame.loc[frame.class_id == class_id, "area"].sum()
        assert abs(got - expected) <= 0.01 * expected
    whole = vectorize(path, strip_rows=10_000)
    assert len(frame) == len(whole)
    assert set(frame.class_name) == {"car", "roof"}
    big = vectorize(path, min_area=20.0)
    assert (big.area >= 20.0).all() and len(big) < len(whole)


def test_cog_layout_with_overviews(tmp_path, bundle):
    scene = write_scene(tmp_path / "big.tif", scene_data(1100, 1100))
    options = PredictOptions(tile=256, overlap=32, batch_size=8, loader_workers=0)
    result = Predictor(bundle).predict(scene, tmp_path / "out", options)
    with rasterio.open(result.classes) as ds:
        assert ds.profile["tiled"] and ds.profile["blockxsize"] == 512
        assert ds.overviews(1), "a COG of this size has overviews"
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ds.compression.name.lower() == "deflate"


def test_interrupted_prediction_leaves_no_final_file(tmp_path, bundle):
    scene = write_scene(tmp_path / "s.tif", scene_data(200, 200))
    out = tmp_path / "out"
    with pytest.raises(CancelledError):
        Predictor(bundle).predict(
            scene, out, PredictOptions(tile=64, loader_workers=0), should_stop=lambda: True
        )
    assert list(out.iterdir()) == []


def test_resolution_far_from_training_warns_with_both_values(tmp_path):
    bundle = make_bundle(tmp_path / "m.safetensors", resolution=0.3)
    scene = write_scene(tmp_path / "s.tif", scene_data(40, 40), res=2.0)
    with pytest.warns(ResolutionWarning, match="2 is far from the bundle's 0.3"):
        Predictor(bundle).predict(scene, tmp_path / "out", PredictOptions(loader_workers=0))


def test_cli_predict_and_bad_inputs(jmlgeo, tmp_path, bundle):
    scene = write_scene(tmp_path / "s.tif", scene_data(60, 80))
    out = tmp_path / "pred"
    result = jmlgeo("predict", bundle, scene, "--out", out, "--polygons", "--loader-workers", "0")
    assert result.code == 0, result.err
    assert (out / "s.classes.tif").exists() and (out / "s.polygons.gpkg").exists()
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(b"\x80\x04not a bundle")
    assert_one_line_error(jmlgeo("predict", fake, scene, "--out", out), "not a jmlgeo bundle")
    two = write_scene(tmp_path / "two.tif", scene_data(20, 20, bands=2))
    assert_one_line_error(jmlgeo("predict", bundle, two, "--out", out), "2 band(s)", "trained on 3")
    assert_one_line_error(jmlgeo("predict", bundle, tmp_path / "nope.tif", "--out", out), "nope")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = jmlgeo("predict", bundle, scene, "--out", blocker / "sub")
    assert_one_line_error(result, "file")


def test_onnx_export_matches_pytorch_and_carries_deepness_metadata(jmlgeo, tmp_path, bundle):
    import json

    import onnx
    import onnxruntime

    from jmlnet_geo.bundle import build_model, load_bundle

    out = tmp_path / "model.onnx"
    result = jmlgeo("export", bundle, out)
    assert result.code == 0, result.err
    meta = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert json.loads(meta["model_type"]) == "Segmentor"
    assert json.loads(meta["class_names"]) == {"0": "background", "1": "car", "2": "roof"}
    assert json.loads(meta["tiles_size"]) == 64 and json.loads(meta["resolution"]) == 50.0
    assert json.loads(meta["standardization_mean"]) == pytest.approx([100 / 255] * 3)
    x = np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)
    got = onnxruntime.InferenceSession(str(out)).run(None, {"image": x})[0]
    state, card = load_bundle(bundle)
    model = build_model(card, state)
    with torch.no_grad():
        expected = torch.softmax(model((torch.from_numpy(x) * 255 - 100) / 40), 1).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)


# --- issue 18: inference windows independent of the training tile -----------------------------


def test_a_window_covering_the_scene_is_the_untiled_model(tmp_path, bundle):
    scene = write_scene(tmp_path / "s.tif", scene_data(96, 96, seed=4))
    predictor = Predictor(bundle)
    result = predictor.predict(scene, tmp_path / "a", PredictOptions(window=96, loader_workers=0))
    assert (result.window, result.windows) == (96, 1)
    with rasterio.open(scene) as ds:
        image = torch.from_numpy(ds.read().astype(np.float32))[None]
    logits = predictor.logits(image, torch.ones(1, 96, 96, dtype=torch.bool))
    np.testing.assert_array_equal(read(result.classes)[0], logits.argmax(1)[0].numpy())


def test_two_window_sizes_agree_but_near_seams(tmp_path, bundle):
    """Measured: 0.50 % of pixels differ (random weights; a trained model: see the bench)."""
    scene = write_scene(tmp_path / "s.tif", scene_data(256, 256, seed=5))
    predictor = Predictor(bundle)
    ids = [
        read(predictor.predict(scene, tmp_path / f"w{w}", PredictOptions(window=w)).classes)[0]
        for w in (128, 256)
    ]
    assert (ids[0] != ids[1]).mean() <= 0.015


def test_a_scene_smaller_than_the_window_is_one_window_padded_by_reflection(tmp_path, bundle):
    data = scene_data(40, 30)
    scene = write_scene(tmp_path / "s.tif", data)
    predictor = Predictor(bundle)
    result = predictor.predict(scene, tmp_path / "o", PredictOptions(window=512))
    assert (result.window, result.windows) == (48, 1)
    padded = np.pad(data.astype(np.float32), ((0, 0), (0, 8), (0, 18)), mode="reflect")
    logits = predictor.logits(torch.from_numpy(padded)[None], torch.ones(1, 48, 48) > 0)
    np.testing.assert_array_equal(read(result.classes)[0], logits.argmax(1)[0, :40, :30].numpy())


def test_a_window_off_the_output_stride_is_rounded_with_a_message(tmp_path, bundle):
    scene = write_scene(tmp_path / "s.tif", scene_data(120, 120))
    with pytest.warns(WindowWarning, match=r"--window 100: not a multiple .*\(16 px\); using 96"):
        result = Predictor(bundle).predict(scene, tmp_path / "o", PredictOptions(window=100))
    assert result.window == 96


def test_default_plan_follows_device_card_and_scene_width(bundle):
    predictor = Predictor(bundle)
    card, model = predictor.card, predictor.model
    assert output_stride(model) == 16
    plan = plan_windows(card, model, "cpu", (4096, 4096))
    assert (plan.window, plan.overlap, plan.batch_size) == (1024, 256, 1)  # 5 x 5 windows
    assert plan_windows(card, model, "cpu", (2048, 2048)).window == 864  # 3 x 3, not 3 of 1024
    assert plan_windows(card, model, "cpu", (1024, 1000)).window == 1024  # one window
    assert plan_windows(card, model, "cpu", (4096, 4096), window=256).overlap == 64
    assert plan_windows(card, model, "cpu", (4096, 4096)).panel is None  # one buffer
    gpu = plan_windows(card, model, "cuda", (8192, 8192), free_bytes=40 * 2**30)
    assert gpu.window >= 1024 and gpu.batch_size >= 1

    class Card:
        num_classes, architecture = 3, {"preset": "fast", "predict_window": 512}
        predict_overlap = 32

    assert plan_windows(Card(), model, "cpu", (4096, 4096)) == plan_windows(
        card, model, "cpu", (4096, 4096), window=512, overlap=32
    )


def test_a_wide_scene_keeps_its_window_and_is_blended_in_panels(bundle):
    predictor = Predictor(bundle)
    wide = plan_windows(predictor.card, predictor.model, "cpu", (4096, 40000))
    # 2 classes + background + the weights: 4 float32 planes; 256 MiB / (16 B x 512 rows)
    assert (wide.window, wide.overlap, wide.panel) == (512, 128, 32768)
    assert panel_columns(40000, wide.panel) == [(0, 32768), (32768, 40000)]
    # narrower: the window shrinks (down to 512) so that one buffer spans the scene
    assert plan_windows(predictor.card, predictor.model, "cpu", (4096, 20000)) == WindowPlan(
        832, 208, 1, None
    )
    by_hand = plan_windows(predictor.card, predictor.model, "cpu", (4096, 40000), window=1024)
    assert (by_hand.window, by_hand.panel) == (1024, 16384)
    # windows at columns 0, 48, 96, 144 of 64 px; panels of 100 px: straddlers go to both
    order = panel_order([0, 48, 96, 144], 64, panel_columns(208, 100))
    assert order == [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (1, 3), (2, 3)]
    with pytest.raises(OptionError, match="panel 0"):
        plan_windows(predictor.card, predictor.model, "cpu", (64, 64), panel=0)


def test_panels_give_the_classes_and_probabilities_of_one_buffer(tmp_path, bundle):
    scene = write_scene(tmp_path / "s.tif", scene_data(150, 300, seed=6))
    predictor = Predictor(bundle)
    options = PredictOptions(window=64, overlap=16, batch_size=1, probabilities=True,
                             loader_workers=0)  # fmt: skip
    one = predictor.predict(scene, tmp_path / "one", options)
    cut = predictor.predict(scene, tmp_path / "cut", dataclasses.replace(options, panel=100))
    # 3 x 6 windows at columns 0, 48, 96, 144, 192, 236; panels 0-100, 100-200, 200-300
    assert one.windows == 3 * 6 and cut.windows == 3 * (3 + 4 + 3)  # straddlers twice
    for a, b in ((one.classes, cut.classes), (one.probabilities, cut.probabilities)):
        with rasterio.open(a) as x, rasterio.open(b) as y:
            assert x.profile == y.profile
            np.testing.assert_array_equal(x.read(), y.read())


@pytest.mark.parametrize("kind", ["ramp", "cosine"])
def test_weight_windows_are_flat_inside_and_positive(kind):
    w = weight_window(64, 16, kind)
    assert w.shape == (64, 64) and w.dtype == np.float32
    assert (w[16:48, 16:48] == 1).all() and w.min() > 0 and w[0, 0] < 1e-3 + 1e-6


def test_flip_tta_of_a_flip_equivariant_model_is_a_no_op(tmp_path, bundle):
    predictor = Predictor(bundle)
    torch.manual_seed(0)
    predictor.model = torch.nn.Conv2d(3, 3, 1).eval()  # a 1x1 conv commutes with flips
    image = torch.rand(2, 3, 48, 40) * 255
    valid = torch.ones(2, 48, 40, dtype=torch.bool)
    plain = predictor.logits(image, valid)
    torch.testing.assert_close(predictor.logits(image, valid, "flips"), plain)
    scene = write_scene(tmp_path / "s.tif", scene_data(90, 70))
    ids = [
        read(predictor.predict(scene, tmp_path / t, PredictOptions(window=64, tta=t)).classes)[0]
        for t in ("none", "flips")
    ]
    np.testing.assert_array_equal(ids[0], ids[1])


def test_the_autocast_path_runs_on_cpu_in_bf16(tmp_path, bundle):
    fp32, bf16 = Predictor(bundle, "cpu"), Predictor(bundle, "cpu", amp="bf16")
    assert fp32.amp_dtype is None and bf16.amp_dtype == torch.bfloat16
    image = torch.from_numpy(scene_data(64, 64)[None].astype(np.float32))
    valid = torch.ones(1, 64, 64, dtype=torch.bool)
    low, high = bf16.logits(image, valid), fp32.logits(image, valid)
    assert low.dtype == torch.float32
    assert (low.argmax(1) == high.argmax(1)).float().mean() >= 0.9
    scene = write_scene(tmp_path / "s.tif", scene_data(100, 90))
    result = bf16.predict(scene, tmp_path / "o", PredictOptions(window=64, tta="flips"))
    assert read(result.classes)[0].shape == (100, 90)


def test_cli_window_tta_and_amp_options(jmlgeo, tmp_path, bundle):
    scene = write_scene(tmp_path / "s.tif", scene_data(60, 80))
    out = tmp_path / "pred"
    args = ("predict", bundle, scene, "--out", out, "--window", "50", "--tta", "flips")
    result = jmlgeo(*args, "--amp", "off")
    assert result.code == 0, result.err
    assert "using 48" in result.err and (out / "s.classes.tif").exists()
    assert_one_line_error(jmlgeo(*args, "--amp", "fp8"), "--amp fp8", "choose from")
    bad_tta = ("predict", bundle, scene, "--out", out, "--tta", "rotations")
    assert_one_line_error(jmlgeo(*bad_tta), "--tta rotations", "none, flips")
    bad_overlap = ("predict", bundle, scene, "--out", out, "--window", "32", "--overlap", "40")
    assert_one_line_error(jmlgeo(*bad_overlap), "--overlap 40", "window (32 px)")


def test_untrained_bundle_card_and_prediction_phases(tmp_path, bundle):
    """The card says what was asked; every phase of a prediction is timed and within its wall."""
    _, card = load_bundle(bundle)
    assert card.classes == CLASSES and card.bands == 3 and card.tile_size == 64
    assert card.resolution == [0.5, 0.5] and card.band_names == ["b0", "b1", "b2"]
    assert card.architecture["num_classes"] == 3
    path = write_scene(tmp_path / "s.tif", scene_data(150, 130))
    options = PredictOptions(tile=64, overlap=16, probabilities=True)
    result = Predictor(bundle, device="cpu").predict(path, tmp_path / "out", options)
    assert set(result.phases) == {"forward", "blend", "write", "cog"}
    assert all(v > 0 for v in result.phases.values()), result.phases
    main_thread = result.phases["forward"] + result.phases["blend"] + result.phases["cog"]
    assert main_thread < result.seconds
