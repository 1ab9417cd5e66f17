"""``jmlgeo evaluate``: score class rasters (proposals or predictions) against the truth.

One class raster gives its table; several (files, or folders of them) are scored one by one and
their confusion matrices pooled: a table per scene, then the pooled one. The last line is always
``mIoU X  pixel accuracy Y`` (of the pooled matrix), which the QGIS plugin reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer


def evaluate(
    predictions: list[Path] = typer.Argument(
        ...,
        help="Class rasters (0 background, 1..K, 255 ignore), or folders of them "
        "(their *.classes.tif, else every *.tif).",
    ),
    truth: Path = typer.Option(
        ...,
        "--truth",
        help="Truth polygons (.gpkg, ...) or a class raster; for several predictions also a "
        "folder of class rasters named like the scenes (NAME.tif).",
    ),
    class_field: str = typer.Option("class", "--class-field", help="Class column of the truth."),
    images: Path | None = typer.Option(
        None,
        "--images",
        help="Folder of the scenes the predictions were made from (NAME.png for "
        "NAME.classes.tif): the truth is tied to them, e.g. by a layer's image column.",
    ),
    out: Path | None = typer.Option(None, "--out", help="Write the report as JSON here."),
    png: Path | None = typer.Option(None, "--png", help="Write the confusion matrix as PNG here."),
) -> None:
    """Confusion matrix, per-class IoU, mIoU (background included) and pixel accuracy."""
    from jmlnet_geo.evaluate import evaluate as run
    from jmlnet_geo.evaluate import report_markdown, save_confusion_png

    paths = _class_rasters(predictions)
    if len(paths) == 1 and not predictions[0].is_dir() and images is None:
        report = run(paths[0], truth, class_field=class_field)
        print(report_markdown(report))
        data = report.as_dict()
    else:
        report, data = _pooled(paths, truth, class_field, images)
    print(f"mIoU {100 * report.miou:.2f}  pixel accuracy {100 * report.pixel_accuracy:.2f}")
    if out is not None:
        from jmlnet_geo.io.write import atomic_output

        with atomic_output(out) as tmp, open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
    if png is not None:
        save_confusion_png(report, png)


def _pooled(paths: list[Path], truth: Path, class_field: str, images: Path | None):
    """Score every class raster, print the per-scene and pooled tables; (report, JSON data)."""
    from jmlnet_geo.evaluate import report_markdown, reports_markdown, score_scenes
    from jmlnet_geo.io.raster import open_scene

    scenes = [open_scene(_scene_of(p, images)) for p in paths] if images is not None else None
    truths = [truth / f"{_key(p)}.tif" for p in paths] if truth.is_dir() else truth
    result = score_scenes(paths, truths, class_field=class_field, scenes=scenes)
    labels = [p.name for p in paths]
    print(f"Per scene ({len(paths)}):\n")
    print(reports_markdown(result.scenes, labels))
    print(f"Pooled over {len(paths)} scenes ({result.pooled.pixels} pixels):\n")
    print(report_markdown(result.pooled, label="pooled"))
    data = result.pooled.as_dict()
    data["scenes"] = [r.as_dict() for r in result.scenes]
    return result.pooled, data


def _class_rasters(predictions: list[Path]) -> list[Path]:
    """The files given, with each folder replaced by its class rasters (sorted by name)."""
    from jmlnet_geo.errors import InputFileError, display_path

    paths: list[Path] = []
    for path in predictions:
        if not path.is_dir():
            paths.append(path)
            continue
        found = sorted(path.glob("*.classes.tif")) or sorted(path.glob("*.tif"))
        if not found:
            raise InputFileError(f"{display_path(path)}: no .tif class raster in this folder")
        paths += found
    return paths


def _key(path: Path) -> str:
    """A class raster's scene name: ``NAME`` of ``NAME.classes.tif`` or ``NAME.tif``."""
    name = path.name.removesuffix(".tif").removesuffix(".TIF")
    return name.removesuffix(".classes")


def _scene_of(path: Path, images: Path) -> Path:
    from jmlnet_geo.errors import InputFileError, display_path
    from jmlnet_geo.io.vector import IMAGE_SUFFIXES

    for suffix in IMAGE_SUFFIXES:
        for candidate in (
            images / f"{_key(path)}{suffix}",
            images / f"{_key(path)}{suffix.upper()}",
        ):
            if candidate.is_file():
                return candidate
    raise InputFileError(
        f"{display_path(path)}: no scene {_key(path)}.* in {display_path(images)}; pass --images "
        "with the folder the predictions were made from"
    )
