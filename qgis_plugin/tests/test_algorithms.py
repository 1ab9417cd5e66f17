# ruff: noqa: D103, E402 - tests; QGIS imports follow the skip when QGIS is missing
"""The algorithms in QGIS with the fake jmlgeo: outputs, styles, cancel, errors, not found."""

from __future__ import annotations

import pytest
from helpers import NO_QGIS

pytest.importorskip("qgis.core", reason=NO_QGIS)

import processing
from helpers import BOXES, SCENE, TRUTH, read_record, wait_gone
from pytest_qgis.utils import wait_until
from qgis.core import (
    QgsApplication,
    QgsCategorizedSymbolRenderer,
    QgsPalettedRasterRenderer,
    QgsProcessingAlgRunnerTask,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)


@pytest.fixture
def bundle(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"not read by the fake")
    return path


def run_predict(bundle, out, **extra):
    params = {"INPUT": str(SCENE), "BUNDLE": str(bundle), "OUTPUT_FOLDER": str(out), **extra}
    return processing.run("jmlgeo:predict", params)


def test_predict_returns_a_class_raster_and_polygons(fake, bundle, tmp_path):
    results = run_predict(bundle, tmp_path / "out", POLYGONS=True, DEVICE="cpu", WINDOW=64)
    classes = QgsRasterLayer(results["OUTPUT"], "classes")
    assert classes.isValid()
    assert classes.crs() == QgsRasterLayer(str(SCENE), "scene").crs()
    polygons = QgsVectorLayer(results["OUTPUT_POLYGONS"], "polygons")
    assert polygons.isValid() and polygons.featureCount() == 2
    assert polygons.crs() == classes.crs()
    assert results["OUTPUT_STYLE"].endswith("scene.classes.qml")
    assert results["OUTPUT_PROBABILITIES"] is None
    argv = read_record(fake.record)["argv"]
    assert argv[:4] == ["predict", str(bundle), str(SCENE), "--out"]
    assert argv[-7:] == ["--polygons", "--window", "64", "--device", "cpu", "--progress", "json"]
    assert "--overlap" not in argv and "--probabilities" not in argv and "--tta" not in argv


def test_predict_passes_the_window_overlap_and_tta(fake, bundle, tmp_path):
    run_predict(bundle, tmp_path / "out", WINDOW=512, OVERLAP=128, TTA="flips")
    argv = read_record(fake.record)["argv"]
    at = argv.index("--window")
    assert argv[at : at + 6] == ["--window", "512", "--overlap", "128", "--tta", "flips"]


def test_run_and_load_results_adds_styled_layers(fake, bundle, tmp_path, project):
    results = processing.runAndLoadResults(
        "jmlgeo:predict",
        {"INPUT": str(SCENE), "BUNDLE": str(bundle), "OUTPUT_FOLDER": str(tmp_path / "out")},
    )
    layers = {layer.name(): layer for layer in QgsProject.instance().mapLayers().values()}
    model = bundle.parent.name  # the bundle's run folder names the layers (issue 21)
    assert set(layers) == {f"scene classes ({model})", f"scene polygons ({model})"}
    raster = layers[f"scene classes ({model})"]
    assert raster.source() == results["OUTPUT"]
    renderer = raster.renderer()
    assert isinstance(renderer, QgsPalettedRasterRenderer)
    labels = {c.value: c.label for c in renderer.classes()}
    assert labels[1] == "building" and labels[2] == "tree"
    vector = layers[f"scene polygons ({model})"]
    categorized = vector.renderer()
    assert isinstance(categorized, QgsCategorizedSymbolRenderer)
    assert categorized.classAttribute() == "class_name"
    colours = {c.value(): c.symbol().color().name() for c in categorized.categories()}
    palette = {c.label: c.color.name() for c in renderer.classes()}
    assert colours == {"building": palette["building"], "tree": palette["tree"]}
    for category in categorized.categories():  # outlines over a light fill: the raster shows
        fill = category.symbol().symbolLayer(0)
        assert fill.fillColor().alpha() < 128 and fill.strokeColor().alpha() == 255
        assert fill.strokeColor().name() == palette[category.value()]
    assert {layer.customProperty("jmlgeo/output") for layer in layers.values()} == {
        "classes",
        "polygons",
    }


