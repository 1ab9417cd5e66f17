# ruff: noqa: D103, E402 - tests; QGIS imports follow the skip when QGIS is missing
"""Issue 21 in real QGIS: runs that survive and resume, remembered bundles, Train's defaults."""

from __future__ import annotations

import pytest
from helpers import NO_QGIS

pytest.importorskip("qgis.core", reason=NO_QGIS)

import stat
import sys
from pathlib import Path

import processing
from helpers import BOXES, SCENE, read_record
from qgis.core import QgsProcessingException, QgsProject, QgsRasterLayer, QgsVectorLayer

RUNS_SETTING = "JMLGEO_RUNS_FOLDER"


@pytest.fixture
def runs_folder(plugin, tmp_path):
    """The plugin's runs folder setting pointed at a fresh folder (not created yet)."""
    from processing.core.ProcessingConfig import ProcessingConfig

    before = ProcessingConfig.getSetting(RUNS_SETTING)
    folder = tmp_path / "runs"
    ProcessingConfig.settings[RUNS_SETTING].value = str(folder)
    yield folder
    ProcessingConfig.settings[RUNS_SETTING].value = before or ""


@pytest.fixture
def bundle(tmp_path):
    path = tmp_path / "run-a" / "model.safetensors"
    path.parent.mkdir()
    path.write_bytes(b"not read by the fake")
    return path


def folder_default(algorithm_id: str) -> str:
    from qgis.core import QgsApplication

    algorithm = QgsApplication.processingRegistry().createAlgorithmById(algorithm_id)
    return algorithm.parameterDefinition("OUTPUT_FOLDER").defaultValue()


def test_a_train_run_goes_to_the_runs_folder_survives_and_resumes(fake, runs_folder):
    assert folder_default("jmlgeo:train") == str(runs_folder)  # never a temporary folder
    assert folder_default("jmlgeo:predict") == str(runs_folder)
    params = {"SCENES": [str(SCENE)], "BOXES": str(BOXES), "CLASS_FIELD": "class"}
    first = processing.run("jmlgeo:train", params)
    run = Path(first["OUTPUT_FOLDER"])
    assert run.parent == runs_folder and run.name.startswith("train-scene-")
    assert Path(first["BUNDLE"]) == run / "model.safetensors" and run.is_dir()

    resumed = processing.run("jmlgeo:train", {**params, "RESUME": True})
    assert resumed["OUTPUT_FOLDER"] == str(run)  # the same folder: Resume can work
    argv = read_record(fake.record)["argv"]
    assert argv[argv.index("--out") + 1] == str(run) and "--resume" in argv

    again = processing.run("jmlgeo:train", {**params, "OUTPUT_FOLDER": str(runs_folder)})
    assert Path(again["OUTPUT_FOLDER"]).parent == runs_folder  # a new run, its own folder
    assert again["OUTPUT_FOLDER"] != str(run) and run.is_dir()


def test_predict_remembers_its_bundle_and_scene(fake, runs_folder, bundle, plugin, qgis_iface):
    results = processing.run("jmlgeo:predict", {"INPUT": str(SCENE), "BUNDLE": str(bundle)})
    out = Path(results["OUTPUT"]).parent
    assert out.parent == runs_folder and out.name.startswith("predict-scene-")
    from qgis.core import QgsApplication

    algorithm = QgsApplication.processingRegistry().createAlgorithmById("jmlgeo:predict")
    assert algorithm.parameterDefinition("BUNDLE").defaultValue() == str(bundle)

    # The next toolbar click, with the new polygons active: the scene and the bundle again.
    scene = QgsRasterLayer(str(SCENE), "scene")
    other = QgsRasterLayer(results["OUTPUT"], "classes")  # a prediction: not offered
    polygons = QgsVectorLayer(results["OUTPUT_POLYGONS"] or str(BOXES), "polygons")
    QgsProject.instance().addMapLayers([other, scene, polygons])
    try:
        qgis_iface.setActiveLayer(polygons)
        assert plugin.predict_parameters() == {"INPUT": scene, "BUNDLE": str(bundle)}
    finally:
        QgsProject.instance().removeAllMapLayers()


