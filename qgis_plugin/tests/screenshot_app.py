"""QGIS with the plugin and a prediction on the map, saved as a PNG (run by test_screenshot.py).

Usage: ``python3 screenshot_app.py OUT.png FAKE_JMLGEO SCENE`` with ``DISPLAY`` set (Xvfb).
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer

out, fake, scene = sys.argv[1:4]
app = QgsApplication([], True)
app.initQgis()
sys.path.insert(0, "/usr/share/qgis/python/plugins")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import processing  # noqa: E402
from processing.core.Processing import Processing  # noqa: E402
from qgis.core import QgsLayerTreeModel  # noqa: E402
from qgis.gui import QgsLayerTreeMapCanvasBridge, QgsLayerTreeView, QgsMapCanvas  # noqa: E402
from qgis.PyQt.QtWidgets import QMainWindow, QSplitter  # noqa: E402

Processing.initialize()
import jmlgeo_qgis  # noqa: E402

plugin = jmlgeo_qgis.classFactory(None)
plugin.initProcessing()  # the plugin's provider, as QGIS registers it
from processing.core.ProcessingConfig import ProcessingConfig  # noqa: E402

ProcessingConfig.settings["JMLGEO_EXECUTABLE"].value = fake
folder = tempfile.mkdtemp(prefix="jmlgeo-shot-")
bundle = Path(folder) / "train-scene-demo" / "model.safetensors"
bundle.parent.mkdir()
bundle.write_bytes(b"fake")
project = QgsProject.instance()
project.addMapLayer(QgsRasterLayer(scene, "scene"))
processing.runAndLoadResults(
    "jmlgeo:predict",
    {"INPUT": scene, "BUNDLE": str(bundle), "POLYGONS": True, "OUTPUT_FOLDER": folder},
)
window = QMainWindow()
split = QSplitter()
view = QgsLayerTreeView()
model = QgsLayerTreeModel(project.layerTreeRoot(), window)  # kept: the view does not own it
view.setModel(model)
canvas = QgsMapCanvas()
QgsLayerTreeMapCanvasBridge(project.layerTreeRoot(), canvas)
split.addWidget(view)
split.addWidget(canvas)
window.setCentralWidget(split)
window.setWindowTitle("QGIS: JMLNet (jmlgeo) prediction")
window.resize(1000, 640)
window.show()
classes = next(layer for layer in project.mapLayers().values() if "classes" in layer.name())
extent = classes.extent()
extent.scale(2.5)  # the fake's prediction covers a corner: show it and the scene around it
canvas.setExtent(extent)
deadline = 0
while deadline < 60:  # let the canvas render
    app.processEvents()
    subprocess.run(["sleep", "0.1"], check=False)
    deadline += 1
view.expandAll()
app.processEvents()
if subprocess.run(["import", "-window", "root", out], check=False).returncode != 0:
    window.grab().save(out)
print(f"layers: {[layer.name() for layer in project.mapLayers().values()]}")
os._exit(0 if Path(out).is_file() else 1)
