"""The outputs of an evaluation: the :class:`Report`, Markdown tables, the confusion PNG, JSON.

A report holds a pixel confusion matrix (rows truth, columns prediction) and its scores; see
:mod:`jmlnet_geo.evaluate.metrics`. Tables give percentages with one decimal, ``n/a`` for a class
absent from truth and prediction. matplotlib is imported only to draw the PNG.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from jmlnet_geo.errors import OutputError, display_path
from jmlnet_geo.evaluate.metrics import scores
from jmlnet_geo.io.write import atomic_output

__all__ = ["Report", "markdown_table", "report_markdown", "reports_markdown", "save_confusion_png"]


@dataclass(frozen=True)
class Report:
    """The evaluation of one class raster (or of several, pooled).

    Attributes:
        prediction: The evaluated class raster (for a pooled report: a summary of the files).
        truth: The truth file (polygons or raster).
        class_names: Names by class id, background first: ``class_names[i]`` is id ``i``.
        confusion: int64 (C, C): rows are truth, columns prediction, C = ``len(class_names)``.
        iou: float64 (C,): IoU per class; NaN for a class absent from truth and prediction.
        miou: Mean IoU over the classes present in truth or prediction (background included).
        pixel_accuracy: Correct pixels / evaluated pixels.
        precision: float64 (C,): TP / (TP + FP); NaN where the class is never predicted.
        recall: float64 (C,): TP / (TP + FN); NaN where the class is absent from the truth.
    """

    prediction: str
    truth: str
    class_names: tuple[str, ...]
    confusion: np.ndarray
    iou: np.ndarray
    miou: float
    pixel_accuracy: float
    precision: np.ndarray
    recall: np.ndarray

    @classmethod
    def of(
        cls, prediction: str, truth: str, class_names: Sequence[str], confusion: np.ndarray
    ) -> Report:
        """The report of an int64 (C, C) confusion matrix (scores computed here)."""
        s = scores(confusion)
        return cls(
            prediction=prediction,
            truth=truth,
            class_names=tuple(class_names),
            confusion=confusion,
            iou=s["iou"],
            miou=s["miou"],
            pixel_accuracy=s["pixel_accuracy"],
            precision=s["precision"],
            recall=s["recall"],
        )

    @property
    def pixels(self) -> int:
        """Evaluated pixels (neither raster 255 / nodata there)."""
        return int(self.confusion.sum())

    def as_dict(self) -> dict:
        """Plain Python values (lists, floats, None for NaN), ready for ``json.dumps``."""
        return {
            "prediction": self.prediction,
            "truth": self.truth,
            "classes": list(self.class_names),
            "pixels": self.pixels,
            "miou": _clean(self.miou),
            "pixel_accuracy": _clean(self.pixel_accuracy),
            "iou": [_clean(v) for v in self.iou],
            "precision": [_clean(v) for v in self.precision],
            "recall": [_clean(v) for v in self.recall],
            "confusion": self.confusion.tolist(),
        }


def report_markdown(report: Report, label: str | None = None) -> str:
    """A Markdown table of the IoU per class and the mIoU, in percent, like the paper's Table 5.

    Args:
        report: The evaluation.
        label: The row's name; default: the class raster's file name.

    Returns:
        Three lines (header, alignment, values) ending with a newline; ``n/a`` marks a class
        absent from truth and prediction.
    """
    return reports_markdown([report], None if label is None else [label])


def markdown_table(
    header: Sequence[str] | str, rows: Sequence[Sequence[object]], align: str | None = None
) -> str:
    """A Markdown table (GitHub style), ending with a newline.

    Args:
        header: The column names, or one string of them separated by ``|`` (``"a | b"``).
        rows: The cells, converted with ``str``; ``|`` in a cell is escaped.
        align: One letter per column, ``l`` or ``r`` (default: the first column left, the
            others right).

    Raises:
        ValueError: ``align`` does not have one letter per column.
    """
    if isinstance(header, str):
        header = [h.strip() for h in header.split("|")]
    align = align or "l" + "r" * (len(header) - 1)
    if len(align) != len(header):
        raise ValueError(f"align {align!r} has {len(align)} letters for {len(header)} columns")
    marks = ["---:" if a == "r" else "---" for a in align]
    lines = [_md_row(header), "|" + "|".join(marks) + "|", *(_md_row(r) for r in rows)]
    return "\n".join(lines) + "\n"


def reports_markdown(reports: Sequence[Report], labels: Sequence[str] | None = None) -> str:
    """One Markdown table, a row per report (same classes): IoU per class and mIoU in percent.

    Args:
        reports: Evaluations with the same ``class_names`` (e.g. one per scene).
        labels: The rows' names; default: each class raster's file name.

    Returns:
        Header, alignment and one line per report, ending with a newline.
    """
    labels = labels if labels is not None else [os.path.basename(r.prediction) for r in reports]
    rows = [
        [label, *(_percent(v) for v in report.iou), _percent(report.miou)]
        for report, label in zip(reports, labels, strict=True)
    ]
    return markdown_table(["", *reports[0].class_names, "mIoU"], rows)


def save_confusion_png(report: Report, path: str | os.PathLike[str]) -> None:
    """Write the row-normalised confusion matrix (each truth class sums to 100 %) as a PNG.

    Written atomically: a crash leaves no half-written file under ``path``.

    Raises:
        OutputError: ``path`` is not a .png or cannot be written.
    """
    if os.path.splitext(os.fspath(path))[1].lower() != ".png":
        raise OutputError(f"{display_path(path)}: the confusion matrix is a PNG; name it *.png")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = report.confusion.astype(np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    norm = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    n = len(report.class_names)
    size = min(4.0 + 0.5 * n, 20.0)
    fig = Figure(figsize=(size + 1.5, size), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the truth class")
    ticks = np.arange(n)
    ax.set_xticks(ticks, report.class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, report.class_names)
    ax.set_xlabel("prediction")
    ax.set_ylabel("truth")
    ax.set_title(f"{os.path.basename(report.prediction)}: mIoU {_percent(report.miou)} %")
    if n <= 20:
        for t in range(n):
            for p in range(n):
                if counts[t, p]:
                    colour = "white" if norm[t, p] > 0.5 else "black"
                    ax.text(p, t, f"{100 * norm[t, p]:.0f}", ha="center", va="center", c=colour)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def _clean(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.1f}"


def _md_row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"
