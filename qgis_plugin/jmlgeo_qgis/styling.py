"""Styles for what ``jmlgeo`` writes: class rasters by their palette, polygons by class name.

A class raster (prediction or proposal) is uint8: 0 background, 1..K classes, 255 nodata, with a
GDAL colour table and the names of ids 1..K in the metadata tag ``class_names`` (comma-separated).
``jmlgeo predict`` also writes ``<stem>.classes.qml`` next to it, a paletted style with labels.
"""

from __future__ import annotations

import os

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsFeatureRequest,
    QgsPalettedRasterRenderer,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterLayer,
    QgsRendererCategory,
    QgsSymbol,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QColor

CLASS_NAMES_TAG = "class_names"

# Used when a layer has no colour table to borrow from (the same first colours as jmlgeo's).
FALLBACK_COLOURS = [
    "#e69f00",
    "#56b4e9",
    "#009e73",
    "#f0e442",
    "#0072b2",
    "#d55e00",
    "#cc79a7",
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
]


def class_names(path: str) -> list[str]:
    """Names of class ids 1..K from a class raster's ``class_names`` tag ([] when absent)."""
    try:
        from osgeo import gdal  # QGIS's own GDAL; the plugin never loads jmlgeo's
    except ImportError:
        return []
    ds = gdal.Open(path)
    tag = ds.GetMetadataItem(CLASS_NAMES_TAG) if ds is not None else None
    return [name.strip() for name in tag.split(",")] if tag else []


def palette(path: str) -> dict[int, QColor]:
    """Class id -> colour from a raster's colour table ({} when it has none)."""
    layer = QgsRasterLayer(path, "palette", "gdal")
    if not layer.isValid():
        return {}
    return {int(item.value): QColor(item.color) for item in layer.dataProvider().colorTable(1)}


def style_class_raster(layer: QgsRasterLayer, style: str | None = None) -> bool:
    """Show a class raster with its classes' colours and names.

    Uses ``style`` (a ``.qml``), else the ``.qml`` next to the raster, else a paletted renderer
    from the raster's colour table labelled from its ``class_names`` tag.

    Returns:
        Whether a style was applied.
    """
    source = layer.source().split("|")[0]
    candidates = [style] if style else []
    candidates.append(os.path.splitext(source)[0] + ".qml")
    for qml in candidates:
        if qml and os.path.isfile(qml):
            _, ok = layer.loadNamedStyle(qml)
            if ok:
                layer.triggerRepaint()
                return True
    provider = layer.dataProvider()
    classes = QgsPalettedRasterRenderer.colorTableToClassData(provider.colorTable(1))
    if not classes:
        return False
    names = ["background", *class_names(source)]
    if len(names) > 1:  # GeoTIFF palettes have 256 entries: keep those of the classes
        classes = [c for c in classes if 0 <= c.value < len(names)]
        for entry in classes:
            entry.label = names[int(entry.value)]
    layer.setRenderer(QgsPalettedRasterRenderer(provider, 1, classes))
    layer.triggerRepaint()
    return True


#: Opacity of the polygons' fill (0-255): enough to see the class, little enough to see the raster.
FILL_ALPHA = 60

#: Outline width of the polygons, millimetres.
OUTLINE_WIDTH = 0.6


def outline_symbol(layer: QgsVectorLayer, colour: QColor) -> QgsSymbol:
    """A class's symbol: an outline in its colour over a light fill of the same colour."""
    symbol = QgsSymbol.defaultSymbol(layer.geometryType())
    symbol.setColor(colour)
    fill = QColor(colour)
    fill.setAlpha(FILL_ALPHA)
    for index in range(symbol.symbolLayerCount()):
        part = symbol.symbolLayer(index)
        if hasattr(part, "setStrokeColor"):
            part.setFillColor(fill)
            part.setStrokeColor(colour)
            part.setStrokeWidth(OUTLINE_WIDTH)
    return symbol


def style_polygons(layer: QgsVectorLayer, class_raster: str | None = None) -> bool:
    """A categorized renderer on ``class_name``, coloured like the class raster's palette.

    Each class is an outline over a light fill (:func:`outline_symbol`): the polygons sit over
    the raster they come from without hiding it.

    Args:
        layer: Polygons with ``class_id`` and ``class_name`` (as ``jmlgeo predict`` writes them).
        class_raster: The class raster the polygons come from, for its colours and its full list
            of classes (so the legend shows classes with no polygon too).

    Returns:
        Whether the layer had the fields and got the renderer.
    """
    fields = layer.fields()
    if fields.indexOf("class_name") < 0:
        return False
    has_id = fields.indexOf("class_id") >= 0
    classes: dict[str, int | None] = {}  # name -> id
    if class_raster:
        for class_id, name in enumerate(class_names(class_raster), start=1):
            classes[name] = class_id
    request = QgsFeatureRequest().setFlags(QgsFeatureRequest.NoGeometry)
    request.setSubsetOfAttributes(["class_name", "class_id"] if has_id else ["class_name"], fields)
    for feature in layer.getFeatures(request):
        name = feature["class_name"]
        if name is None or name in classes:
            continue
        class_id = feature["class_id"] if has_id else None
        classes[str(name)] = int(class_id) if isinstance(class_id, int) else None
    colours = palette(class_raster) if class_raster else {}
    ordered = sorted(classes.items(), key=lambda item: (item[1] is None, item[1] or 0, item[0]))
    categories = []
    for i, (name, class_id) in enumerate(ordered):
        colour = colours.get(class_id) if class_id is not None else None
        if colour is None:
            colour = QColor(FALLBACK_COLOURS[i % len(FALLBACK_COLOURS)])
        categories.append(QgsRendererCategory(name, outline_symbol(layer, colour), name))
    layer.setRenderer(QgsCategorizedSymbolRenderer("class_name", categories))
    layer.triggerRepaint()
    return True


class StylePostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Styles a layer once Processing has loaded it into the project (on the main thread)."""

    # QGIS does not own post-processors: keep them alive until they have run.
    _alive: list[StylePostProcessor] = []

    def __init__(self, apply) -> None:
        super().__init__()
        self._apply = apply

    @classmethod
    def create(cls, apply) -> StylePostProcessor:
        """A post-processor calling ``apply(layer)``, kept alive for QGIS."""
        processor = cls(apply)
        cls._alive.append(processor)
        return processor

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 - QGIS API
        """Apply the style to the loaded layer."""
        self._apply(layer)
