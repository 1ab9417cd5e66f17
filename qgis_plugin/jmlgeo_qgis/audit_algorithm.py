"""Audit boxes: which boxes to fix first (doubt, reason) and the objects no box covers."""

from __future__ import annotations

import os

from qgis.core import (
    QgsProcessing,
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingUtils,
)

from . import runner
from .algorithm_base import JmlGeoAlgorithm
from .parameters import DEVICES, add_boxes_parameters, load_on_completion, vector_path

#: The proposals the audit can make itself (``jmlgeo audit --proposals``).
AUDIT_METHODS = ["crf", "grabcut"]
#: The QML styles shipped with the plugin, one per layer of the audit's GeoPackage.
STYLES = os.path.join(os.path.dirname(__file__), "styles")
LAYERS = {"boxes": "audit_boxes.qml", "missing": "audit_missing.qml"}


def style_path(layer_name: str) -> str:
    """The shipped QML style of an audit layer (``boxes`` or ``missing``)."""
    return os.path.join(STYLES, LAYERS[layer_name])


def apply_style(layer, layer_name: str) -> bool:
    """Load the shipped style into a vector layer; False when QGIS refuses it."""
    _message, ok = layer.loadNamedStyle(style_path(layer_name))
    layer.triggerRepaint()
    return bool(ok)


class AuditAlgorithm(JmlGeoAlgorithm):
    """Raster layers + box layer (+ a model) -> the audited boxes and the missing ones."""

    def name(self) -> str:
        """Algorithm id: ``jmlgeo:audit``."""
        return "audit"

    def displayName(self) -> str:  # noqa: N802 - QGIS API
        """Name in the toolbox."""
        return self.tr("Audit boxes")

    def shortHelpString(self) -> str:  # noqa: N802 - QGIS API
        """Help in the dialog."""
        return self.tr(
            "Finds the boxes to fix first (<code>jmlgeo audit</code>): every box gets a doubt "
            "(0-1) and a reason (<i>class?</i> another class, <i>extent?</i> loose or shifted, "
            "<i>empty?</i> nothing inside) from the proposals and, with a model bundle, from "
            "its prediction; sorted most doubtful first. With a model, a second layer "
            "<i>missing</i> holds predicted objects that no box touches. Both layers are "
            "loaded with their styles (doubt as colour, reasons as labels)."
        )

    def initAlgorithm(self, config=None):  # noqa: N802 - QGIS API
        """Parameters and outputs."""
        add_boxes_parameters(self)
        self.addParameter(
            QgsProcessingParameterFile(
                "MODEL",
                self.tr("Model bundle (optional: class? and missing boxes need one)"),
                fileFilter="Model bundles (*.safetensors);;All files (*.*)",
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterFile(
                "RUN",
                self.tr("Reuse the proposals of a Train or Proposals run folder (optional)"),
                behavior=QgsProcessingParameterFile.Folder,
                optional=True,
            )
        )
        self.add_advanced(
            QgsProcessingParameterEnum(
                "PROPOSALS",
                self.tr("Proposals (default: the run's, or crf and grabcut)"),
                AUDIT_METHODS,
                allowMultiple=True,
                optional=True,
                usesStaticStrings=True,
            )
        )
        self.add_advanced(
            QgsProcessingParameterNumber(
                "MIN_PIXELS",
                self.tr("Missing: smallest object, pixels (default: from the boxes)"),
                minValue=1,
                optional=True,
            )
        )
        self.add_advanced(
            QgsProcessingParameterNumber(
                "MIN_SCORE",
                self.tr("Missing: smallest mean class probability"),
                QgsProcessingParameterNumber.Double,
                minValue=0.0,
                maxValue=1.0,
                defaultValue=0.5,
            )
        )
        self.add_advanced(
            QgsProcessingParameterEnum(
                "DEVICE", self.tr("Device"), DEVICES, defaultValue="auto", usesStaticStrings=True
            )
        )
        self.add_advanced(
            QgsProcessingParameterNumber(
                "WORKERS", self.tr("Processes (0: all cores)"), minValue=0, defaultValue=0
            )
        )
        self.addParameter(
            QgsProcessingParameterFileDestination(
                "OUTPUT",
                self.tr("Audit (GeoPackage)"),
                fileFilter="GeoPackage (*.gpkg)",
                defaultValue=QgsProcessing.TEMPORARY_OUTPUT,
            )
        )
        for key, label in (("BOXES", "Audited boxes"), ("MISSING", "Missing boxes")):
            self.addOutput(
                QgsProcessingOutputVectorLayer(key, self.tr(label), QgsProcessing.TypeVectorPolygon)
            )

    def audit_arguments(self, parameters, context, feedback) -> list[str]:
        """The ``jmlgeo audit`` argument list of these parameters."""
        scenes = self.scene_paths(parameters, "SCENES", context)
        boxes = vector_path(self, parameters, "BOXES", context, feedback)
        out = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        if not out.lower().endswith(".gpkg"):
            out += ".gpkg"
        workers = self.parameterAsInt(parameters, "WORKERS", context)
        return runner.audit_args(
            scenes,
            boxes,
            out,
            class_field=self.parameterAsString(parameters, "CLASS_FIELD", context) or "class",
            model=self.parameterAsFile(parameters, "MODEL", context) or None,
            run=self.parameterAsFile(parameters, "RUN", context) or None,
            proposals=self.parameterAsEnumStrings(parameters, "PROPOSALS", context) or None,
            min_pixels=self.optional_int(parameters, "MIN_PIXELS", context),
            min_score=self.optional_double(parameters, "MIN_SCORE", context),
            device=self.optional_enum(parameters, "DEVICE", context),
            workers=workers or None,
        )

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS API
        """Run ``jmlgeo audit`` and load its layers with the shipped styles."""
        args = self.audit_arguments(parameters, context, feedback)
        out = args[args.index("--out") + 1]
        result = self.run_jmlgeo(args, feedback)
        paths = result.paths("audit") or [out]
        gpkg = paths[0]
        outputs = {"OUTPUT": gpkg, "BOXES": f"{gpkg}|layername=boxes", "MISSING": None}
        with_model = "--model" in args
        for layer_name, key in (("boxes", "BOXES"), ("missing", "MISSING")):
            if layer_name == "missing" and not with_model:
                continue
            source = f"{gpkg}|layername={layer_name}"
            outputs[key] = source
            load_on_completion(
                context,
                source,
                self.tr(f"audit {layer_name}"),
                key,
                QgsProcessingUtils.LayerHint.Vector,
                lambda layer, name=layer_name: apply_style(layer, name),
                kind="audit",
            )
        return outputs
