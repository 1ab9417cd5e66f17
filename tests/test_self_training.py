"""`jmlgeo train` with the agreement-chosen stage 1, the model proposal, --rounds, --camcut-low."""

import json

import numpy as np
import rasterio
from conftest import assert_one_line_error
from test_train import tiny, train_args  # noqa: F401 - the fixture

from jmlnet_geo.bundle import load_bundle
from jmlnet_geo.train.self_training import agreement_candidates, agreement_voters

STEPS = ["--stage1-steps", "1", "--stage2-steps", "1", "--device", "cpu"]


def test_agreement_voters_add_the_box_to_two_candidates_only():
    assert agreement_voters(["grabcut", "crf"]) == ["grabcut", "crf", "box"]
    assert agreement_voters(["grabcut", "crf", "model"]) == ["grabcut", "crf", "box"]
    assert agreement_voters(["grabcut", "crf", "detcam"]) == ["grabcut", "crf", "detcam"]
    assert agreement_voters(["grabcut"]) == ["grabcut"]
    assert agreement_candidates(["box", "crf", "mask"]) == ["box", "crf"]


def test_auto_stage1_is_chosen_by_agreement_and_logged(jmlgeo, tmp_path, tiny):  # noqa: F811
    out = tmp_path / "auto"
    result = jmlgeo(
        *train_args(tiny, out, *STEPS, "--stage1-proposal", "auto", "--proposals", "grabcut,crf")
    )
    assert result.code == 0, result.err
    assert "proposal agreement (mean box-wise IoU" in result.err
    assert (out / "proposals" / "tiny.box.tif").exists()  # the third voter
    state = json.loads((out / "run.json").read_text())
    choice = state["stages"]["stage1_choice"]
    assert choice["by_agreement"] and choice["proposal"] in ("grabcut", "crf")
    table = {row["method"]: row["mean_iou"] for row in choice["agreement"]}
    assert set(table) == {"grabcut", "crf", "box"}
    best = max(("grabcut", "crf"), key=table.get)
    assert choice["proposal"] == best
    assert f"stage 1 learns from {best}" in result.err
    # the chosen proposal's stage 1 is the one a run naming it trains: it is reused
    named = jmlgeo(*train_args(tiny, out, *STEPS, "--stage1-proposal", best, "--resume"))
    assert named.code == 0, named.err
    reused = named.err.split("reused finished stages:")[1].splitlines()[0]
    assert "stage1" in reused


def test_model_proposal_is_a_scene_raster_recomputed_only_with_stage1(jmlgeo, tmp_path, tiny):  # noqa: F811
    out = tmp_path / "model"
    args = [*STEPS, "--proposals", "grabcut,model", "--loss", "ma"]
    first = jmlgeo(*train_args(tiny, out, *args))
    assert first.code == 0, first.err
    path = out / "proposals" / "tiny.model.tif"
    with rasterio.open(tiny[0]) as scene, rasterio.open(path) as src:
        assert src.transform == scene.transform and src.shape == scene.shape
        values = src.read(1)
        assert set(np.unique(values)) <= {0, 1, 2, 255}
    assert not (out / "stage1_predictions").exists()  # the temporary bundle is gone
    stamp = path.stat().st_mtime_ns
    # another stage-2 loss: stage 1 unchanged, so the model proposal is reused
    other = jmlgeo(*train_args(tiny, out, *[a if a != "ma" else "bmm" for a in args], "--resume"))
    assert other.code == 0, other.err
    reused = other.err.split("reused finished stages:")[1].splitlines()[0]
    assert "proposals:model" in reused and "stage2" not in reused
    assert path.stat().st_mtime_ns == stamp
    # a new stage 1 (another seed) predicts the model proposal again
    seeded = jmlgeo(*train_args(tiny, out, *args, "--seed", "3", "--resume"))
    assert seeded.code == 0, seeded.err
    reused = seeded.err.split("reused finished stages:")[1].splitlines()[0]
    assert "proposals:model" not in reused and "stage1" not in reused
    card = load_bundle(out / "model.safetensors")[1]
    assert card.config["segmenter"]["proposals"] == ["grabcut", "model"]


