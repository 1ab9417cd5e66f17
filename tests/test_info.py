"""``jmlgeo info BUNDLE`` (the card, read without the weights) and light package imports."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
from conftest import assert_one_line_error
from test_predict import make_bundle

from jmlnet_geo.bundle import load_bundle, save_bundle
from jmlnet_geo.card import looks_like_bundle, read_card


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("info") / "model.safetensors")


def test_card_reader_gives_the_card_bundle_py_wrote(bundle):
    state, card = load_bundle(bundle)
    header = read_card(bundle)
    assert header.card == dataclasses.asdict(card)
    assert header.tensors == {k: tuple(v.shape) for k, v in state.items()}
    assert looks_like_bundle(bundle)


def test_info_bundle_prints_classes_normalisation_and_what_is_not_recorded(jmlgeo, bundle):
    result = jmlgeo("info", bundle)
    assert result.code == 0, result.err
    out = result.out
    for fragment in ("background", "car", "#ff0000", "roof", "#0000ff", "b0", "100", "40"):
        assert fragment in out, fragment
    assert "tile 64 px" in out and "0.5 x 0.5 metre" in out
    assert "supervision: not recorded" in out and "validation: not recorded" in out


def test_info_bundle_json_and_recorded_sections(jmlgeo, tmp_path, bundle):
    state, card = load_bundle(bundle)
    card.validation = {"miou": 0.61, "per_class": {"car": 0.5, "roof": 0.72}}
    card.versions = {"jmlnet_geo": "0.1.0", "torch": "2.14.1"}
    card.training_data = {"scenes": ["a.tif"], "supervision": "boxes", "stages": [{"loss": "ce"}]}
    save_bundle(tmp_path / "trained.safetensors", state, card)
    result = jmlgeo("info", tmp_path / "trained.safetensors", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)["bundles"][0]
    assert [c["name"] for c in report["classes"]] == ["background", "car", "roof"]
    assert report["classes"][1]["colour"] == "#ff0000"
    assert report["normalization"] == {"mean": [100.0] * 3, "std": [40.0] * 3}
    assert report["bands"] == {"count": 3, "names": ["b0", "b1", "b2"]}
    assert report["supervision"] == "boxes" and report["stages"] == [{"loss": "ce"}]
    assert report["validation"]["miou"] == 0.61 and report["not_recorded"] == ["config"]
    human = jmlgeo("info", tmp_path / "trained.safetensors").out
    assert "supervision: boxes" in human and "miou: 0.61" in human and "1. loss ce" in human


def test_info_bundle_failures_are_one_line(jmlgeo, tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    assert_one_line_error(jmlgeo("info", tmp_path / "junk.safetensors"), "junk.safetensors")
    assert_one_line_error(jmlgeo("info", tmp_path / "gone.safetensors"), "gone.safetensors")


def test_packages_stay_light_and_export_what_they_list():
    code = (
        "import sys, jmlnet_geo, jmlnet_geo.models, jmlnet_geo.io, jmlnet_geo.card, "
        "jmlnet_geo.stac, jmlnet_geo.cli.main\n"
        "heavy = {'torch', 'cv2', 'rasterio', 'geopandas'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
        "from jmlnet_geo import io, models\n"
        "for pkg in (io, models):\n"
        "    assert all(getattr(pkg, n) is not None for n in pkg.__all__)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    from jmlnet_geo.models import backbones

    for name in backbones.__all__:  # the former home of the split helpers still has them
        assert getattr(backbones, name) is not None
