"""Hostile bundles: absurd or inconsistent model cards refused before anything is allocated."""

import copy

import numpy as np
import pytest
from conftest import write_scene
from hostile import assert_refused, card_dict, write_raw_bundle

from jmlnet_geo.card import CARD_VERSION


def _spoil(change):
    card = card_dict()
    change(card)
    return card


def _set(path, value):
    def change(card):
        target = card
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


def _drop(key):
    return lambda card: card.pop(key)


SPOILED = {
    "std-zero": _set(("normalization", "std"), [0.0, 30.0, 30.0]),
    "std-negative": _set(("normalization", "std"), [-1.0, 30.0, 30.0]),
    "std-short": _set(("normalization", "std"), [30.0]),
    "mean-string": _set(("normalization", "mean"), ["a", 1.0, 1.0]),
    "mean-missing": lambda c: c["normalization"].pop("mean"),
    "normalization-list": _set(("normalization",), [1, 2]),
    "bands-zero": _set(("bands",), 0),
    "bands-negative": _set(("bands",), -3),
    "bands-huge": _set(("bands",), 10**6),
    "bands-string": _set(("bands",), "3"),
    "tile-zero": _set(("tile_size",), 0),
    "tile-million": _set(("tile_size",), 10**6),
    "tile-float": _set(("tile_size",), 64.5),
    "resolution-zero": _set(("resolution",), [0.0, 0.5]),
    "resolution-negative": _set(("resolution",), [-1.0, 0.5]),
    "resolution-one": _set(("resolution",), [0.5]),
    "classes-empty": _set(("classes",), []),
    "classes-numbers": _set(("classes",), [1]),
    "classes-too-many": _set(("classes",), [f"c{i}" for i in range(300)]),
    "colours-short": _set(("colours",), []),
    "colours-out-of-range": _set(("colours",), [[300, 0, 0]]),
    "band-names-short": _set(("band_names",), ["r"]),
    "arch-num-classes": _set(("architecture", "num_classes"), 7),
    "arch-in-channels": _set(("architecture", "in_channels"), 4),
    "arch-no-preset": lambda c: c["architecture"].pop("preset"),
    "arch-not-object": _set(("architecture",), "fast"),
    "predict-window-huge": _set(("architecture", "predict_window"), 10**6),
    "predict-window-zero": _set(("architecture", "predict_window"), 0),
    "missing-classes": _drop("classes"),
    "missing-bands": _drop("bands"),
    "missing-normalization": _drop("normalization"),
    "missing-tile": _drop("tile_size"),
    "missing-architecture": _drop("architecture"),
}
WHOLE = {"card-list": [1, 2], "card-string": "card", "card-null": None}
VERSIONS = [str(CARD_VERSION + 1), "999", "x", "-1", "1.5"]  # the next format is from the future
COMMANDS = ["info", "predict", "export"]


@pytest.fixture
def scene(tmp_path):
    rng = np.random.default_rng(0)
    return write_scene(tmp_path / "s.tif", rng.integers(0, 255, (3, 40, 40), dtype=np.uint8))


def _run(jmlgeo, command, bundle, scene, tmp_path):
    out = tmp_path / "out"
    if command == "info":
        return jmlgeo("info", bundle), []
    if command == "predict":
        return jmlgeo("predict", bundle, scene, "--out", out), [out / "s.classes.tif"]
    return jmlgeo("export", bundle, tmp_path / "m.onnx"), [tmp_path / "m.onnx"]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("name", sorted(SPOILED))
def test_absurd_card_is_refused(jmlgeo, tmp_path, scene, name, command):
    bundle = write_raw_bundle(tmp_path / "b.safetensors", _spoil(SPOILED[name]))
    result, outputs = _run(jmlgeo, command, bundle, scene, tmp_path)
    assert_refused(result, "b.safetensors", outputs=tuple(outputs))


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("name", sorted(WHOLE))
def test_card_that_is_not_an_object_is_refused(jmlgeo, tmp_path, scene, name, command):
    bundle = write_raw_bundle(tmp_path / "b.safetensors", copy.deepcopy(WHOLE[name]))
    result, outputs = _run(jmlgeo, command, bundle, scene, tmp_path)
    assert_refused(result, "b.safetensors", outputs=tuple(outputs))


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("version", VERSIONS)
def test_format_version_from_the_future_is_refused(jmlgeo, tmp_path, scene, version, command):
    bundle = write_raw_bundle(tmp_path / "b.safetensors", card_dict(), format_version=version)
    result, outputs = _run(jmlgeo, command, bundle, scene, tmp_path)
    assert_refused(result, "b.safetensors", outputs=tuple(outputs))


def test_sound_card_passes_validation():
    from jmlnet_geo.card import validate_card

    validate_card(card_dict(), "1", "b.safetensors")  # no exception
    validate_card(card_dict(bands=4, classes=3), "", "b.safetensors")


def test_weights_that_do_not_fit_the_card(jmlgeo, tmp_path, scene):
    bundle = write_raw_bundle(tmp_path / "b.safetensors", card_dict())
    result = jmlgeo("predict", bundle, scene, "--out", tmp_path / "out")
    assert_refused(result, "do not fit", outputs=(tmp_path / "out" / "s.classes.tif",))