def test_rounds_refresh_the_model_proposal(jmlgeo, tmp_path, tiny):  # noqa: F811
    out = tmp_path / "rounds"
    args = [*STEPS, "--proposals", "grabcut,model", "--loss", "bmm", "--rounds", "2"]
    result = jmlgeo(*train_args(tiny, out, *args))
    assert result.code == 0, result.err
    state = json.loads((out / "run.json").read_text())["stages"]
    assert state["stage2_round2"]["done"] and state["proposals:model"]["source"] == "stage2"
    assert (out / "stage2_round2" / "weights.safetensors").exists()
    bundle = load_bundle(out / "model.safetensors")[0]
    from safetensors.torch import load_file

    last = load_file(out / "stage2_round2" / "weights.safetensors")
    assert all(np.array_equal(bundle[k].numpy(), last[k].numpy()) for k in last)


def test_model_and_rounds_misuse_are_one_clear_line(jmlgeo, tmp_path, tiny):  # noqa: F811
    out = tmp_path / "bad"
    assert_one_line_error(
        jmlgeo(*train_args(tiny, out, *STEPS, "--stage1-proposal", "model")),
        "--stage1-proposal model",
        "stage 2",
    )
    assert_one_line_error(
        jmlgeo(*train_args(tiny, out, *STEPS, "--rounds", "2")), "--rounds 2", "model"
    )
    assert_one_line_error(
        jmlgeo(*train_args(tiny, out, *STEPS, "--stage1-proposal", "auto", "--proposals", "model")),
        "auto",
        "--proposals",
    )


def test_camcut_low_redoes_camcut_only(jmlgeo, tmp_path, tiny):  # noqa: F811
    out = tmp_path / "camcut"
    args = [*STEPS, "--proposals", "grabcut,detcam,camcut", "--stage1-proposal", "grabcut"]
    args += ["--detector-steps", "1", "--detector-tile-size", "64", "--detector-batch-size", "2"]
    first = jmlgeo(*train_args(tiny, out, *args))
    assert first.code == 0, first.err
    probable = jmlgeo(*train_args(tiny, out, *args, "--camcut-low", "probable", "--resume"))
    assert probable.code == 0, probable.err
    reused = probable.err.split("reused finished stages:")[1].splitlines()[0]
    assert "detector" in reused and "proposals:detcam" in reused and "stage1" in reused
    assert "proposals:camcut" not in reused and "stage2" not in reused
    card = load_bundle(out / "model.safetensors")[1]
    assert card.config["detector"]["camcut_low"] == "probable"
    bad = jmlgeo(*train_args(tiny, out, *args, "--camcut-low", "maybe", "--resume"))
    assert_one_line_error(bad, "--camcut-low maybe", "probable")


def test_detector_box_tiles_retrain_the_detector(jmlgeo, tmp_path, tiny):  # noqa: F811
    out = tmp_path / "dbt"
    args = [*STEPS, "--proposals", "grabcut,detcam", "--stage1-proposal", "grabcut"]
    args += ["--detector-steps", "1", "--detector-tile-size", "64", "--detector-batch-size", "2"]
    first = jmlgeo(*train_args(tiny, out, *args))
    assert first.code == 0, first.err
    tiles = jmlgeo(*train_args(tiny, out, *args, "--detector-box-tiles", "0.5", "--resume"))
    assert tiles.code == 0, tiles.err
    reused = tiles.err.split("reused finished stages:")[1].splitlines()[0]
    assert "proposals:grabcut" in reused and "detector" not in reused.split(", ")
    card = load_bundle(out / "model.safetensors")[1]
    assert card.config["detector"]["box_tiles"] == 0.5
