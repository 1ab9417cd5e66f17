"""Parameter helpers shared by the algorithms: layers to files, outputs to layers, choices."""

from __future__ import annotations

import os

from qgis.core import (
    QgsMapLayer,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputLayerDefinition,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingUtils,
    QgsProviderRegistry,
)
from qgis.PyQt.QtCore import QCoreApplication

from .settings import mark_output
from .styling import StylePostProcessor

DEVICES = ["auto", "cpu", "cuda"]
#: ``jmlgeo predict --tta`` values (none; flips: logits averaged over 3 flips, 4x the time).
TTA_MODES = ["none", "flips"]
PRESETS = ["fast", "paper"]
LOSSES = ["ce", "ma", "mm", "bmm"]
METHODS = ["box", "crf", "grabcut"]
VECTOR_FORMATS = ["gpkg", "geojson", "shp", "fgb"]


def tr(text: str) -> str:
    """Translate a user-facing string."""
    return QCoreApplication.translate("jmlgeo", text)


def raster_path(layer: QgsMapLayer | None, what: str) -> str:
    """The file behind a raster layer (jmlgeo reads files, not QGIS layers)."""
    if layer is None:
        raise QgsProcessingException(tr(f"{what}: choose a raster layer"))
    source = layer.source()
    path = source
    if layer.providerType() == "gdal":
        path = QgsProviderRegistry.instance().decodeUri("gdal", source).get("path") or source
    if layer.providerType() != "gdal" or not os.path.isfile(path):
        raise QgsProcessingException(
            tr(
                f"{what}: layer '{layer.name()}' is not a raster file ({source}); jmlgeo reads "
                "files, so save it as a GeoTIFF first (Export > Save As...)"
            )
        )
    return path


def vector_path(
    algorithm: QgsProcessingAlgorithm,
    parameters: dict,
    name: str,
    context: QgsProcessingContext,
    feedback: QgsProcessingFeedback,
) -> str:
    """A file for a vector parameter: the layer's own file, or a temporary GeoPackage copy.

    Layers that are not plain single-layer files (memory layers, database tables, filtered or
    selected features, GeoPackages with several layers) are exported first.
    """
    path = algorithm.parameterAsCompatibleSourceLayerPath(
        parameters, name, context, VECTOR_FORMATS, "gpkg", feedback
    )
    if not path:
        raise QgsProcessingException(tr(f"{name}: choose a vector layer"))
    return path.split("|")[0]


def load_on_completion(
    context: QgsProcessingContext,
    path: str,
    name: str,
    output_name: str,
    hint: QgsProcessingUtils.LayerHint,
    style=None,
    kind: str = "output",
) -> None:
    """Have Processing add ``path`` to the project when the algorithm finishes, then style it.

    Processing loads these layers when the algorithm runs from its dialog, the batch dialog or
    ``processing.runAndLoadResults``; ``processing.run`` leaves the project alone. The layer is
    tagged as jmlgeo's ``kind`` of output (see :func:`.settings.is_output`).
    """
    details = QgsProcessingContext.LayerDetails(name, context.project(), output_name, hint)
    details.forceName = True

    def apply(layer) -> None:
        mark_output(layer, kind)
        if style is not None:
            style(layer)

    details.setPostProcessor(StylePostProcessor.create(apply))
    context.addLayerToLoadOnCompletion(path, details)


def folder_value(parameters: dict, name: str) -> object:
    """The raw value of a folder destination (a path, ``TEMPORARY_OUTPUT``, or None)."""
    value = parameters.get(name)
    if isinstance(value, QgsProcessingOutputLayerDefinition):
        value = value.sink.staticValue()
    return value


def stem(path: str) -> str:
    """A jmlgeo output's name without its kind and extension (``scene`` for scene.classes.tif)."""
    name = os.path.basename(path)
    for suffix in (".classes.tif", ".polygons.gpkg", ".probabilities.tif", ".tif"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return os.path.splitext(name)[0]


def add_boxes_parameters(algorithm: QgsProcessingAlgorithm) -> None:
    """Scenes, boxes and class field: the inputs of Train and Proposals."""
    algorithm.addParameter(
        QgsProcessingParameterMultipleLayers(
            "SCENES", algorithm.tr("Scenes"), QgsProcessing.TypeRaster
        )
    )
    algorithm.addParameter(
        QgsProcessingParameterFeatureSource(
            "BOXES",
            algorithm.tr("Boxes (polygon layer, one rectangle per object)"),
            [QgsProcessing.TypeVectorPolygon],
        )
    )
    algorithm.addParameter(
        QgsProcessingParameterField(
            "CLASS_FIELD",
            algorithm.tr("Class field (default: class)"),
            "class",
            "BOXES",
            optional=True,
        )
    )
