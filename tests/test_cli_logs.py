"""The CLI's log as a user reads it outside a terminal (issue 21): one warning for many plain
images and none of GDAL's, progress lines at a steady rhythm, ``--quiet``/``--verbose``,
``--version`` and ``doctor``."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import write_scene

JMLGEO = Path(sys.executable).with_name("jmlgeo")


def _plain_images_with_boxes(tmp_path: Path, count: int) -> tuple[list[Path], Path]:
    """``count`` plain PNGs (no georeferencing) and a box layer tied to them by image name."""
    images = tmp_path / "imgs"
    images.mkdir()
    coco = {"images": [], "categories": [{"id": 1, "name": "ship"}], "annotations": []}
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        paths.append(write_scene(images / f"i{i:02d}.png", rng.integers(0, 255, (3, 40, 40), np.uint8), crs=None))  # fmt: skip
        coco["images"].append({"id": i, "file_name": f"i{i:02d}.png", "width": 40, "height": 40})
        coco["annotations"].append({"id": i, "image_id": i, "category_id": 1, "bbox": [5, 5, 20, 20]})  # fmt: skip
    (tmp_path / "c.json").write_text(json.dumps(coco))
    exe = JMLGEO
    boxes = tmp_path / "b.gpkg"
    subprocess.run(
        [exe, "import", "coco", "c.json", "--images", images, "--out", boxes],
        cwd=tmp_path, capture_output=True, check=True,
    )  # fmt: skip
    return paths, boxes


def test_plain_images_warn_once_and_a_log_shows_progress_lines(tmp_path):
    images, boxes = _plain_images_with_boxes(tmp_path, 12)
    exe = JMLGEO
    command = [exe, "proposals", *images, "--boxes", boxes, "--methods", "box", "--out", "p"]
    run = subprocess.run([*command, "--workers", "2"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    warnings_ = [line for line in run.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings_) == 1 and "12 scene(s) have no georeferencing" in warnings_[0]
    assert "geotransform" not in run.stderr  # rasterio/GDAL's per-file warning: not once
    # stderr is a pipe, not a terminal: plain progress lines instead of a bar
    lines = [line for line in run.stderr.splitlines() if line.startswith("proposals (box): ")]
    assert lines and lines[-1].startswith("proposals (box): 12/12 boxes (100 %)")
    assert all("elapsed" in line for line in lines) and len(lines) <= 12
    assert any("left" in line for line in lines)

    quiet = subprocess.run([exe, "--quiet", *command[1:], "--out", "q"], cwd=tmp_path, capture_output=True, text=True)  # fmt: skip
    assert quiet.returncode == 0 and quiet.stdout == ""
    assert quiet.stderr.splitlines() == warnings_  # warnings stay; progress and messages go
    verbose = subprocess.run([exe, "--verbose", *command[1:], "--out", "v"], cwd=tmp_path, capture_output=True, text=True)  # fmt: skip
    assert verbose.returncode == 0 and "geotransform" in verbose.stderr  # everything, repeats too


def test_training_over_plain_images_logs_steps_and_loss(tmp_path):
    """``jmlgeo train`` in a log (issue 21, 6.): no GDAL flood, step lines with the loss."""
    images, boxes = _plain_images_with_boxes(tmp_path, 30)
    command = [JMLGEO, "train", *images, "--boxes", boxes, "--out", "run", "--proposals", "box"]
    command += ["--stage1-steps", "20", "--stage2-steps", "10", "--batch-size", "2"]
    command += ["--tile-size", "32", "--device", "cpu", "--workers", "1", "--loader-workers", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert "geotransform" not in run.stderr
    warnings_ = [line for line in run.stderr.splitlines() if line.startswith("warning:")]
    assert sum("have no georeferencing" in line for line in warnings_) == 1, run.stderr
    for stage, steps in (("stage1", 20), ("stage2", 10)):
        lines = [
            line
            for line in run.stderr.splitlines()
            if line.startswith(f"segmenter {stage} (") and " steps (" in line
        ]
        assert 2 <= len(lines) <= 11 + 2, (stage, run.stderr)  # every 10 % (or 30 s)
        assert lines[-1].split(": ")[1].startswith(f"{steps}/{steps} steps (100 %)")
        assert all("loss " in line and "elapsed" in line for line in lines[1:]), lines
        assert any("left" in line for line in lines), lines
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_progress_lines_every_tenth(capsys, monkeypatch):
    from jmlnet_geo.cli import progress

    monkeypatch.setattr(progress, "VERBOSITY", 0)
    display = progress.ProgressDisplay("bar")
    with display.stage("stage1", "steps") as report:  # pytest's stderr is no terminal
        for step in range(0, 201):
            report(step, 200, loss=0.5)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 11  # 0 %, 10 %, ..., 100 %
    assert lines[1].startswith("stage1: 20/200 steps (10 %), loss 0.5000, ")
    assert lines[-1].startswith("stage1: 200/200 steps (100 %)") and "left" not in lines[-1]


def test_version_and_doctor():
    exe = JMLGEO
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    from jmlnet_geo import __version__

    assert version.stdout.strip() == f"jmlgeo {__version__}"
    doctor = subprocess.run([exe, "doctor", "--json"], capture_output=True, text=True, check=True)
    report = json.loads(doctor.stdout)
    for name in ("python", "torch", "torchvision", "torchgeo", "rasterio", "GDAL", "geopandas"):
        assert report[name] and not report[name].startswith("not available"), name
    assert report["jmlgeo"] == __version__ and report["opencv"]
    assert report["device"].split()[0] in {"cpu", "cuda", "mps"} and int(report["torch threads"])
    assert report["dense CRF (pydensecrf)"] and report["QGIS"]
    text = subprocess.run([exe, "doctor"], capture_output=True, text=True, check=True).stdout
    assert text.splitlines()[0].startswith("jmlgeo ") and "GDAL" in text


def test_doctor_module_is_light():
    code = "import sys, jmlnet_geo.doctor; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
