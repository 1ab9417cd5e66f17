"""Proposals: pixel pseudo labels from boxes, one raster per scene and method."""

from __future__ import annotations

import os

from qgis.core import (
    QgsProcessingOutputMultipleLayers,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
    QgsProcessingUtils,
)

from . import runner
from .algorithm_base import JmlGeoAlgorithm
from .parameters import (
    METHODS,
    add_boxes_parameters,
    load_on_completion,
    vector_path,
)
from .styling import style_class_raster


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
        add_boxes_parameters(self)
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
        self.add_run_folder("OUTPUT_FOLDER", "Output folder")
        self.addOutput(QgsProcessingOutputMultipleLayers("PROPOSALS", self.tr("Proposals")))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS API
        """Run ``jmlgeo proposals`` and load the rasters."""
        scenes = self.scene_paths(parameters, "SCENES", context)
        boxes = vector_path(self, parameters, "BOXES", context, feedback)
        out = self.run_folder(parameters, "OUTPUT_FOLDER", context, "proposals", scenes)
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
                kind="proposal",
            )
        return {"PROPOSALS": paths, "OUTPUT_FOLDER": out}
