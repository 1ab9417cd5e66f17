"""What the plugin remembers: the runs folder, the last bundle and scene, and its own layers.

The executable and the runs folder are Processing settings (Settings > Options > Processing >
Providers > JMLNet); the last bundle and scene live in QGIS's settings under ``jmlgeo/``. Layers
the plugin loads carry the custom property ``jmlgeo/output`` (their kind), so that dialogs do not
offer a prediction's polygons as boxes to train on.
"""

from __future__ import annotations

import os

from qgis.core import QgsMapLayer, QgsProject, QgsRasterLayer, QgsSettings

from .provider import RUNS_FOLDER_SETTING
from .runs import DEFAULT_RUNS_FOLDER, PROJECT_RUNS_FOLDER

LAST_BUNDLE_KEY = "jmlgeo/last_bundle"
LAST_SCENE_KEY = "jmlgeo/last_scene"
OUTPUT_PROPERTY = "jmlgeo/output"

#: File name endings of what jmlgeo writes (for layers loaded by hand, without the property).
OUTPUT_SUFFIXES = (
    ".classes.tif",
    ".probabilities.tif",
    ".polygons.gpkg",
    ".box.tif",
    ".crf.tif",
    ".grabcut.tif",
    ".detcam.tif",
    ".camcut.tif",
)


def _processing_setting(name: str) -> str | None:
    try:
        from processing.core.ProcessingConfig import ProcessingConfig
    except ImportError:
        return None
    value = ProcessingConfig.getSetting(name)
    return str(value).strip() if value else None


def runs_folder(project: QgsProject | None = None) -> str:
    """The runs folder: the setting, else ``jmlgeo-runs`` beside the saved project, else home.

    Not created here (a dialog only shows it); :func:`.runs.resolve_run_folder` creates it.
    """
    configured = _processing_setting(RUNS_FOLDER_SETTING)
    if configured:
        return os.path.expanduser(configured)
    project = project or QgsProject.instance()
    if project is not None and project.fileName():
        home = project.homePath() or os.path.dirname(project.absoluteFilePath())
        if home:
            return os.path.join(home, PROJECT_RUNS_FOLDER)
    return os.path.expanduser(DEFAULT_RUNS_FOLDER)


def last_bundle() -> str | None:
    """The bundle of the last Predict (or Train), when the file is still there."""
    value = QgsSettings().value(LAST_BUNDLE_KEY, "")
    return str(value) if value and os.path.isfile(str(value)) else None


def remember_bundle(path: str) -> None:
    """Offer ``path`` as the bundle the next time Predict opens."""
    QgsSettings().setValue(LAST_BUNDLE_KEY, os.path.abspath(path))


def remember_scene(path: str) -> None:
    """The scene of the last Predict, preselected when the active layer is not a raster."""
    QgsSettings().setValue(LAST_SCENE_KEY, os.path.abspath(path))


def last_scene() -> str | None:
    """The file of the last predicted scene, or None."""
    value = QgsSettings().value(LAST_SCENE_KEY, "")
    return str(value) if value else None


def layer_file(layer: QgsMapLayer) -> str:
    """The file behind a layer (its source without ``|layername=...`` and the like)."""
    return layer.source().split("|")[0]


def mark_output(layer: QgsMapLayer, kind: str) -> None:
    """Tag a layer the plugin loaded as one of jmlgeo's outputs."""
    layer.setCustomProperty(OUTPUT_PROPERTY, kind)


def is_output(layer: QgsMapLayer) -> bool:
    """Whether a layer is one of jmlgeo's outputs (tagged, or named like one)."""
    if layer.customProperty(OUTPUT_PROPERTY):
        return True
    return layer_file(layer).lower().endswith(OUTPUT_SUFFIXES)


def project_layers(project: QgsProject | None = None) -> list[QgsMapLayer]:
    """The project's layers in the order of the layer panel, top first."""
    project = project or QgsProject.instance()
    return [node.layer() for node in project.layerTreeRoot().findLayers() if node.layer()]


def scene_layer(active: QgsMapLayer | None, project: QgsProject | None = None):
    """The raster to offer as a scene: the active one, the last used, else the topmost.

    Rasters that jmlgeo wrote (class rasters, proposals) are offered only when active.
    """
    if isinstance(active, QgsRasterLayer):
        return active
    rasters = [
        layer
        for layer in project_layers(project)
        if isinstance(layer, QgsRasterLayer) and not is_output(layer)
    ]
    last = last_scene()
    if last:
        for layer in rasters:
            if os.path.abspath(layer_file(layer)) == last:
                return layer
    return rasters[0] if rasters else None
