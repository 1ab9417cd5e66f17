# ruff: noqa: D103, E402 - tests; QGIS imports follow the skip when QGIS is missing
"""Audit boxes in QGIS with the fake jmlgeo: parameters, command line, styled layers."""

from __future__ import annotations

import pytest
from helpers import NO_QGIS

pytest.importorskip("qgis.core", reason=NO_QGIS)

import processing
from helpers import BOXES, SCENE, read_record
from qgis.core import (
    QgsApplication,
    QgsGraduatedSymbolRenderer,
    QgsProject,
    QgsVectorLayer,
)


def test_parameters(plugin):
    algorithm = QgsApplication.processingRegistry().algorithmById("jmlgeo:audit")
    assert algorithm is not None and algorithm.displayName() == "Audit boxes"
    names = {p.name() for p in algorithm.parameterDefinitions()}
    assert names == {"SCENES", "BOXES", "CLASS_FIELD", "MODEL", "RUN", "PROPOSALS", "MIN_PIXELS",
                     "MIN_SCORE", "DEVICE", "WORKERS", "OUTPUT"}  # fmt: skip
    assert {o.name() for o in algorithm.outputDefinitions()} >= {"BOXES", "MISSING", "OUTPUT"}


def test_command_line_without_a_model(fake, tmp_path):
    out = tmp_path / "audit.gpkg"
    results = processing.run(
        "jmlgeo:audit",
        {"SCENES": [str(SCENE)], "BOXES": str(BOXES), "PROPOSALS": ["grabcut"], "WORKERS": 1,
         "OUTPUT": str(out)},
    )  # fmt: skip
    argv = read_record(fake.record)["argv"]
    assert argv[:4] == ["audit", str(SCENE), "--boxes", str(BOXES)]
    assert argv[4:8] == ["--class-field", "class", "--out", str(out)]
    assert argv[8:] == ["--proposals", "grabcut", "--device", "auto", "--workers", "1",
                        "--progress", "json"]  # fmt: skip
    assert results["OUTPUT"] == str(out) and results["MISSING"] is None
    boxes = QgsVectorLayer(results["BOXES"], "boxes")
    assert boxes.isValid() and boxes.featureCount() == 1


def test_with_a_model_loads_both_layers_styled(fake, tmp_path, project):
    bundle = tmp_path / "model.safetensors"
    bundle.write_bytes(b"not read by the fake")
    run = tmp_path / "run"
    run.mkdir()
    processing.runAndLoadResults(
        "jmlgeo:audit",
        {"SCENES": [str(SCENE)], "BOXES": str(BOXES), "MODEL": str(bundle), "RUN": str(run),
         "MIN_SCORE": 0.7, "OUTPUT": str(tmp_path / "audit.gpkg")},
    )  # fmt: skip
    argv = read_record(fake.record)["argv"]
    assert argv[argv.index("--min-score") + 1] == "0.7"
    assert argv[argv.index("--model") + 1] == str(bundle)
    assert argv[argv.index("--run") + 1] == str(run)
    layers = {layer.name(): layer for layer in QgsProject.instance().mapLayers().values()}
    assert set(layers) == {"audit boxes", "audit missing"}
    renderer = layers["audit boxes"].renderer()
    assert isinstance(renderer, QgsGraduatedSymbolRenderer) and renderer.classAttribute() == "doubt"
    assert layers["audit boxes"].labelsEnabled()
    assert layers["audit missing"].labelsEnabled()


@pytest.mark.slow
def test_with_the_real_jmlgeo_the_boxes_layer_is_styled(use_executable, real_jmlgeo, tmp_path,
                                                       project):  # fmt: skip
    use_executable(real_jmlgeo)
    results = processing.runAndLoadResults(
        "jmlgeo:audit",
        {"SCENES": [str(SCENE)], "BOXES": str(BOXES), "PROPOSALS": ["grabcut"], "WORKERS": 1,
         "OUTPUT": str(tmp_path / "audit.gpkg")},
    )  # fmt: skip
    boxes = QgsVectorLayer(results["BOXES"], "boxes")
    assert boxes.isValid()
    assert boxes.featureCount() == QgsVectorLayer(str(BOXES), "input").featureCount()
    doubts = [f["doubt"] for f in boxes.getFeatures()]
    assert doubts == sorted(doubts, reverse=True) and all(0 <= d <= 1 for d in doubts)
    (loaded,) = QgsProject.instance().mapLayers().values()
    assert isinstance(loaded.renderer(), QgsGraduatedSymbolRenderer) and loaded.labelsEnabled()
