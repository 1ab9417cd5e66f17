"""Interrupted work: SIGTERM of predict says so, exits non-zero and leaves nothing behind."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import write_scene
from hostile import real_bundle


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_sigterm_during_predict_says_interrupted_and_leaves_nothing(tmp_path, sig):
    bundle = real_bundle(tmp_path / "m.safetensors")
    rng = np.random.default_rng(0)
    scene = write_scene(tmp_path / "big.tif", rng.integers(0, 255, (3, 3000, 3000), np.uint8))
    out = tmp_path / "out"
    exe = Path(sys.executable).with_name("jmlgeo")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [exe, "predict", bundle, scene, "--out", out, "--progress", "none"]
    proc = subprocess.Popen(
        list(map(str, args)),
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=as_in_a_terminal,
    )
    deadline = time.time() + 60
    while time.time() < deadline and not (out.exists() and any(out.iterdir())):
        time.sleep(0.2)  # the hidden working folder appears: the prediction is running
    time.sleep(1.0)
    proc.send_signal(sig)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 128 + sig, err
    assert "interrupted" in err and "Traceback" not in err
    assert not out.exists() or list(out.iterdir()) == []


def as_in_a_terminal() -> None:
    """In the child: Ctrl-C's default action, as in a terminal.

    A test run started in the background by a shell without job control (``(make test &)``)
    inherits SIGINT ignored, and Python then keeps it ignored: jmlgeo would rightly not stop.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _children_of(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _many_boxes(tmp_path, side=1200, count=900):
    """A scene with ``count`` boxes: GrabCut on all of them takes the workers a while."""
    from conftest import pixel_box, write_boxes

    rng = np.random.default_rng(0)
    scene = write_scene(tmp_path / "many.tif", rng.integers(0, 255, (3, side, side), np.uint8))
    corners = rng.integers(0, side - 60, (count, 2))
    boxes = [pixel_box(c, r, c + 50, r + 50) for r, c in corners]
    layer = write_boxes(tmp_path / "many.gpkg", boxes, ["x", "y"] * (count // 2))
    return scene, layer


def _kill_once_workers_run(args, tmp_path, sig, workers=2, wait_s=5.0):
    """Start ``jmlgeo args``, wait for ``workers`` pool workers, send ``sig``; return survivors."""
    pytest.importorskip("psutil")
    exe = Path(sys.executable).with_name("jmlgeo")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [str(exe), *map(str, args)], env=env, cwd=tmp_path, stderr=subprocess.DEVNULL
    )
    deadline, found = time.time() + 120, []
    while time.time() < deadline and proc.poll() is None:
        found = [p for p in _children_of(proc.pid) if "spawn_main" in " ".join(p.cmdline())]
        if len(found) >= workers:
            break
        time.sleep(0.2)
    assert len(found) >= workers, f"no {workers} workers seen (exit {proc.poll()})"
    time.sleep(1.0)  # the workers are busy with their boxes
    proc.send_signal(sig)
    proc.wait(timeout=60)
    deadline = time.time() + wait_s
    alive = found
    while alive and time.time() < deadline:
        alive = [p for p in alive if p.is_running() and p.status() != "zombie"]
        time.sleep(0.2)
    for p in alive:  # do not leave them behind for the other tests
        p.kill()
    return alive


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal: Linux")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_proposal_workers_die_with_their_parent(tmp_path, sig):
    scene, layer = _many_boxes(tmp_path)
    args = ["proposals", scene, "--boxes", layer, "--out", tmp_path / "p", "--workers", "2"]
    args += ["--methods", "grabcut"]
    assert _kill_once_workers_run(args, tmp_path, sig) == []
    assert not (tmp_path / "p" / "many.grabcut.tif").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal: Linux")
def test_train_proposal_workers_die_with_a_killed_train(tmp_path):
    scene, layer = _many_boxes(tmp_path)
    out = tmp_path / "run"
    args = ["train", scene, "--boxes", layer, "--out", out, "--workers", "2", "--progress", "none"]
    args += ["--proposals", "grabcut", "--stage1-steps", "1", "--stage2-steps", "1"]
    assert _kill_once_workers_run(args, tmp_path, signal.SIGKILL) == []
    assert not (out / "model.safetensors").exists()


@pytest.mark.parametrize("parent", ["1", "os.getppid()"])
def test_die_with_parent_exits_when_the_parent_is_gone_already(parent):
    code = f"import os; from jmlnet_geo.children import die_with_parent as d; print(d({parent}))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if parent == "1":  # not our parent: as if it had died before the call
        assert done.returncode == 1 and done.stdout == "", done
    else:
        assert done.returncode == 0 and done.stdout.strip() == str(sys.platform == "linux")