def test_train_opens_with_the_scene_and_the_box_layer_not_a_prediction(
    fake, plugin, project, qgis_iface, tmp_path, monkeypatch
):
    from jmlgeo_qgis.settings import mark_output

    scene = QgsRasterLayer(str(SCENE), "scene")
    boxes = QgsVectorLayer(str(BOXES), "boxes")
    prediction = QgsVectorLayer(str(BOXES), "scene polygons (run-a)")
    mark_output(prediction, "polygons")
    points = QgsVectorLayer("Point?crs=EPSG:32633&field=class:string", "points", "memory")
    QgsProject.instance().addMapLayers([scene, boxes, prediction, points])
    qgis_iface.setActiveLayer(prediction)  # as after a prediction
    defaults = plugin.train_parameters()
    assert defaults == {"SCENES": [scene], "BOXES": boxes, "CLASS_FIELD": "class"}

    monkeypatch.setattr(qgis_iface, "browserModel", lambda: None)  # the stub has none
    dialog = processing.createAlgorithmDialog("jmlgeo:train", defaults)
    try:
        wrappers = dialog.mainWidget().wrappers
        # not "0 inputs selected" (the widget holds layers by their source)
        assert wrappers["SCENES"].parameterValue() in ([scene.id()], [scene.source()])
        assert wrappers["BOXES"].parameterValue() == boxes.id()
        assert wrappers["CLASS_FIELD"].parameterValue() == "class"
    finally:
        dialog.deleteLater()

    from qgis.core import QgsApplication, QgsProcessing

    train = QgsApplication.processingRegistry().createAlgorithmById("jmlgeo:train")
    assert train.parameterDefinition("BOXES").dataTypes() == [QgsProcessing.TypeVectorPolygon]
    proposals = train.parameterDefinition("PROPOSALS")
    assert proposals.allowMultiple() and "camcut" in proposals.options()
    steps = train.parameterDefinition("STAGE1_STEPS").description()
    assert "fast 200" in steps and "paper 50000" in steps
    assert all(f"<b>{loss}</b>" in train.shortHelpString() for loss in ("ce", "ma", "mm", "bmm"))


def test_train_then_predict_loads_the_prediction(fake, runs_folder):
    results = processing.runAndLoadResults(
        "jmlgeo:train",
        {"SCENES": [str(SCENE)], "BOXES": str(BOXES), "PREDICT": True},
    )
    assert Path(results["OUTPUT"]).parent == Path(results["OUTPUT_FOLDER"]) / "prediction"
    names = {layer.name() for layer in QgsProject.instance().mapLayers().values()}
    run = Path(results["OUTPUT_FOLDER"]).name
    assert {f"scene classes ({run})", f"scene polygons ({run})"} <= names
    QgsProject.instance().removeAllMapLayers()


def test_a_wrong_executable_says_what_it_is_and_what_to_pick(
    plugin, use_executable, tmp_path, bundle
):
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    python = venv / "python3"
    python.symlink_to(sys.executable)
    jmlgeo = venv / "jmlgeo"
    jmlgeo.write_text("#!/bin/sh\necho 'jmlgeo 0.1.0'\n")
    jmlgeo.chmod(jmlgeo.stat().st_mode | stat.S_IXUSR)
    use_executable(python)
    params = {"INPUT": str(SCENE), "BUNDLE": str(bundle), "OUTPUT_FOLDER": str(tmp_path / "o")}
    with pytest.raises(QgsProcessingException) as caught:
        processing.run("jmlgeo:predict", params)
    message = str(caught.value)
    assert "is not the jmlgeo command" in message and "It is a Python interpreter" in message
    assert f"Pick {jmlgeo} instead" in message and "Providers > JMLNet" in message


def test_evaluate_writes_a_readable_table(fake, tmp_path):
    from helpers import TRUTH

    feedback_lines = []
    from qgis.core import QgsProcessingFeedback

    feedback = QgsProcessingFeedback()
    feedback.pushInfo = feedback_lines.append  # what the dialog's log receives
    results = processing.run(
        "jmlgeo:evaluate",
        {"PREDICTION": str(SCENE), "TRUTH": str(TRUTH), "OUTPUT": str(tmp_path / "r.json")},
        feedback=feedback,
    )
    page = Path(results["OUTPUT_HTML"])
    assert page == tmp_path / "r.html"
    text = page.read_text(encoding="utf-8")
    assert "<table" in text and "<th>class</th>" in text and ">building</td>" in text
    assert "|---|" not in text and any("<table" in line for line in feedback_lines)
