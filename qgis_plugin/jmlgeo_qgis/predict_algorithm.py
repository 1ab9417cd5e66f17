"""Predict: a bundle and a raster layer to a class raster, polygons and probabilities."""

from __future__ import annotations

import os

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputFile,
    QgsProcessingOutputRasterLayer,
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingUtils,
)

from . import runner
from .algorithm_base import JmlGeoAlgorithm
from .executable import bundle_summary
from .parameters import (
    DEVICES,
    TTA_MODES,
    load_on_completion,
    raster_path,
    stem,
    tr,
)
from .runs import bundle_name
from .settings import last_bundle, remember_bundle, remember_scene
from .styling import style_class_raster, style_polygons


class PredictAlgorithm(JmlGeoAlgorithm):
    """Bundle + raster layer -> class raster (+ polygons, probabilities)."""

    def name(self) -> str:
        """Algorithm id: ``jmlgeo:predict``."""
        return "predict"

    def displayName(self) -> str:  # noqa: N802 - QGIS API
        """Name in the toolbox."""
        return self.tr("Predict")

    def shortHelpString(self) -> str:  # noqa: N802 - QGIS API
        """Help in the dialog."""
        return self.tr(
            "Classifies a raster with a model bundle trained by <i>Train from boxes</i> "
            "(<code>jmlgeo predict</code>). Writes a class raster (0 background, 1..K classes, "
            "colour table and class names) with its QGIS style, optionally polygons (class id, "
            "class name, area) and per-class probabilities, into the output folder, and adds "
            "them to the project. Scenes of any size are processed in overlapping windows."
        )

    def initAlgorithm(self, config=None):  # noqa: N802 - QGIS API
        """Parameters and outputs."""
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", self.tr("Scene")))
        self.addParameter(
            QgsProcessingParameterFile(
                "BUNDLE",
                self.tr("Model bundle (model.safetensors)"),
                fileFilter="Model bundles (*.safetensors);;All files (*.*)",
                defaultValue=last_bundle(),
            )
        )
        self.addParameter(
            QgsProcessingParameterBoolean("POLYGONS", self.tr("Also write polygons"), True)
        )
        self.addParameter(
            QgsProcessingParameterBoolean(
                "PROBABILITIES", self.tr("Also write class probabilities"), False
            )
        )
        self.add_advanced(
            QgsProcessingParameterNumber(
                "WINDOW",
                self.tr("Inference window, px (default: planned per scene, 1024 on CPU)"),
                minValue=32,
                optional=True,
            )
        )
        self.add_advanced(
            QgsProcessingParameterNumber(
                "OVERLAP",
                self.tr("Window overlap, px (default: one receptive field, at most window / 4)"),
                minValue=0,
                optional=True,
            )
        )
        self.add_advanced(
            QgsProcessingParameterNumber(
                "BATCH_SIZE", self.tr("Batch size"), minValue=1, optional=True
            )
        )
        self.add_advanced(
            QgsProcessingParameterEnum(
                "TTA",
                self.tr("Test-time augmentation (flips: 4x the time)"),
                TTA_MODES,
                defaultValue="none",
                usesStaticStrings=True,
            )
        )
        self.add_advanced(
            QgsProcessingParameterEnum(
                "DEVICE", self.tr("Device"), DEVICES, defaultValue="auto", usesStaticStrings=True
            )
        )
        self.add_advanced(
            QgsProcessingParameterNumber(
                "MIN_AREA",
                self.tr("Polygons: drop smaller than (map units²)"),
                QgsProcessingParameterNumber.Double,
                minValue=0,
                optional=True,
            )
        )
        self.add_advanced(
            QgsProcessingParameterNumber(
                "SIMPLIFY",
                self.tr("Polygons: simplify tolerance (map units)"),
                QgsProcessingParameterNumber.Double,
                minValue=0,
                optional=True,
            )
        )
        self.add_run_folder("OUTPUT_FOLDER", "Output folder")
        self.addOutput(QgsProcessingOutputRasterLayer("OUTPUT", self.tr("Classes")))
        self.addOutput(
            QgsProcessingOutputVectorLayer(
                "OUTPUT_POLYGONS", self.tr("Polygons"), QgsProcessing.TypeVectorPolygon
            )
        )
        self.addOutput(
            QgsProcessingOutputRasterLayer("OUTPUT_PROBABILITIES", self.tr("Probabilities"))
        )
        self.addOutput(QgsProcessingOutputFile("OUTPUT_STYLE", self.tr("QGIS style")))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS API
        """Run ``jmlgeo predict`` and load its outputs."""
        scene = raster_path(self.parameterAsRasterLayer(parameters, "INPUT", context), "INPUT")
        bundle = self.parameterAsFile(parameters, "BUNDLE", context)
        if not bundle or not os.path.isfile(bundle):
            raise QgsProcessingException(self.tr(f"BUNDLE: no bundle file at '{bundle}'"))
        out = self.run_folder(parameters, "OUTPUT_FOLDER", context, "predict", [scene])
        tta = self.parameterAsEnumString(parameters, "TTA", context)
        args = runner.predict_args(
            bundle,
            [scene],
            out,
            polygons=self.parameterAsBool(parameters, "POLYGONS", context),
            probabilities=self.parameterAsBool(parameters, "PROBABILITIES", context),
            window=self.optional_int(parameters, "WINDOW", context),
            overlap=self.optional_int(parameters, "OVERLAP", context),
            batch_size=self.optional_int(parameters, "BATCH_SIZE", context),
            tta=None if tta in ("", "none") else tta,
            device=self.parameterAsEnumString(parameters, "DEVICE", context) or None,
            min_area=self.optional_double(parameters, "MIN_AREA", context),
            simplify=self.optional_double(parameters, "SIMPLIFY", context),
        )
        feedback.pushInfo(bundle_summary(self.executable(), bundle))
        result = self.run_jmlgeo(args, feedback)
        outputs = load_prediction(context, result, bundle)
        remember_bundle(bundle)
        remember_scene(scene)
        return {**outputs, "OUTPUT_FOLDER": out}


def load_prediction(context, result: runner.RunResult, bundle: str) -> dict:
    """Have Processing load what ``jmlgeo predict`` announced, styled and named for the bundle.

    Polygons come as class-coloured outlines over a light fill, so the raster shows through.

    Returns:
        The Predict algorithm's outputs (without the folder).
    """
    classes = result.path("classes")
    if classes is None:
        raise QgsProcessingException(tr("jmlgeo predict announced no class raster"))
    style = result.path("style")
    polygons = result.path("polygons")
    probabilities = result.path("probabilities")
    name, model = stem(classes), bundle_name(bundle)
    raster, vector = QgsProcessingUtils.LayerHint.Raster, QgsProcessingUtils.LayerHint.Vector
    load_on_completion(
        context,
        classes,
        f"{name} classes ({model})",
        "OUTPUT",
        raster,
        lambda layer: style_class_raster(layer, style),
        kind="classes",
    )
    if polygons:
        load_on_completion(
            context,
            polygons,
            f"{name} polygons ({model})",
            "OUTPUT_POLYGONS",
            vector,
            lambda layer: style_polygons(layer, classes),
            kind="polygons",
        )
    if probabilities:
        load_on_completion(
            context,
            probabilities,
            f"{name} probabilities ({model})",
            "OUTPUT_PROBABILITIES",
            raster,
            kind="probabilities",
        )
    return {
        "OUTPUT": classes,
        "OUTPUT_POLYGONS": polygons,
        "OUTPUT_PROBABILITIES": probabilities,
        "OUTPUT_STYLE": style,
    }
