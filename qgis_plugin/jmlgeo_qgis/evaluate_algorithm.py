"""Evaluate: a class raster against the truth, as mIoU, pixel accuracy and a report."""

from __future__ import annotations

import html
import os

from qgis.core import (
    QgsMapLayer,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputHtml,
    QgsProcessingOutputNumber,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterMapLayer,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from . import runner
from .algorithm_base import JmlGeoAlgorithm
from .parameters import (
    raster_path,
    vector_path,
)


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
            "Shows the per-class IoU table in the log and the results viewer (also written as "
            "HTML next to the report) and returns mIoU and pixel accuracy (in percent); the full "
            "report (confusion matrix included) is written as JSON."
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
        self.addOutput(QgsProcessingOutputHtml("OUTPUT_HTML", self.tr("Evaluation (table)")))
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
        result = self.run_jmlgeo(args, feedback, console=False)
        scores = runner.parse_scores(result.text)
        if scores is None:
            raise QgsProcessingException(self.tr("jmlgeo evaluate printed no mIoU line"))
        table = runner.table_html(result.text)
        feedback.pushInfo(table)
        page = os.path.splitext(report)[0] + ".html"
        title = html.escape(f"{os.path.basename(prediction)} against {os.path.basename(truth)}")
        with open(page, "w", encoding="utf-8") as f:
            f.write(f"<html><head><meta charset='utf-8'><title>{title}</title></head><body>")
            f.write(f"<h3>{title}</h3>{table}</body></html>\n")
        feedback.pushInfo(self.tr(f"Table written to {page}"))
        return {
            "OUTPUT": report,
            "OUTPUT_HTML": page,
            "MIOU": scores[0],
            "PIXEL_ACCURACY": scores[1],
        }
