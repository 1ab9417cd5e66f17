"""``jmlgeo proposals``: pixel pseudo labels from boxes, one class raster per scene and method."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import typer
from jmlnet_geo.cli.progress import PROGRESS_OPTION, ProgressDisplay, ProgressMode

from jmlnet_geo.config import DetectorConfig
from jmlnet_geo.proposals.options import CLASSIC_METHODS, ProposalOptions

#: The library's defaults (one source: the options' dataclasses), shown in ``--help``.
_OPTIONS = ProposalOptions()
_DETECTOR = DetectorConfig()

#: ``--cluster`` of proposals and train (predict has its own help).
CLUSTER_OPTION = typer.Option(
    None,
    "--cluster",
    help="Proposals on Dask: tcp://host:8786 (a running scheduler) or local:N (N worker "
    "processes for this run), one task per scene; the rasters are those of a local run.",
)


def proposals(
    scenes: list[Path] = typer.Argument(..., help="Scenes (GeoTIFF or any GDAL-readable image)."),
    boxes: Path = typer.Option(..., "--boxes", help="Box layer (.gpkg, .geojson, .shp, .fgb)."),
    out: Path = typer.Option(..., "--out", help="Output folder for <scene>.<method>.tif."),
    methods: str = typer.Option(
        ",".join(CLASSIC_METHODS),
        "--methods",
        help="Comma-separated: box, crf, grabcut, detcam, camcut (the last two use a detector).",
    ),
    class_field: str = typer.Option("class", "--class-field", help="Column with the class."),
    classes: str | None = typer.Option(
        None, "--classes", help="Fixed class order, comma-separated (default: sorted values)."
    ),
    workers: int = typer.Option(0, "--workers", help="Processes (0: all cores).", min=0),
    preview: bool = typer.Option(False, "--preview", help="Also write a quick-look PNG each."),
    margin: float = typer.Option(
        _OPTIONS.margin, "--margin", help="Context around a box, x its size."
    ),
    max_side: int = typer.Option(
        _OPTIONS.max_side, "--max-side", help="Larger crops are shrunk to this.", min=16
    ),
    bands: str | None = typer.Option(
        None, "--bands", help="1-based bands shown to GrabCut/CRF as R,G,B (default 1,2,3)."
    ),
    grabcut_iterations: int = typer.Option(
        _OPTIONS.grabcut.iterations, "--grabcut-iterations", min=1
    ),
    crf_fg_prob: float = typer.Option(
        _OPTIONS.crf.fg_prob,
        "--crf-fg-prob",
        help="CRF: class probability inside the box.",
        min=0.5,
        max=0.99,
    ),  # fmt: skip
    crf_sxy: float = typer.Option(
        _OPTIONS.crf.bilateral_sxy, "--crf-sxy", help="CRF: bilateral spatial width (px)."
    ),
    crf_srgb: float = typer.Option(
        _OPTIONS.crf.bilateral_srgb, "--crf-srgb", help="CRF: bilateral colour width."
    ),
    crf_compat: float = typer.Option(
        _OPTIONS.crf.bilateral_compat, "--crf-compat", help="CRF: bilateral weight."
    ),
    crf_iterations: int = typer.Option(_OPTIONS.crf.iterations, "--crf-iterations", min=1),
    detector: Path | None = typer.Option(
        None,
        "--detector",
        help="detcam/camcut: a detector.safetensors (default: train one into OUT/detector/).",
    ),
    detector_steps: int | None = typer.Option(
        None, "--detector-steps", min=1, help="Steps of the detector trained when none is given."
    ),
    tau_low: float = typer.Option(
        _DETECTOR.tau_low, "--tau-low", help="DetCAM low threshold (D_l = D > it)."
    ),
    tau_high: float = typer.Option(
        _DETECTOR.tau_high, "--tau-high", help="DetCAM high threshold: CAMCut's sure foreground."
    ),
    camcut_low: str = typer.Option(
        _DETECTOR.camcut_low,
        "--camcut-low",
        help="CAMCut's in-box pixels below tau_low: sure or probable.",
    ),
    heatmap: bool = typer.Option(
        False, "--heatmap", help="Also write <scene>.detcam_heat.tif (DetCAM, 0-255)."
    ),
    device: str = typer.Option("auto", "--device", help="Detector device: auto, cpu or cuda."),
    cluster: str | None = CLUSTER_OPTION,
    progress: ProgressMode = PROGRESS_OPTION,
) -> None:
    """BOX, dense CRF, GrabCut, DetCAM and CAMCut proposals, as class rasters on each scene."""
    from dataclasses import replace

    from jmlnet_geo.io.raster import open_scenes
    from jmlnet_geo.io.vector import boxes_for_scenes, read_boxes
    from jmlnet_geo.io.write import atomic_output
    from jmlnet_geo.proposals.compose import summary_dict
    from jmlnet_geo.proposals.stage import DetectorProposalOptions, check_request, make_proposals

    if cluster is not None:  # a bad address fails before any work
        from jmlnet_geo.cluster import parse_cluster

        parse_cluster(cluster)
    det = DetectorProposalOptions(tau_low, tau_high, heatmap, device, camcut_low)
    chosen = check_request(  # a bad method, threshold or detector file fails before any work
        [m.strip().lower() for m in methods.split(",") if m.strip()], det, detector
    )
    options = replace(
        _OPTIONS,
        margin=margin,
        max_side=max_side,
        picture_bands=_bands(bands),
        grabcut=replace(_OPTIONS.grabcut, iterations=grabcut_iterations),
        crf=replace(
            _OPTIONS.crf,
            fg_prob=crf_fg_prob,
            bilateral_sxy=crf_sxy,
            bilateral_srgb=crf_srgb,
            bilateral_compat=crf_compat,
            iterations=crf_iterations,
        ),
    )
    display = ProgressDisplay(progress)
    opened = open_scenes(scenes)
    if options.picture_bands and any(max(options.picture_bands) >= s.count for s in opened):
        from jmlnet_geo.errors import OptionError

        raise OptionError(f"--bands {bands}: a scene has fewer bands; run jmlgeo info to see them")
    layer = read_boxes(boxes, class_field, _names(classes))
    scene_boxes = boxes_for_scenes(layer, opened)

    def trained_detector() -> Path:
        """The fast-preset detector in OUT/detector/ (trained, or reused: same data, settings)."""
        from jmlnet_geo.train.detector import train_detector

        config = replace(_DETECTOR, **({"steps": detector_steps} if detector_steps else {}))
        with display.stage("detector", "steps") as report:
            path = train_detector(
                scene_boxes, layer.classes.names, None, out / "detector", config, device=device,
                resume=True, progress=report, message=display.message,
            )  # fmt: skip
        display.message(f"detector: {path}")
        display.output("detector", path)
        return path

    with cluster_scene_map(cluster) as scene_map:
        result = make_proposals(
            scene_boxes, layer.classes.names, chosen, out, options,
            detector=detector or trained_detector, detector_options=det,
            workers=workers or os.cpu_count() or 1, stage_progress=display.stage,
            scene_map=scene_map,
        )  # fmt: skip
    summaries = result.summaries
    record: dict = {}
    if result.detector is not None:
        record = {
            "detector": os.path.abspath(result.detector),
            "tau_low": tau_low,
            "tau_high": tau_high,
            "camcut_low": camcut_low,
        }
    if preview:
        _previews(scene_boxes, summaries, options, len(layer.classes), display)
    with atomic_output(out / "proposals.json") as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump({**summary_dict(summaries, options), **record}, f, indent=2)
    for s in summaries:
        for method, m in s.methods.items():
            note = f", {m.fallbacks} fell back to the box" if m.fallbacks else ""
            display.message(f"{m.path}: {m.boxes} boxes ({method}{note})")
            display.output("proposal", m.path)
    if result.detector is not None and heatmap:
        from jmlnet_geo.proposals.detector_proposals import heat_path

        for sb in scene_boxes:
            display.message(f"{heat_path(out, sb.scene)}: DetCAM heat map")
            display.output("heatmap", heat_path(out, sb.scene))
    display.done()


@contextlib.contextmanager
def cluster_scene_map(cluster: str | None):
    """Yield None without ``--cluster``, else a scene map on the cluster (closed afterwards)."""
    if cluster is None:
        yield None
        return
    from jmlnet_geo.cluster import cluster_client, scene_map

    with cluster_client(cluster) as client:
        yield scene_map(client)


def _names(classes: str | None) -> list[str] | None:
    return [c.strip() for c in classes.split(",")] if classes else None


def _bands(text: str | None) -> tuple[int, int, int] | None:
    if text is None:
        return None
    from jmlnet_geo.errors import OptionError

    try:
        values = tuple(int(v) - 1 for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 0:
        raise OptionError(f"--bands {text}: give three 1-based band numbers, e.g. 3,2,1")
    return values  # type: ignore[return-value]


def _previews(scene_boxes, summaries, options, num_classes, display) -> None:
    from jmlnet_geo.proposals.compose import pixel_boxes, scene_stretch
    from jmlnet_geo.proposals.preview import save_preview

    for sb, summary in zip(scene_boxes, summaries, strict=True):
        stretch = scene_stretch(sb.scene, options)
        for m in summary.methods.values():
            png = Path(m.path).with_suffix(".png")
            save_preview(png, sb.scene, stretch, m.path, pixel_boxes(sb), sb.class_ids, num_classes)
            display.message(f"{png}: preview")
            display.output("preview", png)
