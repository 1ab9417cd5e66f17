# ruff: noqa: D103, E402 - tests; QGIS imports follow the skip when QGIS is missing
"""End to end in QGIS with the real ``jmlgeo``: a tiny bundle, then Predict on the sample scene."""

from __future__ import annotations

import pytest
from helpers import NO_QGIS

pytest.importorskip("qgis.core", reason=NO_QGIS)

from pathlib import Path

import processing
from helpers import SCENE, bundle_classes, wait_gone
from pytest_qgis.utils import wait_until
from qgis.core import (
    QgsApplication,
    QgsPalettedRasterRenderer,
    QgsProcessingAlgRunnerTask,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)

pytestmark = pytest.mark.slow


def test_predict_with_the_real_jmlgeo(plugin, use_executable, real_jmlgeo, tiny_bundle, tmp_path):
    from jmlgeo_qgis.styling import class_names, style_class_raster, style_polygons

    use_executable(real_jmlgeo)
    feedback = QgsProcessingFeedback()
    progress = []
    feedback.progressChanged.connect(progress.append)
    results = processing.run(
        "jmlgeo:predict",
        {
            "INPUT": str(SCENE),
            "BUNDLE": str(tiny_bundle),
            "POLYGONS": True,
            "WINDOW": 256,  # few, large windows: a CPU predicts the sample in seconds
            "OVERLAP": 0,
            "DEVICE": "cpu",
            "OUTPUT_FOLDER": str(tmp_path / "prediction"),
        },
        feedback=feedback,
    )
    scene = QgsRasterLayer(str(SCENE), "scene")
    classes = QgsRasterLayer(results["OUTPUT"], "classes")
    assert classes.isValid()
    assert classes.crs() == scene.crs() and classes.crs().isValid()
    assert (classes.width(), classes.height()) == (scene.width(), scene.height())
    assert classes.extent() == scene.extent()

    expected = bundle_classes(tiny_bundle)
    assert class_names(results["OUTPUT"]) == expected
    assert style_class_raster(classes, results["OUTPUT_STYLE"])
    renderer = classes.renderer()
    assert isinstance(renderer, QgsPalettedRasterRenderer)
    labels = {c.value: c.label for c in renderer.classes()}
    assert [labels[i] for i in range(1, len(expected) + 1)] == expected

    polygons = QgsVectorLayer(results["OUTPUT_POLYGONS"], "polygons")
    assert polygons.isValid() and polygons.crs() == scene.crs()
    assert {"class_id", "class_name", "area"} <= set(polygons.fields().names())
    names = {f["class_name"] for f in polygons.getFeatures()}
    assert names <= set(expected)
    assert style_polygons(polygons, results["OUTPUT"])
    assert [c.value() for c in polygons.renderer().categories()] == expected

    assert progress and max(progress) == pytest.approx(100.0)


def processes_mentioning(text: str) -> list[int]:
    """Processes whose command line contains ``text`` (jmlgeo and its loader workers)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text.encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_cancel_stops_the_real_jmlgeo(plugin, use_executable, real_jmlgeo, tiny_bundle, tmp_path):
    use_executable(real_jmlgeo)
    out = tmp_path / "cancelled-prediction"
    algorithm = QgsApplication.processingRegistry().createAlgorithmById("jmlgeo:predict")
    params = {
        "INPUT": str(SCENE),
        "BUNDLE": str(tiny_bundle),
        "WINDOW": 64,  # many small windows: long enough to cancel in the middle
        "DEVICE": "cpu",
        "OUTPUT_FOLDER": str(out),
    }
    context, feedback = QgsProcessingContext(), QgsProcessingFeedback()
    context.setProject(QgsProject.instance())
    task = QgsProcessingAlgRunnerTask(algorithm, params, context, feedback)
    finished = []
    task.executed.connect(lambda ok, results: finished.append(ok))
    QgsApplication.taskManager().addTask(task)

    assert wait_until(lambda: feedback.progress() > 0, timeout_milliseconds=60000)
    running = processes_mentioning(str(out))
    assert running, "jmlgeo predict is not running"
    task.cancel()
    assert wait_until(lambda: finished, timeout_milliseconds=30000), "the task did not finish"
    assert finished == [False]
    assert wait_gone(running), "jmlgeo predict (or a loader worker) survived the cancel"
    assert processes_mentioning(str(out)) == []
    assert not (out / "scene.classes.tif").exists()
