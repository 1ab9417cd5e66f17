"""Evaluation of class rasters against truth: metrics, truth rasters, scoring and reports.

- :mod:`~jmlnet_geo.evaluate.metrics`: pure numpy: confusion matrix, IoU / mIoU, box IoU, VOC
  average precision and mAP.
- :mod:`~jmlnet_geo.evaluate.truth`: truth polygons or a class raster -> class ids on a grid.
- :mod:`~jmlnet_geo.evaluate.scoring`: one class raster (:func:`evaluate`) or many, pooled
  (:func:`score_scenes`, with per-scene reports and per-box IoU).
- :mod:`~jmlnet_geo.evaluate.report`: the :class:`Report`, Markdown tables, the confusion PNG.
- :mod:`~jmlnet_geo.evaluate.split`: held-out images, a train / validation split by image
  stratified by class (:func:`split_images`).

Importing this package loads neither torch, cv2 nor matplotlib.
"""

from jmlnet_geo.evaluate.metrics import (
    EvaluationError,
    average_precision,
    box_iou,
    box_ious,
    confusion_matrix,
    mean_average_precision,
    roc_auc,
    scores,
)
from jmlnet_geo.evaluate.report import (
    Report,
    markdown_table,
    report_markdown,
    reports_markdown,
    save_confusion_png,
)
from jmlnet_geo.evaluate.scoring import ScenesReport, TruthCache, evaluate, score_scenes
from jmlnet_geo.evaluate.split import split_images
from jmlnet_geo.evaluate.truth import (
    STRIP_PIXELS,
    VECTOR_SUFFIXES,
    EmptyTruthWarning,
    TruthSource,
    check_class_raster,
    read_classes,
    strip_windows,
    truth_raster,
    truth_source,
    write_truth_raster,
)

__all__ = [
    "STRIP_PIXELS",
    "VECTOR_SUFFIXES",
    "EmptyTruthWarning",
    "EvaluationError",
    "Report",
    "ScenesReport",
    "TruthCache",
    "TruthSource",
    "average_precision",
    "box_iou",
    "box_ious",
    "check_class_raster",
    "confusion_matrix",
    "evaluate",
    "markdown_table",
    "mean_average_precision",
    "read_classes",
    "report_markdown",
    "reports_markdown",
    "roc_auc",
    "save_confusion_png",
    "score_scenes",
    "scores",
    "split_images",
    "strip_windows",
    "truth_raster",
    "truth_source",
    "write_truth_raster",
]
