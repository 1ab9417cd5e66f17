"""Train from boxes: raster layers, a box layer and a class field to a model bundle."""

from __future__ import annotations

import os

from qgis.core import (
    QgsProcessingException,
    QgsProcessingOutputFile,
    QgsProcessingOutputRasterLayer,
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
)

from . import runner
from .algorithm_base import JmlGeoAlgorithm
from .parameters import DEVICES, LOSSES, PRESETS, add_boxes_parameters, vector_path
from .predict_algorithm import load_prediction
from .presets import (
    LOSS_HELP,
    PROPOSALS,
    defaults_label,
    estimate_seconds,
    format_duration,
)
from .settings import is_output, remember_bundle

_LOSS_LINES = "".join(f"<li><b>{name}</b>: {text}</li>" for name, text in LOSS_HELP.items())


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
            "a model bundle (model.safetensors) for <i>Predict</i>, which remembers it. The "
            "<i>fast</i> preset runs on a CPU in tens of minutes; <i>paper</i> wants a GPU "
            "(hours). The log gives an estimate of the duration before training starts."
            f"<p>Stage-2 losses:</p><ul>{_LOSS_LINES}</ul>"
        )

    def initAlgorithm(self, config=None):  # noqa: N802 - QGIS API
        """Parameters and outputs."""
        add_boxes_parameters(self)
        self.addParameter(
            QgsProcessingParameterEnum(
                "PRESET", self.tr("Preset"), PRESETS, defaultValue="fast", usesStaticStrings=True
            )
        )
        self.addParameter(
            QgsProcessingParameterBoolean(
                "PREDICT", self.tr("Train then predict the scenes (adds the prediction)"), False
            )
        )
        proposals = QgsProcessingParameterEnum(
            "PROPOSALS",
            self.tr(
                f"Stage-2 proposals (none chosen: the preset's, {defaults_label('proposals')})"
            ),
            list(PROPOSALS),
            allowMultiple=True,
            optional=True,
            usesStaticStrings=True,
        )
        proposals.setHelp(
            self.tr("detcam and camcut first train a detector on the boxes (much longer).")
        )
        self.add_advanced(proposals)
        loss = QgsProcessingParameterEnum(
            "LOSS",
            self.tr(f"Stage-2 loss (none chosen: the preset's, {defaults_label('loss')})"),
            LOSSES,
            optional=True,
            usesStaticStrings=True,
        )
        loss.setHelp("\n".join(f"{name}: {text}" for name, text in LOSS_HELP.items()))
        self.add_advanced(loss)
        for name, label, key in (
            ("STAGE1_STEPS", "Stage-1 steps", "stage1_steps"),
            ("STAGE2_STEPS", "Stage-2 steps", "stage2_steps"),
            ("BATCH_SIZE", "Batch size", "batch_size"),
            ("TILE_SIZE", "Tile size", "tile_size"),
        ):
            self.add_advanced(
                QgsProcessingParameterNumber(
                    name,
                    self.tr(f"{label} (empty: the preset's, {defaults_label(key)})"),
                    minValue={"TILE_SIZE": 32, "BATCH_SIZE": 2}.get(name, 0),
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
                "RESUME",
                self.tr("Resume an interrupted run (default folder: the last run on these scenes)"),
                False,
            )
        )
        self.add_advanced(
            QgsProcessingParameterBoolean(
                "FORCE", self.tr("Delete a previous run in the run folder"), False
            )
        )
        self.add_run_folder("OUTPUT_FOLDER", "Run folder")
        self.addOutput(QgsProcessingOutputFile("BUNDLE", self.tr("Model bundle")))
        self.addOutput(QgsProcessingOutputRasterLayer("OUTPUT", self.tr("Classes")))
        self.addOutput(QgsProcessingOutputVectorLayer("OUTPUT_POLYGONS", self.tr("Polygons")))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS API
        """Run ``jmlgeo train`` (then ``jmlgeo predict`` on the scenes when asked)."""
        scenes = self.scene_paths(parameters, "SCENES", context)
        source = self.parameterAsSource(parameters, "BOXES", context)
        boxes_layer = self.parameterAsVectorLayer(parameters, "BOXES", context)
        if boxes_layer is not None and is_output(boxes_layer):
            feedback.pushWarning(
                self.tr(
                    f"BOXES: '{boxes_layer.name()}' is an output of jmlgeo (a prediction?); "
                    "training on predictions learns their mistakes. Choose the box layer."
                )
            )
        boxes = vector_path(self, parameters, "BOXES", context, feedback)
        resume = self.parameterAsBool(parameters, "RESUME", context)
        out = self.run_folder(parameters, "OUTPUT_FOLDER", context, "train", scenes, resume)
        preset = self.parameterAsEnumString(parameters, "PRESET", context) or "fast"
        proposals = self.parameterAsEnumStrings(parameters, "PROPOSALS", context) or None
        device = self.parameterAsEnumString(parameters, "DEVICE", context) or None
        steps = {
            key: self.optional_int(parameters, key.upper(), context)
            for key in ("stage1_steps", "stage2_steps", "batch_size", "tile_size")
        }
        workers = self.parameterAsInt(parameters, "WORKERS", context)
        args = runner.train_args(
            scenes,
            boxes,
            out,
            class_field=self.parameterAsString(parameters, "CLASS_FIELD", context) or "class",
            preset=preset,
            proposals=proposals,
            loss=self.optional_enum(parameters, "LOSS", context),
            device=device,
            workers=workers or None,
            resume=resume,
            force=self.parameterAsBool(parameters, "FORCE", context),
            **steps,
        )
        count = source.featureCount() if source is not None else 0
        estimate = estimate_seconds(
            preset, max(count, 0), device or "auto", proposals=proposals, **steps
        )
        feedback.pushInfo(
            self.tr(
                f"Run folder: {out}. Expected duration: {format_duration(estimate)} on "
                f"{'a GPU' if device == 'cuda' else 'a CPU (or less on a GPU)'} for "
                f"{count} boxes with the {preset} preset (a rough estimate)."
            )
        )
        result = self.run_jmlgeo(args, feedback)
        bundle = result.path("bundle")
        if bundle is None:
            raise QgsProcessingException(self.tr("jmlgeo train announced no bundle"))
        feedback.pushInfo(self.tr(f"Model bundle: {bundle}"))
        remember_bundle(bundle)
        results = {"BUNDLE": bundle, "OUTPUT_FOLDER": out, "OUTPUT": None, "OUTPUT_POLYGONS": None}
        if self.parameterAsBool(parameters, "PREDICT", context) and not feedback.isCanceled():
            prediction = os.path.join(out, "prediction")
            for scene in scenes:  # one at a time: each scene's layers are loaded as it is done
                if feedback.isCanceled():
                    break
                args = runner.predict_args(
                    bundle, [scene], prediction, polygons=True, device=device
                )
                loaded = load_prediction(context, self.run_jmlgeo(args, feedback), bundle)
                if results["OUTPUT"] is None:
                    results.update({k: loaded[k] for k in ("OUTPUT", "OUTPUT_POLYGONS")})
        return results