def test_styles_without_a_qml_come_from_the_colour_table(fake, bundle, tmp_path):
    from jmlgeo_qgis.styling import style_class_raster, style_polygons

    results = run_predict(bundle, tmp_path / "out")
    (tmp_path / "out" / "scene.classes.qml").unlink()
    raster = QgsRasterLayer(results["OUTPUT"], "classes")
    assert style_class_raster(raster)
    classes = raster.renderer().classes()
    expected = [(0, "background"), (1, "building"), (2, "tree")]
    assert [(c.value, c.label) for c in classes] == expected
    polygons = QgsVectorLayer(results["OUTPUT_POLYGONS"], "polygons")
    assert style_polygons(polygons)  # no raster: colours from the fallback list
    assert [c.value() for c in polygons.renderer().categories()] == ["building", "tree"]


def test_the_cli_error_reaches_the_user_verbatim(fake, bundle, tmp_path, monkeypatch):
    message = "model.safetensors: not a jmlgeo bundle (format missing); train one with jmlgeo train"
    monkeypatch.setenv("FAKE_JMLGEO_MODE", "error")
    monkeypatch.setenv("FAKE_JMLGEO_ERROR", message)
    feedback = QgsProcessingFeedback()
    with pytest.raises(QgsProcessingException) as caught:
        processing.run(
            "jmlgeo:predict",
            {"INPUT": str(SCENE), "BUNDLE": str(bundle), "OUTPUT_FOLDER": str(tmp_path / "o")},
            feedback=feedback,
        )
    assert str(caught.value) == message


def test_a_missing_executable_gives_the_message(
    plugin, use_executable, bundle, tmp_path, monkeypatch
):
    from jmlgeo_qgis import executable

    use_executable(None)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JMLGEO_EXECUTABLE", raising=False)
    monkeypatch.setattr(executable, "candidate_dirs", lambda home=None: [tmp_path / "venv" / "bin"])
    params = {"INPUT": str(SCENE), "BUNDLE": str(bundle), "OUTPUT_FOLDER": str(tmp_path / "o")}
    with pytest.raises(QgsProcessingException) as caught:
        processing.run("jmlgeo:predict", params)
    message = str(caught.value)
    assert message.startswith("jmlgeo was not found: install jmlnet-geo")
    assert "Processing > Providers > JMLNet (jmlgeo) > jmlgeo executable" in message

    use_executable(tmp_path / "nowhere" / "jmlgeo")  # a setting that points nowhere
    with pytest.raises(QgsProcessingException, match="plugin setting .* names .*nowhere"):
        processing.run("jmlgeo:predict", params)


def test_cancelling_the_task_stops_the_child_process(fake, tmp_path, monkeypatch):
    """What the Processing dialog's Cancel does: cancel the background task."""
    monkeypatch.setenv("FAKE_JMLGEO_MODE", "hang")
    algorithm = QgsApplication.processingRegistry().createAlgorithmById("jmlgeo:train")
    params = {
        "SCENES": [str(SCENE)],
        "BOXES": str(BOXES),
        "CLASS_FIELD": "class",
        "OUTPUT_FOLDER": str(tmp_path / "run"),
    }
    context, feedback = QgsProcessingContext(), QgsProcessingFeedback()
    context.setProject(QgsProject.instance())
    task = QgsProcessingAlgRunnerTask(algorithm, params, context, feedback)
    finished = []
    task.executed.connect(lambda ok, results: finished.append(ok))
    QgsApplication.taskManager().addTask(task)

    def started():
        return fake.record.exists() and "pids" in read_record(fake.record)

    assert wait_until(started, timeout_milliseconds=20000), "the fake jmlgeo did not start"
    assert wait_until(lambda: feedback.progress() > 0, timeout_milliseconds=5000)
    pids = read_record(fake.record)["pids"]
    task.cancel()
    assert wait_until(lambda: finished, timeout_milliseconds=20000), "the task did not finish"
    assert finished == [False]
    assert wait_gone(pids), "jmlgeo (or its worker) survived the cancel"


