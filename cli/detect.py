"""``jmlgeo train-detector`` and ``jmlgeo detect``: the Faster R-CNN that DetCAM explains."""

from __future__ import annotations

import math
from pathlib import Path

import typer
from jmlnet_geo.cli.progress import PROGRESS_OPTION, ProgressDisplay, ProgressMode

from jmlnet_geo.config import DETECT_WINDOW, DetectorConfig

_DEFAULTS = DetectorConfig()


def train_detector(
    scenes: list[Path] = typer.Argument(..., help="Scenes to train on (GeoTIFF or images)."),
    boxes: Path = typer.Option(..., "--boxes", help="Box layer (.gpkg, .geojson, .shp, .fgb)."),
    out: Path = typer.Option(
        Path("detector"), "--out", help="Training folder (detector.safetensors, last.ckpt, logs)."
    ),
    preset: str = typer.Option(_DEFAULTS.preset, "--preset", help="fast (CPU-friendly) or paper."),
    steps: int | None = typer.Option(
        None, "--steps", min=1, help=f"Optimiser steps [{_DEFAULTS.steps}]."
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", min=1, help=f"Tiles a step [{_DEFAULTS.batch_size}]."
    ),
    tile_size: int | None = typer.Option(
        None, "--tile-size", min=32, help=f"Tile side [{_DEFAULTS.tile_size}]."
    ),
    lr: float | None = typer.Option(
        None, "--lr", help=f"Peak learning rate (AdamW) [{_DEFAULTS.lr:g}]."
    ),
    weights: str | None = typer.Option(
        None, "--weights", help="default, imagenet, a torchvision weight name, a file, or none."
    ),
    seed: int = typer.Option(0, "--seed"),
    class_field: str = typer.Option("class", "--class-field", help="Column with the class."),
    classes: str | None = typer.Option(None, "--classes", help="Fixed class order, a,b,c."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (AMP on cuda)."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue an interrupted run of the same settings in --out."
    ),
    progress: ProgressMode = PROGRESS_OPTION,
) -> None:
    """Train the Faster R-CNN detector on the boxes (for DetCAM, CAMCut and jmlgeo detect)."""
    from dataclasses import replace

    from jmlnet_geo.io.raster import open_scenes
    from jmlnet_geo.io.vector import boxes_for_scenes, read_boxes
    from jmlnet_geo.train.detector import train_detector as run

    display = ProgressDisplay(progress)
    opened = open_scenes(scenes)
    layer = read_boxes(boxes, class_field, _names(classes))
    scene_boxes = boxes_for_scenes(layer, opened)
    chosen = {
        "steps": steps,
        "batch_size": batch_size,
        "tile_size": tile_size,
        "lr": lr,
    }
    extra = {k: v for k, v in chosen.items() if v is not None}
    if weights is not None:
        extra["weights"] = None if weights.lower() == "none" else weights
    config = replace(_DEFAULTS, preset=preset, **extra)
    with display.stage("detector", "steps") as report:
        path = run(
            scene_boxes, layer.classes.names, None, out, config, seed=seed, device=device,
            resume=resume, progress=report, message=display.message,
        )  # fmt: skip
    display.message(f"detector: {path}")
    display.output("detector", path)
    display.done()


def detect(
    detector: Path = typer.Argument(..., help="Detector file (detector.safetensors)."),
    scenes: list[Path] = typer.Argument(..., help="Scenes to detect objects in."),
    out: Path = typer.Option(..., "--out", help="Detected boxes (.gpkg, .geojson or .fgb)."),
    score: float = typer.Option(
        0.3, "--score", min=0.0, max=1.0, help="Write boxes of at least this score."
    ),
    truth: Path | None = typer.Option(
        None, "--truth", help="True boxes (box layer): print mAP@0.5 per class."
    ),
    class_field: str = typer.Option("class", "--class-field", help="Class column of --truth."),
    window: int = typer.Option(DETECT_WINDOW, "--window", min=64, help="Window side, pixels."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    progress: ProgressMode = PROGRESS_OPTION,
) -> None:
    """Detected boxes with class and score, in the scene CRS (mAP@0.5 against --truth)."""
    import geopandas as gpd
    import numpy as np
    import shapely

    from jmlnet_geo.detection import detect_scene
    from jmlnet_geo.detector_file import check_bands, load_detector, read_detector_card
    from jmlnet_geo.devices import resolve_device
    from jmlnet_geo.errors import OptionError
    from jmlnet_geo.evaluate.metrics import mean_average_precision
    from jmlnet_geo.evaluate.report import markdown_table
    from jmlnet_geo.io.raster import open_scenes
    from jmlnet_geo.io.vector import boxes_for_scenes, read_boxes
    from jmlnet_geo.io.write import check_vector_output, write_vector

    display = ProgressDisplay(progress)
    check_vector_output(out)
    card = read_detector_card(detector)
    opened = open_scenes(scenes)
    check_bands(card, opened, str(detector))
    crs_names = sorted({s.crs_name for s in opened})
    if len(crs_names) > 1:
        raise OptionError(
            f"the scenes are in different CRSs ({', '.join(crs_names)}); run jmlgeo detect "
            "once per CRS so that the boxes share one layer"
        )
    truth_boxes = None
    if truth is not None:
        layer = read_boxes(truth, class_field, card.classes)
        truth_boxes = boxes_for_scenes(layer, opened)
    model, card = load_detector(detector, resolve_device(device))
    found = []
    with display.stage("detect", "scenes") as report:
        report(0, len(opened))
        for i, scene in enumerate(opened):
            found.append(detect_scene(model, card, scene, window=window))
            report(i + 1, len(opened))
    rows = []
    for scene, det in zip(opened, found, strict=True):
        t = scene.transform
        for (c0, r0, c1, r1), label, value in zip(det.xyxy, det.labels, det.scores, strict=True):
            if value < score:
                continue
            x0, y0 = t * (c0, r0)
            x1, y1 = t * (c1, r1)
            rows.append(
                {
                    "class": card.classes[int(label) - 1],
                    "class_id": int(label),
                    "score": round(float(value), 4),
                    "image": scene.name,
                    "geometry": shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)),
                }
            )
    columns = {"class": "str", "class_id": "int64", "score": "float64", "image": "str"}
    frame = gpd.GeoDataFrame(
        {k: np.array([r[k] for r in rows], dtype=v) for k, v in columns.items()},
        geometry=gpd.GeoSeries([r["geometry"] for r in rows], crs=opened[0].crs),
    )
    write_vector(frame, out, layer="detections")
    display.message(f"{out}: {len(frame)} boxes with score >= {score:g} ({opened[0].crs_name})")
    display.output("detections", out)
    if truth_boxes is not None:
        result = mean_average_precision(
            found, [(sb.xyxy, sb.class_ids) for sb in truth_boxes], card.num_classes
        )
        rows = [
            [
                card.classes[i - 1],
                result["truths"][i],
                "n/a" if math.isnan(ap) else f"{100 * ap:.1f}",
            ]
            for i, ap in result["ap"].items()
        ]
        display.message(markdown_table("class | true boxes | AP@0.5", rows).rstrip("\n"))
        display.message(
            f"mAP@0.5 {100 * result['map']:.2f} over the classes with true boxes "
            "(every detection the model returns, score >= 0.05)"
        )
    display.done()


def _names(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None
