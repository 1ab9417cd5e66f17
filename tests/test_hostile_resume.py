"""Interrupted training: `train --resume` after `kill -9` repeats the uninterrupted run exactly."""

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train import make_tiny, train_args

from jmlnet_geo.train.resume import SkippingSampler, kept_rows, set_log_aside

STEPS = ["--stage1-steps", "6", "--stage2-steps", "3", "--checkpoint-every", "2"]
WEIGHTS = ["stage1/weights.safetensors", "stage2/weights.safetensors", "model.safetensors"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread: two uninterrupted runs are equal


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The tiny scene of test_train, made once, and an uninterrupted run of it."""
    folder = tmp_path_factory.mktemp("resume")
    tiny = make_tiny(folder)
    whole = folder / "whole"
    done = _jmlgeo(train_args(tiny, whole, *STEPS), folder)
    assert done.returncode == 0, done.stderr
    return tiny, whole


def _jmlgeo(args, cwd, **kw):
    exe = Path(sys.executable).with_name("jmlgeo")
    run = [str(exe), *map(str, args)]
    return subprocess.run(run, capture_output=True, text=True, cwd=cwd, env=ENV, **kw)


def _kill_at(args, cwd, stage, step):
    """Run ``jmlgeo args`` with JSON progress and SIGKILL it once ``stage`` reports ``step``."""
    exe = Path(sys.executable).with_name("jmlgeo")
    run = [str(exe), *map(str, args), "--progress", "json"]
    proc = subprocess.Popen(run, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            cwd=cwd, env=ENV)  # fmt: skip
    for line in proc.stdout:
        event = json.loads(line) if line.startswith("{") else {}
        if stage in str(event.get("stage", "")) and event.get("done", 0) >= step:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=120)
    return proc.returncode


def _log(run: Path, stage: str):
    with open(run / "logs" / stage / "metrics.csv", newline="") as file:
        return [(int(r["step"]), r["train_loss"]) for r in csv.DictReader(file) if r["train_loss"]]


@pytest.mark.parametrize("stage,step", [("stage1", 3), ("stage2", 2)])
def test_killed_and_resumed_run_equals_the_uninterrupted_one(data, tmp_path, stage, step):
    tiny, whole = data
    run = tmp_path / "killed"
    args = train_args(tiny, run, *STEPS)
    assert _kill_at(args, tmp_path, stage, step) == -signal.SIGKILL
    assert not (run / "model.safetensors").exists()
    resumed = _jmlgeo([*args, "--resume"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "Traceback" not in resumed.stderr and "deleted" not in resumed.stderr
    for name in WEIGHTS:
        ours, theirs = load_file(run / name), load_file(whole / name)
        assert ours.keys() == theirs.keys()
        differ = [k for k in ours if not torch.equal(ours[k], theirs[k])]
        assert differ == [], f"{name}: {len(differ)} tensors differ, e.g. {differ[:3]}"
    for name in ("stage1", "stage2"):  # every step logged once, the first ones kept
        assert _log(run, name) == _log(whole, name)
    assert not list(run.rglob("*.before-resume"))


def test_skipping_sampler_draws_the_same_tiles_later():
    class Counting:
        def __iter__(self):
            return iter(range(10))

        def __len__(self):
            return 10

    sampler = SkippingSampler(Counting())
    sampler.start = 4
    assert list(sampler) == [4, 5, 6, 7, 8, 9] and len(sampler) == 10


def test_log_of_a_resume_keeps_the_steps_before_the_checkpoint(tmp_path):
    metrics = tmp_path / "metrics.csv"
    metrics.write_text("epoch,lr,step,train_loss\n0,0.1,0,1.5\n0,0.1,1,1.25\n0,,2,\n0,0.1,3,1.0\n")
    before = set_log_aside(metrics)
    assert before is not None and before.exists() and not metrics.exists()
    assert kept_rows(before, 3) == [
        {"epoch": 0, "lr": 0.1, "step": 0, "train_loss": 1.5},
        {"epoch": 0, "lr": 0.1, "step": 1, "train_loss": 1.25},
        {"epoch": 0, "step": 2},
    ]
    metrics.write_text("epoch,lr,step,train_loss\n")  # a resume killed before the rows went back
    assert set_log_aside(metrics) == before and before.read_text().count("\n") == 5
    assert set_log_aside(tmp_path / "none" / "metrics.csv") is None


@pytest.mark.parametrize("spoil", ["truncated", "garbage"])
def test_resume_with_a_corrupt_checkpoint_names_it_and_the_way_out(data, tmp_path, spoil):
    tiny, _ = data
    run = tmp_path / "killed"
    args = train_args(tiny, run, *STEPS)
    _kill_at(args, tmp_path, "stage1", 3)
    checkpoint = run / "stage1" / "last.ckpt"
    raw = checkpoint.read_bytes()
    checkpoint.write_bytes(raw[: len(raw) // 2] if spoil == "truncated" else b"PK\x03\x04junk")
    resumed = _jmlgeo([*args, "--resume"], tmp_path)
    errors = [line for line in resumed.stderr.splitlines() if line.startswith("error:")]
    assert resumed.returncode == 1 and len(errors) == 1, resumed.stderr
    assert "last.ckpt" in errors[0] and "--force" in errors[0] and "Traceback" not in resumed.stderr
    assert not (run / "model.safetensors").exists()
    checkpoint.unlink()  # the way out the message gives: the stage starts over, the run goes on
    again = _jmlgeo([*args, "--resume"], tmp_path)
    assert again.returncode == 0, again.stderr
    assert (run / "model.safetensors").exists()
