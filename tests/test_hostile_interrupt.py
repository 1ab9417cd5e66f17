"""Interrupted work: SIGTERM of predict says so, exits non-zero and leaves nothing behind."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from conftest import write_scene
from hostile import real_bundle


def test_sigterm_during_predict_says_interrupted_and_leaves_nothing(tmp_path):
    bundle = real_bundle(tmp_path / "m.safetensors")
    rng = np.random.default_rng(0)
    scene = write_scene(tmp_path / "big.tif", rng.integers(0, 255, (3, 3000, 3000), np.uint8))
    out = tmp_path / "out"
    exe = Path(sys.executable).with_name("jmlgeo")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [exe, "predict", bundle, scene, "--out", out, "--progress", "none"]
    proc = subprocess.Popen(list(map(str, args)), stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 60
    while time.time() < deadline and not (out.exists() and any(out.iterdir())):
        time.sleep(0.2)  # the hidden working folder appears: the prediction is running
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "interrupted" in err and "Traceback" not in err
    assert not out.exists() or list(out.iterdir()) == []
