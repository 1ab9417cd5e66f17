"""Paths and small helpers shared by the QGIS tests."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_DIR = ROOT / "qgis_plugin"

# QGIS writes next to what it opens (GDAL's .aux.xml statistics; GeoPackages opened for update),
# so the tests use a copy of the sample, never the committed files.
SAMPLE = Path(tempfile.mkdtemp(prefix="jmlgeo-qgis-sample-"))
atexit.register(shutil.rmtree, SAMPLE, ignore_errors=True)
for _name in ("scene.tif", "boxes.gpkg", "truth.gpkg"):
    shutil.copyfile(ROOT / "sample_data" / _name, SAMPLE / _name)
SCENE = SAMPLE / "scene.tif"
BOXES = SAMPLE / "boxes.gpkg"
TRUTH = SAMPLE / "truth.gpkg"
REAL_JMLGEO = ROOT / ".venv" / "bin" / "jmlgeo"
FAKE = Path(__file__).with_name("fake_jmlgeo.py")
EXECUTABLE_SETTING = "JMLGEO_EXECUTABLE"
#: Each test module starts with ``pytest.importorskip("qgis.core", reason=NO_QGIS)``.
NO_QGIS = "QGIS is not installed (apt-get install qgis python3-qgis python3-venv; make test-qgis)"
ALGORITHMS = {
    "jmlgeo:predict",
    "jmlgeo:train",
    "jmlgeo:proposals",
    "jmlgeo:evaluate",
    "jmlgeo:audit",
}


def bundle_classes(bundle: Path) -> list[str]:
    """Class names from a bundle's model card (safetensors header: 8-byte length, JSON)."""
    with open(bundle, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    return json.loads(header["__metadata__"]["jmlgeo_model_card"])["classes"]


def build_zip(target: Path) -> Path:
    """Build the plugin zip with ``build_zip.py`` (what ``make qgis-plugin`` runs)."""
    subprocess.run(
        [sys.executable, str(PLUGIN_DIR / "build_zip.py"), str(target)],
        check=True,
        capture_output=True,
    )
    return target


def read_record(path: Path) -> dict:
    """What the fake jmlgeo recorded (argv, environment, pids)."""
    return json.loads(path.read_text(encoding="utf-8"))


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())


def wait_gone(pids: list[int], seconds: float = 5.0) -> bool:
    """Wait until none of ``pids`` is alive."""
    deadline = time.monotonic() + seconds
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not any(alive(p) for p in pids)
