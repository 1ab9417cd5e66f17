"""Train from boxes: raster layers, a box layer and a class field to a model bundle."""

from __future__ import annotations

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputFile,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from . import runner
from .algorithm_base import JmlGeoAlgorithm
from .parameters import (
    DEVICES,
    LOSSES,
    PRESETS,
    add_boxes_parameters,
    vector_path,
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
        add_boxes_parameters(self)
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
