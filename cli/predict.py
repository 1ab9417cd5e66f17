"""``jmlgeo predict`` and ``jmlgeo vectorize``: class rasters and polygons from a bundle."""

from __future__ import annotations

from pathlib import Path

import typer
from jmlnet_geo.cli.progress import PROGRESS_OPTION, ProgressDisplay, ProgressMode


def predict(
    bundle: Path = typer.Argument(..., help="Bundle written by jmlgeo train."),
    scenes: list[Path] = typer.Argument(..., help="Scenes to predict (rasters or STAC Item JSON)."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    polygons: bool = typer.Option(False, "--polygons", help="Also write <scene>.polygons.gpkg."),
    probabilities: bool = typer.Option(
        False, "--probabilities", help="Also write per-class probabilities (uint8 0-255)."
    ),
    window: int | None = typer.Option(
        None,
        "--window",
        min=16,
        help="Inference window side in px, rounded to the model's output stride (default: the "
        "bundle's predict_window, else the largest the device's memory allows: 1024 on CPU, "
        "smaller for very wide scenes). Independent of the training tile.",
    ),
    tile: int | None = typer.Option(None, "--tile", min=16, help="Older name of --window."),
    overlap: int | None = typer.Option(
        None,
        "--overlap",
        min=0,
        help="Pixels neighbouring windows share (default: the bundle's predict_overlap, else "
        "about one receptive field of the model, 288 px, at most window / 4).",
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", min=1, help="Windows per pass (default: ~0.5 Mpx on CPU)."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    tta: str = typer.Option(
        "none", "--tta", help="none, or flips: average with 3 flipped windows (4x slower)."
    ),
    amp: str = typer.Option(
        "auto", "--amp", help="auto (bf16/fp16 autocast on CUDA, fp32 on CPU), off, bf16, fp16."
    ),
    min_area: float = typer.Option(0.0, "--min-area", help="Polygons: drop smaller (map units²)."),
    simplify: float = typer.Option(0.0, "--simplify", help="Polygons: tolerance (map units)."),
    loader_workers: int | None = typer.Option(
        None,
        "--loader-workers",
        min=0,
        help="Reader processes (default: 0 on CPU, reading between forward passes; 1 on CUDA).",
    ),
    stac: bool = typer.Option(False, "--stac", help="Also write <scene>.item.json (STAC Item)."),
    model_item: Path | None = typer.Option(
        None, "--model-item", help="STAC item of the bundle (default: <bundle>.json if there)."
    ),
    asset: str | None = typer.Option(None, "--asset", help="STAC Item scenes: asset to read."),
    cluster: str | None = typer.Option(
        None,
        "--cluster",
        help="Dask: tcp://host:8786 (a running scheduler) or local:N (N worker processes for "
        "this run); one task per scene, a larger scene in row blocks (see --split-pixels).",
    ),
    split_pixels: float = typer.Option(
        256.0, "--split-pixels", min=1e-6, help="With --cluster: split scenes above this (Mpx)."
    ),
    progress: ProgressMode = PROGRESS_OPTION,
) -> None:
    """Predict scenes of any size to class COGs (and polygons), streaming strip by strip."""
    from dataclasses import asdict

    from jmlnet_geo import stac as stac_io
    from jmlnet_geo.io.write import check_distinct_stems
    from jmlnet_geo.predict import PredictOptions, Predictor
    from jmlnet_geo.vectorize import write_polygons

    display = ProgressDisplay(progress)
    if cluster is not None:  # a bad address fails before any work
        from jmlnet_geo.cluster import parse_cluster

        parse_cluster(cluster)
    if cluster is None:
        predictor = Predictor(bundle, device, amp)
        card = predictor.card
    else:
        from jmlnet_geo.bundle import load_bundle

        card = load_bundle(bundle)[1]
    options = PredictOptions(
        window=window or tile,
        overlap=overlap,
        batch_size=batch_size,
        device=device,
        tta=tta,
        probabilities=probabilities,
        loader_workers=loader_workers,
    )
    resolved = []
    for given in scenes:
        scene = given
        if stac_io.is_stac_item(given):
            scene = Path(stac_io.resolve_scene(given, asdict(card), asset))
        resolved.append(scene)
    check_distinct_stems(resolved, out)  # before any work: none overwrites another's outputs

    def local_predictions():
        for scene in resolved:
            with display.stage(f"predict {scene.name}", "windows") as report:
                result = predictor.predict(scene, out, options, progress=report)
            yield result

    def cluster_predictions():
        from jmlnet_geo.cluster import cluster_client
        from jmlnet_geo.cluster_predict import predict_scenes

        with cluster_client(cluster) as client, display.stage("predict", "tasks") as report:
            found = predict_scenes(
                client, bundle, resolved, out, options, amp, int(split_pixels * 1e6), report
            )
        yield from found

    for result in local_predictions() if cluster is None else cluster_predictions():
        mpx = result.pixels / 1e6
        display.message(
            f"{result.classes}: {mpx:.1f} Mpx in {result.seconds:.1f} s "
            f"({result.windows} windows of {result.window} px, overlap {result.overlap})"
        )
        display.output("classes", result.classes)
        display.output("style", result.style)
        if result.probabilities is not None:
            display.output("probabilities", result.probabilities)
        if polygons:
            path = out / f"{Path(result.scene).stem}.polygons.gpkg"
            frame = write_polygons(result.classes, path, min_area=min_area, simplify=simplify)
            display.message(f"{path}: {len(frame)} polygons")
            display.output("polygons", path)
        if stac:
            item = stac_io.write_prediction_item(
                result.classes,
                bundle,
                polygons=path if polygons else None,
                probabilities=result.probabilities,
                model_item_path=model_item,
            )
            display.output("stac", item)
    display.done()


def vectorize(
    class_raster: Path = typer.Argument(..., help="Class raster (prediction or proposal)."),
    out: Path | None = typer.Option(None, "--out", help="Default: <raster>.polygons.gpkg."),
    min_area: float = typer.Option(0.0, "--min-area", help="Drop smaller regions (map units²)."),
    simplify: float = typer.Option(0.0, "--simplify", help="Tolerance in map units."),
    classes: str | None = typer.Option(None, "--classes", help="Names of ids 1..K, a,b,c."),
) -> None:
    """Polygons (class id, class name, area) of a class raster."""
    from jmlnet_geo.vectorize import write_polygons

    target = out or class_raster.with_name(class_raster.stem + ".polygons.gpkg")
    names = [c.strip() for c in classes.split(",")] if classes else None
    frame = write_polygons(class_raster, target, names, min_area, simplify)
    print(f"{target}: {len(frame)} polygons")


def export(
    bundle: Path = typer.Argument(..., help="Bundle written by jmlgeo train."),
    out: Path | None = typer.Argument(None, help="The .onnx file to write."),
    stac: Path | None = typer.Option(
        None, "--stac", help="Also write a STAC Item (MLM extension) describing the model."
    ),
) -> None:
    """ONNX model (probabilities) with Deepness metadata, and/or a STAC MLM item."""
    from jmlnet_geo.errors import OptionError

    if out is None and stac is None:
        raise OptionError("give the .onnx file to write, --stac ITEM.json, or both")
    if out is not None:
        from jmlnet_geo.export import export_onnx

        meta = export_onnx(bundle, out)
        print(f"{out}: ONNX, tiles {meta['tiles_size']} px, classes {meta['class_names']}")
    if stac is not None:
        from jmlnet_geo.stac import write_model_item

        write_model_item(bundle, stac, onnx=out)
        print(f"{stac}: STAC Item (MLM v1.4.0), assets: bundle" + (", onnx" if out else ""))
