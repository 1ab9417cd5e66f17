"""The card records what a run did (issue 25): supervision, stages, fingerprints; format versions."""

import json

import numpy as np
import pytest
from conftest import assert_one_line_error, write_scene
from safetensors.numpy import save_file
from test_predict import make_bundle
from test_train import tiny, train_args  # noqa: F401  (the fixture)

from jmlnet_geo.bundle import load_bundle
from jmlnet_geo.card import CARD_KEY, FORMAT, read_card
from jmlnet_geo.errors import InputFileError
from jmlnet_geo.train.fingerprint import file_digest

STEPS = ["--stage1-steps", "1", "--stage2-steps", "1"]


def test_full_supervision_card_says_so_and_computes_no_proposal(jmlgeo, tmp_path, tiny):  # noqa: F811
    out = tmp_path / "full"
    result = jmlgeo(*train_args(tiny, out, "--masks", tiny[2], *STEPS))
    assert result.code == 0, result.err
    assert not list(out.glob("proposals/*.tif")), "a full-supervision run wrote proposals"
    state = json.loads((out / "run.json").read_text())["stages"]
    assert not [s for s in state if s.startswith("proposals:") or s == "detector"]
    _, card = load_bundle(out / "model.safetensors")
    assert card.supervision == "full"
    assert card.training_data["scenes"] == ["tiny.tif"]
    assert card.training_data["mask_scenes"] == ["tiny.tif"]
    prints = card.training_data["fingerprints"]
    assert prints["scenes"] == [file_digest(tiny[0])] and prints["masks"] == file_digest(tiny[2])
    assert prints["boxes"] == file_digest(tiny[1]) and prints["truth"] is None
    assert [s["name"] for s in card.stages] == ["stage1", "stage2"]
    for stage in card.stages:
        assert stage["labels"] == ["mask"]
        assert stage["steps"] == 1 and stage["wall_time_s"] > 0
        assert np.isfinite(stage["final_loss"]) and stage["threads"] >= 1
        assert stage["device"].startswith("cpu") or stage["device"].startswith("cuda")
    assert (
        card.stages[1]["loss"] == card.config["segmenter"]["loss"]
        and card.seed == card.config["segmenter"]["seed"]
    )
    assert card.versions["torchgeo"] and card.versions["gdal"]
    info = jmlgeo("info", out / "model.safetensors")
    assert info.code == 0 and "supervision: full" in info.out and "stage2" in info.out
    from jmlnet_geo.stac import model_item

    item = model_item(out / "model.safetensors", tmp_path / "model.json").to_dict()
    assert item["properties"]["jmlgeo:supervision"] == "full"
    assert [s["labels"] for s in item["properties"]["jmlgeo:stages"]] == [["mask"], ["mask"]]


def test_semi_run_lists_its_mask_scenes_and_weak_stages_their_proposals(jmlgeo, tmp_path, tiny):  # noqa: F811
    scene, boxes, truth = tiny
    second = tmp_path / "second.tif"
    second.write_bytes(scene.read_bytes())
    out = tmp_path / "semi"
    args = ["train", scene, second, "--boxes", boxes, "--out", out, *train_args(tiny, out)[6:]]
    result = jmlgeo(
        *args,
        "--masks",
        truth,
        "--masks-fraction",
        "0.5",
        "--truth",
        truth,
        *STEPS,
        "--proposals",
        "grabcut,crf",
    )
    assert result.code == 0, result.err
    _, card = load_bundle(out / "model.safetensors")
    assert card.supervision == "semi" and len(card.training_data["mask_scenes"]) == 1
    assert card.training_data["mask_scenes"][0] in ("tiny.tif", "second.tif")
    assert card.stages[0]["labels"] == ["grabcut", "mask"]
    assert card.stages[1]["labels"] == ["grabcut", "crf", "mask"]
    assert "miou" in card.validation and card.validation["truth"] == "truth.gpkg"
    assert "miou" in card.stages[1]["validation"]


def test_masks_fraction_zero_with_masks_is_refused(jmlgeo, tmp_path, tiny):  # noqa: F811
    out = tmp_path / "zero"
    result = jmlgeo(*train_args(tiny, out, "--masks", tiny[2], "--masks-fraction", "0", *STEPS))
    assert_one_line_error(result, "--masks-fraction 0", "--truth")
    assert not (out / "stage1").exists()


def _old_bundle(path, version="1", **changes):
    """A bundle as format 1 wrote it: the card of that time, format_version 1."""
    fresh = make_bundle(path.with_name("fresh.safetensors"))
    state, card = load_bundle(fresh)
    old = {k: getattr(card, k) for k in (
        "classes", "colours", "bands", "band_names", "normalization", "tile_size", "resolution",
        "crs_units", "architecture", "config", "versions", "training_data", "validation",
    )} | changes  # fmt: skip
    metadata = {"format": FORMAT, "format_version": version, CARD_KEY: json.dumps(old)}
    save_file({k: v.numpy() for k, v in state.items()}, path, metadata=metadata)
    return path


def test_an_old_format_bundle_still_predicts(jmlgeo, tmp_path):
    bundle = _old_bundle(tmp_path / "old.safetensors")
    _, card = load_bundle(bundle)
    assert card.supervision is None and card.stages == []
    data = np.random.default_rng(0).integers(0, 255, (3, 64, 64), dtype=np.uint8)
    scene = write_scene(tmp_path / "scene.tif", data)
    result = jmlgeo("predict", bundle, scene, "--out", tmp_path / "pred", "--progress", "none")
    assert result.code == 0, result.err
    assert list((tmp_path / "pred").glob("*.tif"))
    assert "supervision: not recorded" in jmlgeo("info", bundle).out


def test_future_version_and_out_of_range_cards_are_one_line_errors(jmlgeo, tmp_path):
    future = _old_bundle(tmp_path / "future.safetensors", version="3")
    with pytest.raises(InputFileError, match="future.safetensors.*newer.*upgrade"):
        load_bundle(future)
    assert_one_line_error(jmlgeo("info", future), "future.safetensors", "format version 3")
    bad_std = _old_bundle(tmp_path / "std.safetensors", normalization={"mean": [0] * 3,
                                                                      "std": [1, 0, 1]})  # fmt: skip
    with pytest.raises(InputFileError, match="std.safetensors.*normalization.std"):
        read_card(bad_std)
    no_bands = _old_bundle(tmp_path / "bands.safetensors", bands=0)
    with pytest.raises(InputFileError, match="bands.safetensors.*bands"):
        load_bundle(no_bands)
    huge = _old_bundle(tmp_path / "tile.safetensors", tile_size=10**6)
    assert_one_line_error(jmlgeo("info", huge), "tile.safetensors", "tile_size")
    garbage = _old_bundle(tmp_path / "garbage.safetensors", version="two")
    with pytest.raises(InputFileError, match="unknown format version"):
        load_bundle(garbage)


def test_an_auto_stage1_choice_puts_its_agreement_table_on_the_card(jmlgeo, tmp_path, tiny):  # noqa: F811
    out = tmp_path / "auto"
    result = jmlgeo(
        *train_args(tiny, out, "--stage1-proposal", "auto", "--proposals", "grabcut,crf", *STEPS)
    )
    assert result.code == 0, result.err
    _, card = load_bundle(out / "model.safetensors")
    choice = card.stage1_choice
    assert choice["by_agreement"] and choice["proposal"] in ("grabcut", "crf")
    assert {row["method"] for row in choice["agreement"]} >= {"grabcut", "crf"}
    assert card.supervision == "boxes" and card.training_data["mask_scenes"] == []
    assert card.stages[0]["labels"] == [choice["proposal"]]
