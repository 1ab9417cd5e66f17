"""Argument lists of the ``jmlgeo`` commands the plugin runs, and reading evaluate's scores."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence


def _path(value: str | os.PathLike[str]) -> str:
    # Absolute paths never start with "-", so no file name is taken for an option.
    return os.path.abspath(os.fspath(value))


def _with_options(args: list[str], **options: object) -> list[str]:
    """``args``, then ``--name value`` for each option, then ``--progress json``.

    ``batch_size`` becomes ``--batch-size``; None, False or an empty list: nothing; True: the
    flag alone; a list: its items comma-separated.
    """
    for key, value in options.items():
        name = "--" + key.replace("_", "-")
        if value is None or value is False or (isinstance(value, (list, tuple)) and not value):
            continue
        if value is True:
            args.append(name)
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        args += [name, str(value)]
    return [*args, "--progress", "json"]


def _listed(values: Sequence[str] | None) -> list[str] | None:
    return list(values) if values else None


def predict_args(
    bundle: str | os.PathLike[str],
    scenes: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    polygons: bool = False,
    probabilities: bool = False,
    window: int | None = None,
    overlap: int | None = None,
    batch_size: int | None = None,
    tta: str | None = None,
    device: str | None = None,
    min_area: float | None = None,
    simplify: float | None = None,
) -> list[str]:
    """``predict BUNDLE SCENE... --out DIR [...] --progress json``.

    ``window`` is the inference window (``--window``, independent of the training tile); None
    leaves window, overlap and batch size to ``jmlgeo predict``'s planning.
    """
    args = ["predict", _path(bundle), *(_path(s) for s in scenes), "--out", _path(out)]
    return _with_options(
        args, polygons=polygons, probabilities=probabilities, window=window, overlap=overlap,
        batch_size=batch_size, tta=tta, device=device, min_area=min_area, simplify=simplify,
    )  # fmt: skip


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
    return _with_options(
        args, preset=preset, classes=_listed(classes), proposals=_listed(proposals), loss=loss,
        stage1_steps=stage1_steps, stage2_steps=stage2_steps, batch_size=batch_size,
        tile_size=tile_size, device=device, workers=workers, loader_workers=loader_workers,
        resume=resume, force=force,
    )  # fmt: skip


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
    return _with_options(args, classes=_listed(classes), workers=workers, preview=preview)


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
    return _with_options(
        args,
        model=_path(model) if model else None,
        run=_path(run) if run else None,
        proposals=_listed(proposals),
        min_pixels=min_pixels,
        min_score=min_score,
        device=device,
        workers=workers,
    )


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
