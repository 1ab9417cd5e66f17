# ruff: noqa: D103, E402 - tests; QGIS imports follow the skip when QGIS is missing
"""QGIS under Xvfb with the plugin loaded and a prediction added: a screenshot for CI.

Saved to ``$JMLGEO_SCREENSHOT`` (default: ``<tmp>/jmlgeo-qgis-screenshot.png``); CI keeps it as
an artifact. Skipped, saying why, when Xvfb is missing (``apt-get install xvfb imagemagick``).
"""

from __future__ import annotations

import pytest
from helpers import NO_QGIS

pytest.importorskip("qgis.core", reason=NO_QGIS)

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from helpers import SCENE

HERE = Path(__file__).parent


def test_screenshot_of_a_prediction_in_qgis(fake_executable):
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.skip("Xvfb is missing: apt-get install xvfb imagemagick for the screenshot test")
    out = Path(
        os.environ.get("JMLGEO_SCREENSHOT")
        or Path(tempfile.gettempdir()) / "jmlgeo-qgis-screenshot.png"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    display = f":{90 + os.getpid() % 100}"
    server = subprocess.Popen([xvfb, display, "-screen", "0", "1000x640x24", "-nolisten", "tcp"])
    try:
        time.sleep(1.5)
        env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}
        env.update(DISPLAY=display, QT_QPA_PLATFORM="xcb", FAKE_JMLGEO_MODE="ok")
        command = [sys.executable, str(HERE / "screenshot_app.py"), str(out)]
        command += [str(fake_executable), str(SCENE)]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "scene classes (train-scene-demo)" in done.stdout
    assert out.read_bytes()[:4] == b"\x89PNG" and out.stat().st_size > 10_000
    print(f"screenshot: {out}")
