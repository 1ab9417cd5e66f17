"""Processing algorithms: each builds a ``jmlgeo`` argument list, runs it, and loads the outputs.

Processing gives them background execution, batch mode, the graphical modeller and
``processing.run("jmlgeo:predict", {...})``. The work happens in the ``jmlgeo`` child process;
the algorithms only turn layers into file paths and the command's outputs back into layers.
"""

from __future__ import annotations

import os
import shlex

from qgis.core import (
    QgsMapLayer,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingOutputMultipleLayers,
    QgsProcessingOutputNumber,
    QgsProcessingOutputRasterLayer,
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMapLayer,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingUtils,
    QgsProviderRegistry,
)
from qgis.PyQt.QtCore import QCoreApplication

from . import runner
from .provider import configured_executable, icon
from .styling import StylePostProcessor, style_class_raster, style_polygons

DEVICES = ["auto", "cpu", "cuda"]
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
) -> None:
    """Have Processing add ``path`` to the project when the algorithm finishes, then style it.

    Processing loads these layers when the algorithm runs from its dialog, the batch dialog or
    ``processing.runAndLoadResults``; ``processing.run`` leaves the project alone.
    """
    details = QgsProcessingContext.LayerDetails(name, context.project(), output_name, hint)
    details.forceName = True
    if style is not None:
        details.setPostProcessor(StylePostProcessor.create(style))
    context.addLayerToLoadOnCompletion(path, details)


