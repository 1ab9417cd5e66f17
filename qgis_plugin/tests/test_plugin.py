# ruff: noqa: D103, E402 - tests; QGIS imports follow the skip when QGIS is missing
"""The plugin in QGIS: it loads, registers its provider and algorithms, adds its button."""

from __future__ import annotations

import pytest
from helpers import NO_QGIS

pytest.importorskip("qgis.core", reason=NO_QGIS)

import configparser
import importlib.util
import sys
import zipfile
from pathlib import Path

import processing
from helpers import ALGORITHMS, PLUGIN_DIR, SCENE, build_zip
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsVectorLayer


def qgis_installer_unzip():
    """QGIS's own unzip of "Install from ZIP" (pyplugin_installer/unzip.py)."""
    path = Path(QgsApplication.pkgDataPath()) / "python" / "pyplugin_installer" / "unzip.py"
    spec = importlib.util.spec_from_file_location("qgis_installer_unzip", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.unzip


def test_plugin_loads_and_registers_its_provider(plugin):
    import qgis.utils

    assert "jmlgeo_qgis" in qgis.utils.active_plugins
    assert type(plugin).__name__ == "JmlGeoPlugin"
    provider = QgsApplication.processingRegistry().providerById("jmlgeo")
    assert provider is not None and provider.isActive()
    assert provider.name() == "JMLNet (jmlgeo)" and not provider.icon().isNull()


def test_provider_lists_its_algorithms(plugin):
    provider = QgsApplication.processingRegistry().providerById("jmlgeo")
    algorithms = {a.id(): a for a in provider.algorithms()}
    assert set(algorithms) == ALGORITHMS
    names = {a.displayName() for a in algorithms.values()}
    assert names == {"Predict", "Train from boxes", "Proposals", "Evaluate", "Audit boxes"}
    predict = algorithms["jmlgeo:predict"]
    params = {p.name() for p in predict.parameterDefinitions()}
    assert {"INPUT", "BUNDLE", "POLYGONS", "OUTPUT_FOLDER", "DEVICE"} <= params
    assert {"OUTPUT", "OUTPUT_POLYGONS"} <= {o.name() for o in predict.outputDefinitions()}
    assert all(a.shortHelpString() for a in algorithms.values())


def test_metadata_is_what_qgis_reads(plugin):
    import qgis.utils

    assert qgis.utils.pluginMetadata("jmlgeo_qgis", "qgisMinimumVersion") == "3.22"
    assert qgis.utils.pluginMetadata("jmlgeo_qgis", "hasProcessingProvider") == "yes"
    assert (PLUGIN_DIR / "jmlgeo_qgis" / "icon.svg").is_file()


def test_the_plugin_never_imports_torch_or_jmlnet_geo(plugin):
    heavy = [m for m in sys.modules if m.split(".")[0] in {"torch", "jmlnet_geo", "rasterio"}]
    assert heavy == []


def test_button_opens_predict_with_the_active_raster_layer(
    plugin, qgis_iface, project, monkeypatch
):
    opened = []
    monkeypatch.setattr(processing, "execAlgorithmDialog", lambda *a: opened.append(a))
    scene = QgsRasterLayer(str(SCENE), "scene")
    vector = QgsVectorLayer("Point?crs=EPSG:4326", "points", "memory")
    QgsProject.instance().addMapLayers([scene, vector])

    qgis_iface.setActiveLayer(scene)
    plugin.predict_action.trigger()
    assert opened[-1][0] == "jmlgeo:predict" and opened[-1][1]["INPUT"] is scene

    qgis_iface.setActiveLayer(vector)  # not a raster: the topmost raster (issue 21)
    plugin.predict_action.trigger()
    assert opened[-1][0] == "jmlgeo:predict" and opened[-1][1]["INPUT"] is scene

    menu = {a.objectName() for a in plugin.actions}
    assert {"jmlgeoPredict", "jmlgeoTrain", "jmlgeoProposals", "jmlgeoEvaluate"} <= menu
    next(a for a in plugin.actions if a.objectName() == "jmlgeoTrain").trigger()
    assert opened[-1] == ("jmlgeo:train", {"SCENES": [scene]})  # points are no box layer

    next(a for a in plugin.actions if a.objectName() == "jmlgeoSettings").trigger()
    options = qgis_iface.showOptionsDialog  # a MagicMock in pytest-qgis's interface
    assert options.call_args.kwargs == {"currentPage": "processingOptions"}


def test_the_predict_dialog_takes_the_preselected_layer(plugin, project, qgis_iface, monkeypatch):
    monkeypatch.setattr(qgis_iface, "browserModel", lambda: None)  # the stub has none
    scene = QgsRasterLayer(str(SCENE), "scene")
    QgsProject.instance().addMapLayer(scene)
    dialog = processing.createAlgorithmDialog("jmlgeo:predict", {"INPUT": scene})
    try:
        wrapper = dialog.mainWidget().wrappers["INPUT"]
        assert wrapper.parameterValue() == scene.id()
    finally:
        dialog.deleteLater()


def test_the_zip_installs_like_qgis_install_from_zip(tmp_path):
    unzip = qgis_installer_unzip()
    archive = build_zip(tmp_path / "jmlgeo_qgis.zip")
    names = zipfile.ZipFile(archive).namelist()
    # QGIS takes the folder of the shortest metadata.txt as the plugin's name
    assert sorted(n for n in names if n.endswith("metadata.txt"))[0] == "jmlgeo_qgis/metadata.txt"
    assert all(n.startswith("jmlgeo_qgis/") for n in names)
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert build_zip(tmp_path / "again.zip").read_bytes() == archive.read_bytes()

    plugins = tmp_path / "plugins"
    unzip(str(archive), str(plugins))
    import qgis.utils

    found = dict(qgis.utils.findPlugins(str(plugins)))
    assert isinstance(found["jmlgeo_qgis"], configparser.ConfigParser)
    assert found["jmlgeo_qgis"].get("general", "name") == "JMLNet (jmlgeo)"
    installed = {p.relative_to(plugins / "jmlgeo_qgis").as_posix() for p in plugins.rglob("*.*")}
    assert {"__init__.py", "runner.py", "algorithms.py", "metadata.txt", "icon.svg"} <= installed