def test_train_returns_the_bundle(fake, tmp_path):
    results = processing.run(
        "jmlgeo:train",
        {
            "SCENES": [str(SCENE)],
            "BOXES": str(BOXES),
            "CLASS_FIELD": "class",
            "PRESET": "fast",
            "STAGE1_STEPS": 1,
            "LOSS": "bmm",
            "OUTPUT_FOLDER": str(tmp_path / "run"),
        },
    )
    assert results["BUNDLE"] == str(tmp_path / "run" / "model.safetensors")
    argv = read_record(fake.record)["argv"]
    assert argv[:6] == ["train", str(SCENE), "--boxes", str(BOXES), "--class-field", "class"]
    assert argv[argv.index("--preset") : argv.index("--preset") + 2] == ["--preset", "fast"]
    assert "--stage1-steps" in argv and "--stage2-steps" not in argv and "--loss" in argv


def test_train_exports_a_filtered_box_layer(fake, tmp_path, project):
    boxes = QgsVectorLayer(str(BOXES), "boxes")
    first = sorted(boxes.uniqueValues(boxes.fields().indexOf("class")))[0]
    boxes.setSubsetString(f"\"class\" = '{first}'")
    QgsProject.instance().addMapLayer(boxes)
    processing.run(
        "jmlgeo:train",
        {"SCENES": [str(SCENE)], "BOXES": boxes.id(), "OUTPUT_FOLDER": str(tmp_path / "run")},
    )
    argv = read_record(fake.record)["argv"]
    exported = argv[argv.index("--boxes") + 1]
    assert exported != str(BOXES) and "|" not in exported
    copy = QgsVectorLayer(exported, "copy")
    assert copy.isValid() and copy.featureCount() == boxes.featureCount() < 1000


def test_proposals_returns_one_raster_per_method(fake, tmp_path):
    results = processing.run(
        "jmlgeo:proposals",
        {
            "SCENES": [str(SCENE)],
            "BOXES": str(BOXES),
            "METHODS": ["box", "grabcut"],
            "OUTPUT_FOLDER": str(tmp_path / "p"),
        },
    )
    assert [p.rsplit("/", 1)[-1] for p in results["PROPOSALS"]] == [
        "scene.box.tif",
        "scene.grabcut.tif",
    ]
    assert all(QgsRasterLayer(p, "p").isValid() for p in results["PROPOSALS"])


def test_evaluate_returns_the_scores(fake, tmp_path):
    results = processing.run(
        "jmlgeo:evaluate",
        {
            "PREDICTION": str(SCENE),
            "TRUTH": str(TRUTH),
            "CLASS_FIELD": "class",
            "OUTPUT": str(tmp_path / "report.json"),
        },
    )
    assert results["MIOU"] == 70.0 and results["PIXEL_ACCURACY"] == 91.5
    assert (tmp_path / "report.json").is_file()
    argv = read_record(fake.record)["argv"]
    assert argv[argv.index("--truth") + 1] == str(TRUTH)


def test_the_child_gets_a_clean_environment(fake, bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/usr/share/qgis/python")
    monkeypatch.setenv("GDAL_DATA", "/usr/share/gdal")
    monkeypatch.setenv("QGIS_PREFIX_PATH", "/usr")
    run_predict(bundle, tmp_path / "out")
    env = read_record(fake.record)["env"]
    assert not {"PYTHONPATH", "GDAL_DATA", "QGIS_PREFIX_PATH"} & set(env)
    assert not [k for k in env if k.startswith("QGIS_")]  # pytest-qgis sets some for QGIS