def _stem(path: str) -> str:
    name = os.path.basename(path)
    for suffix in (".classes.tif", ".polygons.gpkg", ".probabilities.tif", ".tif"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return os.path.splitext(name)[0]


class JmlGeoAlgorithm(QgsProcessingAlgorithm):
    """Shared parts: instance creation, icon, optional values and running ``jmlgeo``."""

    def createInstance(self):  # noqa: N802 - QGIS API
        """A fresh instance (Processing runs copies)."""
        return type(self)()

    def icon(self):
        """The plugin's icon."""
        return icon()

    def tr(self, text: str) -> str:
        """Translate a user-facing string."""
        return tr(text)

    def add_advanced(self, parameter: QgsProcessingParameterDefinition) -> None:
        """Add a parameter under "Advanced parameters"."""
        parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(parameter)

    def optional_int(self, parameters, name, context) -> int | None:
        """An optional integer parameter; None when not set."""
        if parameters.get(name) in (None, ""):
            return None
        return self.parameterAsInt(parameters, name, context)

    def optional_double(self, parameters, name, context) -> float | None:
        """An optional number parameter; None when not set."""
        if parameters.get(name) in (None, ""):
            return None
        return self.parameterAsDouble(parameters, name, context)

    def optional_enum(self, parameters, name, context) -> str | None:
        """An optional enum parameter (static strings); None when not set."""
        value = self.parameterAsEnumString(parameters, name, context)
        return value or None

    def scene_paths(self, parameters, name, context) -> list[str]:
        """Files of a multiple-raster parameter."""
        layers = self.parameterAsLayerList(parameters, name, context)
        if not layers:
            raise QgsProcessingException(self.tr(f"{name}: choose at least one raster layer"))
        return [raster_path(layer, name) for layer in layers]

    def run_jmlgeo(self, args: list[str], feedback: QgsProcessingFeedback) -> runner.RunResult:
        """Run ``jmlgeo args...`` with progress, log and cancel wired to ``feedback``."""
        feedback = feedback or QgsProcessingFeedback()
        try:
            executable = runner.find_executable(configured_executable())
        except runner.ExecutableNotFoundError as err:
            raise QgsProcessingException(str(err)) from err
        feedback.pushCommandInfo(" ".join(shlex.quote(a) for a in [executable, *args]))
        stage = [None]

        def progress(fraction: float, name: str) -> None:
            if name != stage[0]:
                stage[0] = name
                feedback.setProgressText(name)
            feedback.setProgress(100.0 * fraction)

        log = {
            "info": feedback.pushInfo,
            "warning": feedback.pushWarning,
            "console": feedback.pushConsoleInfo,
            "error": feedback.pushDebugInfo,  # the exception below carries it
        }
        try:
            return runner.run(
                executable,
                args,
                on_progress=progress,
                on_log=lambda text, level: log.get(level, feedback.pushInfo)(text),
                is_canceled=feedback.isCanceled,
            )
        except runner.CancelledError as err:
            raise QgsProcessingException(self.tr("Cancelled: jmlgeo was stopped.")) from err
        except runner.RunError as err:
            raise QgsProcessingException(str(err)) from err


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
                "TILE", self.tr("Window size (default: the bundle's)"), minValue=32, optional=True
            )
        )
        self.add_advanced(
            QgsProcessingParameterNumber(
                "OVERLAP", self.tr("Window overlap (default: a quarter)"), minValue=0, optional=True
            )
        )
        self.add_advanced(
            QgsProcessingParameterNumber(
                "BATCH_SIZE", self.tr("Batch size"), minValue=1, optional=True
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
        self.addParameter(
            QgsProcessingParameterFolderDestination(
                "OUTPUT_FOLDER", self.tr("Output folder"), QgsProcessing.TEMPORARY_OUTPUT
            )
        )
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
        out = self.parameterAsFileOutput(parameters, "OUTPUT_FOLDER", context)
        os.makedirs(out, exist_ok=True)
        args = runner.predict_args(
            bundle,
            [scene],
            out,
            polygons=self.parameterAsBool(parameters, "POLYGONS", context),
            probabilities=self.parameterAsBool(parameters, "PROBABILITIES", context),
            tile=self.optional_int(parameters, "TILE", context),
            overlap=self.optional_int(parameters, "OVERLAP", context),
            batch_size=self.optional_int(parameters, "BATCH_SIZE", context),
            device=self.parameterAsEnumString(parameters, "DEVICE", context) or None,
            min_area=self.optional_double(parameters, "MIN_AREA", context),
            simplify=self.optional_double(parameters, "SIMPLIFY", context),
        )
        result = self.run_jmlgeo(args, feedback)
        classes = result.path("classes")
        if classes is None:
            raise QgsProcessingException(self.tr("jmlgeo predict announced no class raster"))
        style = result.path("style")
        polygons = result.path("polygons")
        probabilities = result.path("probabilities")
        stem = _stem(classes)
        raster, vector = QgsProcessingUtils.LayerHint.Raster, QgsProcessingUtils.LayerHint.Vector
        load_on_completion(
            context,
            classes,
            f"{stem} classes",
            "OUTPUT",
            raster,
            lambda layer: style_class_raster(layer, style),
        )
        if polygons:
            load_on_completion(
                context,
                polygons,
                f"{stem} polygons",
                "OUTPUT_POLYGONS",
                vector,
                lambda layer: style_polygons(layer, classes),
            )
        if probabilities:
            load_on_completion(
                context, probabilities, f"{stem} probabilities", "OUTPUT_PROBABILITIES", raster
            )
        return {
            "OUTPUT": classes,
            "OUTPUT_POLYGONS": polygons,
            "OUTPUT_PROBABILITIES": probabilities,
            "OUTPUT_STYLE": style,
            "OUTPUT_FOLDER": out,
        }


def _add_boxes_parameters(algorithm: JmlGeoAlgorithm) -> None:
    algorithm.addParameter(
        QgsProcessingParameterMultipleLayers(
            "SCENES", algorithm.tr("Scenes"), QgsProcessing.TypeRaster
        )
    )
    algorithm.addParameter(
        QgsProcessingParameterFeatureSource(
            "BOXES", algorithm.tr("Boxes (one polygon per object)"), [QgsProcessing.TypeVector]
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


class TrainAlgorithm(JmlGeoAlgorithm):
    """Raster layers + box layer + class field -> model bundle."""

    def name(self) -> str:
        """Algorithm id: ``jmlgeo:train``."""
        return "train"

    def displayName(self) -> str:  # noqa: N802 - QGIS API
        """Name in the toolbox."""
        return self.tr("Train from boxes")

    def shortHelpString(self) -> str:  # noqa: N802 - QGIS API
        """Help in the dialog."""
        return self.tr(
            "Trains a segmenter from bounding boxes (<code>jmlgeo train</code>): proposals from "
            "the boxes, then two training stages with JMLNet's multi-label losses. The run folder "
            "keeps finished stages (resume an interrupted run with <i>Resume</i>); the result is "
            "a model bundle (model.safetensors) for <i>Predict</i>. The <i>fast</i> preset runs on "
            "a CPU; <i>paper</i> wants a GPU."
        )

    def initAlgorithm(self, config=None):  # noqa: N802 - QGIS API
        """Parameters and outputs."""
        _add_boxes_parameters(self)
        self.addParameter(
            QgsProcessingParameterEnum(
                "PRESET", self.tr("Preset"), PRESETS, defaultValue="fast", usesStaticStrings=True
            )
        )
        self.add_advanced(
            QgsProcessingParameterString(
                "PROPOSALS",
                self.tr("Stage-2 proposals, comma-separated (default: the preset's)"),
                optional=True,
            )
        )
        self.add_advanced(
            QgsProcessingParameterEnum(
                "LOSS",
                self.tr("Stage-2 loss (default: the preset's)"),
                LOSSES,
                optional=True,
                usesStaticStrings=True,
            )
        )
        for name, label in (
            ("STAGE1_STEPS", "Stage-1 steps"),
            ("STAGE2_STEPS", "Stage-2 steps"),
            ("BATCH_SIZE", "Batch size"),
            ("TILE_SIZE", "Tile size"),
        ):
            self.add_advanced(
                QgsProcessingParameterNumber(
                    name,
                    self.tr(f"{label} (default: the preset's)"),
                    minValue=32 if name == "TILE_SIZE" else 0,
                    optional=True,
                )
            )
        self.add_advanced(
            QgsProcessingParameterEnum(
                "DEVICE", self.tr("Device"), DEVICES, defaultValue="auto", usesStaticStrings=True
            )
        )
        self.add_advanced(
            QgsProcessingParameterNumber(
                "WORKERS", self.tr("Proposal processes (0: all cores)"), minValue=0, defaultValue=0
            )
        )
        self.add_advanced(
            QgsProcessingParameterBoolean(
                "RESUME", self.tr("Resume an interrupted run in the run folder"), False
            )
        )
        self.add_advanced(
            QgsProcessingParameterBoolean(
                "FORCE", self.tr("Delete a previous run in the run folder"), False
            )
        )
        self.addParameter(
            QgsProcessingParameterFolderDestination(
                "OUTPUT_FOLDER", self.tr("Run folder"), QgsProcessing.TEMPORARY_OUTPUT
            )
        )
        self.addOutput(QgsProcessingOutputFile("BUNDLE", self.tr("Model bundle")))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS API
        """Run ``jmlgeo train``."""
        scenes = self.scene_paths(parameters, "SCENES", context)
        boxes = vector_path(self, parameters, "BOXES", context, feedback)
        out = self.parameterAsFileOutput(parameters, "OUTPUT_FOLDER", context)
        proposals = self.parameterAsString(parameters, "PROPOSALS", context)
        workers = self.parameterAsInt(parameters, "WORKERS", context)
        args = runner.train_args(
            scenes,
            boxes,
            out,
            class_field=self.parameterAsString(parameters, "CLASS_FIELD", context) or "class",
            preset=self.parameterAsEnumString(parameters, "PRESET", context) or None,
            proposals=[p.strip() for p in proposals.split(",") if p.strip()] or None,
            loss=self.optional_enum(parameters, "LOSS", context),
            stage1_steps=self.optional_int(parameters, "STAGE1_STEPS", context),
            stage2_steps=self.optional_int(parameters, "STAGE2_STEPS", context),
            batch_size=self.optional_int(parameters, "BATCH_SIZE", context),
            tile_size=self.optional_int(parameters, "TILE_SIZE", context),
            device=self.parameterAsEnumString(parameters, "DEVICE", context) or None,
            workers=workers or None,
            resume=self.parameterAsBool(parameters, "RESUME", context),
            force=self.parameterAsBool(parameters, "FORCE", context),
        )
        result = self.run_jmlgeo(args, feedback)
        bundle = result.path("bundle")
        if bundle is None:
            raise QgsProcessingException(self.tr("jmlgeo train announced no bundle"))
        feedback.pushInfo(self.tr(f"Model bundle: {bundle}"))
        return {"BUNDLE": bundle, "OUTPUT_FOLDER": out}


class ProposalsAlgorithm(JmlGeoAlgorithm):
    """Raster layers + box layer -> one proposal raster per scene and method."""

    def name(self) -> str:
        """Algorithm id: ``jmlgeo:proposals``."""
        return "proposals"

    def displayName(self) -> str:  # noqa: N802 - QGIS API
        """Name in the toolbox."""
        return self.tr("Proposals")

    def shortHelpString(self) -> str:  # noqa: N802 - QGIS API
        """Help in the dialog."""
        return self.tr(
            "Pixel pseudo labels from boxes (<code>jmlgeo proposals</code>): the box itself, a "
            "dense CRF and GrabCut, each a class raster aligned to its scene "
            "(&lt;scene&gt;.&lt;method&gt;.tif). Useful to check boxes and classes before "
            "training; <i>Evaluate</i> scores them against truth."
        )

    def initAlgorithm(self, config=None):  # noqa: N802 - QGIS API
        """Parameters and outputs."""
        _add_boxes_parameters(self)
        self.addParameter(
            QgsProcessingParameterEnum(
                "METHODS",
                self.tr("Methods"),
                METHODS,
                allowMultiple=True,
                defaultValue=METHODS,
                usesStaticStrings=True,
            )
        )
        self.add_advanced(
            QgsProcessingParameterNumber(
                "WORKERS", self.tr("Processes (0: all cores)"), minValue=0, defaultValue=0
            )
        )
        self.addParameter(
            QgsProcessingParameterFolderDestination(
                "OUTPUT_FOLDER", self.tr("Output folder"), QgsProcessing.TEMPORARY_OUTPUT
            )
        )
        self.addOutput(QgsProcessingOutputMultipleLayers("PROPOSALS", self.tr("Proposals")))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS API
        """Run ``jmlgeo proposals`` and load the rasters."""
        scenes = self.scene_paths(parameters, "SCENES", context)
        boxes = vector_path(self, parameters, "BOXES", context, feedback)
        out = self.parameterAsFileOutput(parameters, "OUTPUT_FOLDER", context)
        methods = self.parameterAsEnumStrings(parameters, "METHODS", context) or METHODS
        workers = self.parameterAsInt(parameters, "WORKERS", context)
        args = runner.proposals_args(
            scenes,
            boxes,
            out,
            methods=methods,
            class_field=self.parameterAsString(parameters, "CLASS_FIELD", context) or "class",
            workers=workers or None,
        )
        result = self.run_jmlgeo(args, feedback)
        paths = result.paths("proposal")
        for path in paths:
            name = os.path.splitext(os.path.basename(path))[0]
            load_on_completion(
                context,
                path,
                name,
                "PROPOSALS",
                QgsProcessingUtils.LayerHint.Raster,
                style_class_raster,
            )
        return {"PROPOSALS": paths, "OUTPUT_FOLDER": out}


class EvaluateAlgorithm(JmlGeoAlgorithm):
    """Class raster + truth -> mIoU, pixel accuracy and a JSON report."""

    def name(self) -> str:
        """Algorithm id: ``jmlgeo:evaluate``."""
        return "evaluate"

    def displayName(self) -> str:  # noqa: N802 - QGIS API
        """Name in the toolbox."""
        return self.tr("Evaluate")

    def shortHelpString(self) -> str:  # noqa: N802 - QGIS API
        """Help in the dialog."""
        return self.tr(
            "Scores a class raster (a prediction or a proposal) against the truth "
            "(<code>jmlgeo evaluate</code>): polygons with a class field, or a class raster. "
            "Logs the per-class IoU table and returns mIoU and pixel accuracy (in percent); the "
            "full report (confusion matrix included) is written as JSON."
        )

    def initAlgorithm(self, config=None):  # noqa: N802 - QGIS API
        """Parameters and outputs."""
        self.addParameter(
            QgsProcessingParameterRasterLayer("PREDICTION", self.tr("Class raster to score"))
        )
        self.addParameter(
            QgsProcessingParameterMapLayer(
                "TRUTH",
                self.tr("Truth (polygons or class raster)"),
                types=[QgsProcessing.TypeVectorPolygon, QgsProcessing.TypeRaster],
            )
        )
        self.addParameter(
            QgsProcessingParameterString(
                "CLASS_FIELD", self.tr("Class field of the truth polygons"), "class"
            )
        )
        self.addParameter(
            QgsProcessingParameterFileDestination(
                "OUTPUT",
                self.tr("Report"),
                fileFilter="JSON (*.json)",
                defaultValue=QgsProcessing.TEMPORARY_OUTPUT,
            )
        )
        self.addOutput(QgsProcessingOutputNumber("MIOU", self.tr("mIoU (%)")))
        self.addOutput(QgsProcessingOutputNumber("PIXEL_ACCURACY", self.tr("Pixel accuracy (%)")))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS API
        """Run ``jmlgeo evaluate`` and read its scores."""
        prediction = raster_path(
            self.parameterAsRasterLayer(parameters, "PREDICTION", context), "PREDICTION"
        )
        truth_layer = self.parameterAsLayer(parameters, "TRUTH", context)
        if truth_layer is not None and truth_layer.type() == QgsMapLayer.VectorLayer:
            truth = vector_path(self, parameters, "TRUTH", context, feedback)
        else:
            truth = raster_path(truth_layer, "TRUTH")
        report = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        args = runner.evaluate_args(
            prediction,
            truth,
            report,
            class_field=self.parameterAsString(parameters, "CLASS_FIELD", context) or "class",
        )
        result = self.run_jmlgeo(args, feedback)
        scores = runner.parse_scores(result.text)
        if scores is None:
            raise QgsProcessingException(self.tr("jmlgeo evaluate printed no mIoU line"))
        return {"OUTPUT": report, "MIOU": scores[0], "PIXEL_ACCURACY": scores[1]}


ALGORITHMS = (PredictAlgorithm, TrainAlgorithm, ProposalsAlgorithm, EvaluateAlgorithm)
