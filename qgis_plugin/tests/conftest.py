"""Fixtures for the plugin's tests in real QGIS, headless (``make test-qgis``, in ``.venv-qgis``).

The plugin is loaded the way QGIS loads it (``qgis.utils.loadPlugin`` / ``startPlugin`` with
``qgis_plugin/`` on the plugin path). ``jmlgeo`` is the fake command of ``fake_jmlgeo.py`` (run by
this Python, writing with QGIS's GDAL), or the real one from the repository's ``.venv``.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import BOXES, EXECUTABLE_SETTING, FAKE, PLUGIN_DIR, REAL_JMLGEO, SCENE


@pytest.fixture(scope="session")
def plugin(qgis_processing, qgis_iface):
    """The plugin, loaded and started by QGIS's own plugin machinery."""
    import qgis.utils

    sys.path.insert(0, str(PLUGIN_DIR))
    qgis.utils.plugin_paths.insert(0, str(PLUGIN_DIR))
    qgis.utils.updateAvailablePlugins()  # reads metadata.txt, as QGIS does at start-up
    assert qgis.utils.loadPlugin("jmlgeo_qgis")
    assert qgis.utils.startPlugin("jmlgeo_qgis"), "initGui failed"
    yield qgis.utils.plugins["jmlgeo_qgis"]
    assert qgis.utils.unloadPlugin("jmlgeo_qgis")


@pytest.fixture
def use_executable(plugin):
    """Set the plugin's executable setting for one test; restored afterwards."""
    from processing.core.ProcessingConfig import ProcessingConfig

    before = ProcessingConfig.getSetting(EXECUTABLE_SETTING)

    def use(path: str | os.PathLike[str] | None) -> None:
        # As if typed in the options dialog (setSettingValue refuses a path that does not exist).
        ProcessingConfig.settings[EXECUTABLE_SETTING].value = str(path) if path else ""

    yield use
    ProcessingConfig.settings[EXECUTABLE_SETTING].value = before or ""


@pytest.fixture(scope="session")
def fake_executable(tmp_path_factory) -> Path:
    """``<tmp>/bin/jmlgeo``: the fake command run by this Python (which has QGIS's GDAL)."""
    exe = tmp_path_factory.mktemp("fake") / "bin" / "jmlgeo"
    exe.parent.mkdir()
    exe.write_text(f"#!{sys.executable}\n" + FAKE.read_text(encoding="utf-8"), encoding="utf-8")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return exe


@pytest.fixture
def fake(use_executable, fake_executable, tmp_path, monkeypatch):
    """The fake jmlgeo as the plugin's executable; ``fake.record`` is what it saw."""
    use_executable(fake_executable)
    record = tmp_path / "record.json"
    monkeypatch.setenv("FAKE_JMLGEO_RECORD", str(record))
    monkeypatch.setenv("FAKE_JMLGEO_MODE", "ok")
    return SimpleNamespace(path=fake_executable, record=record)


@pytest.fixture
def project(qgis_new_project):
    """A fresh, empty project."""
    yield qgis_new_project
    qgis_new_project.removeAllMapLayers()


@pytest.fixture(scope="session")
def real_jmlgeo() -> Path:
    """The repository's jmlgeo (``make test`` installs it before these tests run)."""
    if not REAL_JMLGEO.exists():
        pytest.skip(f"{REAL_JMLGEO} is missing: run make (it installs jmlgeo) first")
    return REAL_JMLGEO


@pytest.fixture(scope="session")
def tiny_bundle(real_jmlgeo, tmp_path_factory) -> Path:
    """A bundle trained for one step per stage on 64 px tiles of the sample (about a minute)."""
    run = tmp_path_factory.mktemp("tiny-run")
    command = [
        str(real_jmlgeo),
        "train",
        str(SCENE),
        "--boxes",
        str(BOXES),
        "--out",
        str(run),
        "--tile-size",
        "64",
        "--batch-size",
        "2",
        "--stage1-steps",
        "1",
        "--stage2-steps",
        "1",
        "--loader-workers",
        "0",
        "--workers",
        "1",
        "--device",
        "cpu",
        "--progress",
        "none",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("QGIS_")}
    start = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, f"jmlgeo train failed:\n{done.stderr[-3000:]}"
    bundle = run / "model.safetensors"
    assert bundle.is_file()
    print(f"tiny bundle trained in {time.monotonic() - start:.0f} s")
    return bundle
