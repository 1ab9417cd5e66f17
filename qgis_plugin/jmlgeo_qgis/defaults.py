"""What the Train and Proposals dialogs open with: the scenes and boxes the user most likely means.

Scenes: the raster layers selected in the layer panel, else the active raster, else the topmost.
Boxes: a polygon layer that is not one of jmlgeo's outputs (a prediction's polygons are never
offered), the selected or active one first, then one with a ``class`` field, then the topmost.
"""

from __future__ import annotations

from qgis.core import QgsMapLayer, QgsRasterLayer, QgsVectorLayer, QgsWkbTypes

from .settings import is_output, project_layers, scene_layer

CLASS_FIELD = "class"


def _selected(iface) -> list[QgsMapLayer]:
    try:
        view = iface.layerTreeView()
        layers = view.selectedLayers() if view is not None else []
        return [layer for layer in layers if isinstance(layer, QgsMapLayer)]
    except (AttributeError, RuntimeError, TypeError):
        return []


def is_box_layer(layer: QgsMapLayer | None) -> bool:
    """A polygon layer that jmlgeo did not write."""
    return (
        isinstance(layer, QgsVectorLayer)
        and layer.geometryType() == QgsWkbTypes.PolygonGeometry
        and not is_output(layer)
    )


def box_layer(candidates: list[QgsMapLayer]) -> QgsVectorLayer | None:
    """The likeliest box layer among ``candidates`` (in preference order)."""
    boxes = [layer for layer in candidates if is_box_layer(layer)]
    with_class = [layer for layer in boxes if layer.fields().indexOf(CLASS_FIELD) >= 0]
    return (with_class or boxes or [None])[0]


def train_defaults(iface) -> dict:
    """Presets for the Train (and Proposals) dialog from the project and the layer panel."""
    selected = _selected(iface)
    active = iface.activeLayer()
    rasters = [layer for layer in selected if isinstance(layer, QgsRasterLayer)]
    if not rasters:
        scene = scene_layer(active)
        rasters = [scene] if scene is not None else []
    parameters: dict = {}
    if rasters:
        parameters["SCENES"] = rasters
    chosen = [layer for layer in [*selected, active] if is_box_layer(layer)]
    boxes = chosen[0] if chosen else box_layer(project_layers())
    if boxes is not None:
        parameters["BOXES"] = boxes
        if boxes.fields().indexOf(CLASS_FIELD) >= 0:
            parameters["CLASS_FIELD"] = CLASS_FIELD
    return parameters
