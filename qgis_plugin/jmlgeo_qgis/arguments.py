"""Argument lists of the ``jmlgeo`` commands the plugin runs, and reading evaluate's scores."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence


def _path(value: str | os.PathLike[str]) -> str:
    # Absolute paths never start with "-", so no file name is taken for an option.
    return os.path.abspath(os.fspath(value))


def _option(args: list[str], name: str, value: object) -> None:
    """Append ``--name value`` (None: nothing; True: the flag alone; False: nothing)."""
    if value is None or value is False:
        return
    if value is True:
        args.append(name)
        return
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    args += [name, str(value)]


def predict_args(
    bundle: str | os.PathLike[str],
    scenes: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    polygons: bool = False,
    probabilities: bool = False,
    tile: int | None = None,
    overlap: int | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    min_area: float | None = None,
    simplify: float | None = None,
) -> list[str]:
    """``predict BUNDLE SCENE... --out DIR [...] --progress json``."""
    args = ["predict", _path(bundle), *(_path(s) for s in scenes), "--out", _path(out)]
    _option(args, "--polygons", polygons)
    _option(args, "--probabilities", probabilities)
    _option(args, "--tile", tile)
    _option(args, "--overlap", overlap)
    _option(args, "--batch-size", batch_size)
    _option(args, "--device", device)
    _option(args, "--min-area", min_area)
    _option(args, "--simplify", simplify)
    return [*args, "--progress", "json"]


def train_args(
    scenes: Sequence[str | os.PathLike[str]],
    boxes: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    class_field: str = "class",
    preset: str | None = None,
    classes: Sequence[str] | None = None,
    proposals: Sequence[str] | None = None,
    loss: str | None = None,
    stage1_steps: int | None = None,
    stage2_steps: int | None = None,
    batch_size: int | None = None,
    tile_size: int | None = None,
    device: str | None = None,
    workers: int | None = None,
    loader_workers: int | None = None,
    resume: bool = False,
    force: bool = False,
) -> list[str]:
    """``train SCENE... --boxes BOXES --class-field F --out RUN_DIR [...] --progress json``."""
    args = ["train", *(_path(s) for s in scenes), "--boxes", _path(boxes)]
    args += ["--class-field", class_field, "--out", _path(out)]
    _option(args, "--preset", preset)
    _option(args, "--classes", list(classes) if classes else None)
    _option(args, "--proposals", list(proposals) if proposals else None)
    _option(args, "--loss", loss)
    _option(args, "--stage1-steps", stage1_steps)
    _option(args, "--stage2-steps", stage2_steps)
    _option(args, "--batch-size", batch_size)
    _option(args, "--tile-size", tile_size)
    _option(args, "--device", device)
    _option(args, "--workers", workers)
    _option(args, "--loader-workers", loader_workers)
    _option(args, "--resume", resume)
    _option(args, "--force", force)
    return [*args, "--progress", "json"]


def proposals_args(
    scenes: Sequence[str | os.PathLike[str]],
    boxes: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    methods: Sequence[str] = ("box", "crf", "grabcut"),
    class_field: str = "class",
    classes: Sequence[str] | None = None,
    workers: int | None = None,
    preview: bool = False,
) -> list[str]:
    """``proposals SCENE... --boxes BOXES --class-field F --out DIR --methods M [...]``."""
    args = ["proposals", *(_path(s) for s in scenes), "--boxes", _path(boxes)]
    args += ["--class-field", class_field, "--out", _path(out)]
    args += ["--methods", ",".join(methods)]
    _option(args, "--classes", list(classes) if classes else None)
    _option(args, "--workers", workers)
    _option(args, "--preview", preview)
    return [*args, "--progress", "json"]


def audit_args(
    scenes: Sequence[str | os.PathLike[str]],
    boxes: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    class_field: str = "class",
    model: str | os.PathLike[str] | None = None,
    run: str | os.PathLike[str] | None = None,
    proposals: Sequence[str] | None = None,
    min_pixels: int | None = None,
    min_score: float | None = None,
    device: str | None = None,
    workers: int | None = None,
) -> list[str]:
    """``audit SCENE... --boxes BOXES --class-field F --out AUDIT.gpkg [...] --progress json``."""
    args = ["audit", *(_path(s) for s in scenes), "--boxes", _path(boxes)]
    args += ["--class-field", class_field, "--out", _path(out)]
    _option(args, "--model", _path(model) if model else None)
    _option(args, "--run", _path(run) if run else None)
    _option(args, "--proposals", list(proposals) if proposals else None)
    _option(args, "--min-pixels", min_pixels)
    _option(args, "--min-score", min_score)
    _option(args, "--device", device)
    _option(args, "--workers", workers)
    return [*args, "--progress", "json"]


def evaluate_args(
    prediction: str | os.PathLike[str],
    truth: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    class_field: str = "class",
) -> list[str]:
    """``evaluate PREDICTION --truth TRUTH --class-field F [--out report.json]`` (no progress)."""
    args = ["evaluate", _path(prediction), "--truth", _path(truth), "--class-field", class_field]
    if out is not None:
        args += ["--out", _path(out)]
    return args


_SCORES = re.compile(r"mIoU\s+(?P<miou>[0-9.]+)\s+pixel accuracy\s+(?P<acc>[0-9.]+)")


def parse_scores(lines: Iterable[str]) -> tuple[float, float] | None:
    """(mIoU, pixel accuracy) in percent from ``jmlgeo evaluate``'s last line, or None."""
    for line in reversed(list(lines)):
        match = _SCORES.search(line)
        if match:
            return float(match["miou"]), float(match["acc"])
    return None


def _cells(line: str) -> list[str] | None:
    text = line.strip()
    if not (text.startswith("|") and text.endswith("|")):
        return None
    return [cell.strip() for cell in text[1:-1].split("|")]


def table_html(lines: Iterable[str]) -> str:
    """``jmlgeo evaluate``'s Markdown tables (and score line) as HTML, for people to read."""
    import html

    parts: list[str] = []
    rows: list[list[str]] = []

    def close() -> None:
        if not rows:
            return
        head, *body = rows
        cells = "".join(f"<th>{html.escape(c)}</th>" for c in head)
        out = [f"<tr>{cells}</tr>"]
        for row in body:
            tds = "".join(
                f'<td align="{"right" if _is_number(c) else "left"}">{html.escape(c)}</td>'
                for c in row
            )
            out.append(f"<tr>{tds}</tr>")
        parts.append(
            '<table border="1" cellspacing="0" cellpadding="3">' + "".join(out) + "</table>"
        )
        rows.clear()

    for line in lines:
        cells = _cells(line)
        if cells is None:
            close()
            if line.strip():
                parts.append(f"<p>{html.escape(line.strip())}</p>")
        elif not all(set(c) <= set("-: ") for c in cells):  # not the |---| rule
            rows.append(cells)
    close()
    return "\n".join(parts)


def _is_number(text: str) -> bool:
    try:
        float(text.rstrip("%"))
    except ValueError:
        return False
    return True
