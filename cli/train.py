"""``jmlgeo train``: from boxes to a trained segmenter bundle in one command."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from jmlnet_geo.cli.progress import PROGRESS_OPTION, ProgressDisplay, ProgressMode
from jmlnet_geo.cli.proposals import CLUSTER_OPTION, cluster_scene_map


def train(
    scenes: list[Path] = typer.Argument(..., help="Scenes to train on (GeoTIFF or images)."),
    boxes: Path = typer.Option(..., "--boxes", help="Box layer (.gpkg, .geojson, .shp, .fgb)."),
    out: Path = typer.Option(Path("run"), "--out", help="Run folder (outputs, cache, bundle)."),
    preset: str = typer.Option("fast", "--preset", help="fast (CPU-friendly) or paper."),
    head: str | None = typer.Option(
        None, "--head", help="deeplabv3plus (fast's default) or deeplabv3 (paper's)."
    ),
    proposals: str | None = typer.Option(
        None, "--proposals", help="Stage-2 proposals, comma-separated (e.g. grabcut,crf)."
    ),
    stage1_proposal: str | None = typer.Option(
        None,
        "--stage1-proposal",
        help="Stage-1 label: a proposal, or auto (the stage-2 one agreeing best with the rest).",
    ),
    loss: str | None = typer.Option(None, "--loss", help="Stage-2 loss: ce, ma, mm or bmm."),
    stage1_steps: int | None = typer.Option(None, "--stage1-steps", min=0),
    stage2_steps: int | None = typer.Option(None, "--stage2-steps", min=0),
    batch_size: int | None = typer.Option(
        None, "--batch-size", min=2, help="Tiles a step (2 or more: batch norm needs two)."
    ),
    tile_size: int | None = typer.Option(None, "--tile-size", min=32),
    optimizer: str | None = typer.Option(
        None, "--optimizer", help="adamw (fast's default) or sgd (paper's)."
    ),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate."),
    warmup: int | None = typer.Option(
        None, "--warmup", min=0, help="Steps of linear warm-up at the start of each stage."
    ),
    weights: str | None = typer.Option(
        None, "--weights", help="imagenet, a torchvision weight name, a file, or none."
    ),
    seed: int | None = typer.Option(None, "--seed"),
    box_tiles: float | None = typer.Option(
        None,
        "--box-tiles",
        min=0.0,
        max=1.0,
        help="Share of training tiles centred on boxes (default 0; 0.5 measured better for "
        "scattered objects, worse for densely parked ones unless with --box-outside-weight 0: "
        "README).",
    ),
    box_loss_weight: float | None = typer.Option(
        None, "--box-loss-weight", min=0.0, help="Box-consistency loss weight (0: off; fast: 1)."
    ),
    box_pairwise_weight: float | None = typer.Option(
        None,
        "--box-pairwise-weight",
        min=0.0,
        help="Box loss's pairwise term (0, default: projection only).",
    ),
    box_margin: float | None = typer.Option(
        None,
        "--box-margin",
        min=0.0,
        help="Box loss's projection window beside a box, fraction of its side (default 0.5).",
    ),
    box_skip_neighbours: bool | None = typer.Option(
        None,
        "--box-skip-neighbours/--box-score-neighbours",
        help="Leave other boxes of a box's class out of its projection window.",
    ),
    box_outside_weight: float | None = typer.Option(
        None,
        "--box-outside-weight",
        min=0.0,
        help="Box loss's background term outside every box (default 1; 0: off, measured better "
        "for densely parked objects, worse where unboxed look-alikes abound: README).",
    ),
    box_outside_hard: bool | None = typer.Option(
        None,
        "--box-outside-hard/--box-outside-all",
        help="Box loss's outside term on the pixels predicted as a class only (default: all; "
        "measured better for densely parked objects, worse on NWPU: README).",
    ),
    rounds: int | None = typer.Option(
        None, "--rounds", min=1, help="Stage-2 rounds, each refreshing the model proposal."
    ),
    val_every: int | None = typer.Option(
        None, "--val-every", min=1, help="Validate every N steps."
    ),
    checkpoint_every: int | None = typer.Option(
        None, "--checkpoint-every", min=1, help="Save a resumable checkpoint every N steps."
    ),
    detector_steps: int | None = typer.Option(
        None, "--detector-steps", min=1, help="detcam/camcut: steps of the detector."
    ),
    detector_batch_size: int | None = typer.Option(None, "--detector-batch-size", min=1),
    detector_tile_size: int | None = typer.Option(None, "--detector-tile-size", min=32),
    tau_low: float | None = typer.Option(
        None, "--tau-low", help="DetCAM threshold of D_l (the DetCAM proposal)."
    ),
    tau_high: float | None = typer.Option(
        None, "--tau-high", help="DetCAM threshold of D_h (CAMCut's sure foreground)."
    ),
    camcut_low: str | None = typer.Option(
        None, "--camcut-low", help="CAMCut's in-box pixels below tau_low: sure or probable."
    ),
    detector_box_tiles: float | None = typer.Option(
        None, "--detector-box-tiles", min=0.0, max=1.0, help="Detector tiles placed on boxes."
    ),
    drop_doubtful: float | None = typer.Option(
        None,
        "--drop-doubtful",
        help="Share of the boxes, the most doubtful by the audit, that training ignores "
        "(0-1, default 0: none; listed in dropped_boxes.gpkg).",
    ),
    drop_doubtful_by: str | None = typer.Option(
        None,
        "--drop-doubtful-by",
        help="Who picks the ignored boxes: model (default: picked again by the audit with the "
        "stage-1 model; stage 1 is then trained again) or proposals (the audit without a model).",
    ),
    class_field: str = typer.Option("class", "--class-field", help="Column with the class."),
    classes: str | None = typer.Option(None, "--classes", help="Fixed class order, a,b,c."),
    truth: Path | None = typer.Option(None, "--truth", help="Truth for validation mIoU."),
    masks: Path | None = typer.Option(
        None, "--masks", help="True masks to train on (all scenes: full supervision)."
    ),
    masks_fraction: float | None = typer.Option(
        None,
        "--masks-fraction",
        help="With --masks: share of scenes trained on them (default 1: all; the rest on "
        "proposals). For validation masks use --truth.",
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    devices: int = typer.Option(1, "--devices", min=1, help="Processes / GPUs (per node)."),
    num_nodes: int = typer.Option(
        1, "--num-nodes", min=1, help="Machines (Lightning num_nodes; README: Scaling out)."
    ),
    strategy: str = typer.Option("auto", "--strategy", help="Lightning strategy, e.g. ddp."),
    workers: int = typer.Option(0, "--workers", min=0, help="Proposal processes (0: all)."),
    loader_workers: int | None = typer.Option(None, "--loader-workers", min=0),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run."),
    force: bool = typer.Option(False, "--force", help="Delete a previous run in --out."),
    cluster: str | None = CLUSTER_OPTION,
    progress: ProgressMode = PROGRESS_OPTION,
) -> None:
    """Proposals, segmenter stage 1 (CE) and stage 2 (multi-label loss), then the bundle.

    detcam or camcut among the proposals first trains a detector on the boxes.
    """
    import dataclasses

    from jmlnet_geo.config import override, override_detector, preset_config
    from jmlnet_geo.train.pipeline import TrainInputs
    from jmlnet_geo.train.pipeline import train as run
    from jmlnet_geo.train.run_folder import is_primary_process

    if cluster is not None:  # a bad address fails before any work
        from jmlnet_geo.cluster import parse_cluster

        parse_cluster(cluster)
    config = override(
        preset_config(preset),
        proposals=_names(proposals),
        head=head,
        stage1_proposal=stage1_proposal,
        loss=loss,
        stage1_steps=stage1_steps,
        stage2_steps=stage2_steps,
        batch_size=batch_size,
        tile_size=tile_size,
        optimizer=optimizer,
        lr=lr,
        warmup=warmup,
        seed=seed,
        box_tiles=box_tiles,
        box_loss_weight=box_loss_weight,
        box_pairwise_weight=box_pairwise_weight,
        box_margin=box_margin,
        box_skip_neighbours=box_skip_neighbours,
        box_outside_weight=box_outside_weight,
        box_outside_hard=box_outside_hard,
        rounds=rounds,
        loader_workers=loader_workers,
        val_every=val_every,
        checkpoint_every=checkpoint_every,
        drop_doubtful=drop_doubtful,
        drop_doubtful_by=drop_doubtful_by,
    )
    config = override_detector(
        config,
        steps=detector_steps,
        batch_size=detector_batch_size,
        tile_size=detector_tile_size,
        tau_low=tau_low,
        tau_high=tau_high,
        camcut_low=camcut_low,
        box_tiles=detector_box_tiles,
    )
    if weights is not None:  # "none" must reach the config as None (override skips None)
        chosen = None if weights.lower() == "none" else weights
        config = dataclasses.replace(
            config, segmenter=dataclasses.replace(config.segmenter, weights=chosen)
        )
    config = dataclasses.replace(
        config,
        class_field=class_field,
        masks_fraction=masks_fraction,
        device=device,
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
    )
    display = ProgressDisplay(progress if is_primary_process() else ProgressMode.none)
    inputs = TrainInputs(
        scenes=tuple(scenes),
        boxes=boxes,
        classes=_names(classes),
        truth=truth,
        masks=masks,
    )
    with cluster_scene_map(cluster if is_primary_process() else None) as scene_map:
        result = run(
            inputs,
            config,
            out,
            resume=resume,
            force=force,
            workers=workers or os.cpu_count() or 1,
            stage_progress=display.stage,
            message=display.message,
            scene_map=scene_map,
        )
    if not is_primary_process():
        return
    if result.reused:
        display.message(f"reused finished stages: {', '.join(result.reused)}")
    if result.validation:
        display.message(f"validation mIoU {100 * result.validation['miou']:.2f}")
    display.message(f"bundle: {result.bundle}")
    display.output("bundle", result.bundle)
    display.done()


def _names(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    return tuple(t.strip().lower() for t in text.split(",") if t.strip())
