"""Benchmark of ``--cluster`` (Dask LocalCluster) against local runs; section ``distributed``.

1. Proposals (GrabCut, OpenCV on one thread per process) on ``--images`` NWPU VHR-10 images
   spread evenly over the sorted list: scenes/s in this process (1 worker), with the local
   ProcessPool of 2 workers (``write_proposals(workers=2)``, the earlier 1-vs-2 figure), and on
   a ``local:1`` and a ``local:2`` cluster (one task per scene). Every run's rasters are
   compared byte for byte with the first.
2. Prediction on ``--scenes`` NWPU images (an untrained fast-preset bundle: the cost per pixel
   does not depend on the weights): the local run with 2 torch threads vs a ``local:2`` cluster
   with 1 torch thread per worker (and the local run on 1 thread: what a second thread gives
   one process); class rasters compared byte for byte with the 2-thread local run's.
3. On paper, from the measured per-box (GrabCut, 1 thread) and per-forwarded-pixel (1 thread)
   costs and the parallel efficiency of ``local:2``: wall time of iSAID-scale proposals (655 451
   boxes) and of a 100 000 x 100 000 px mosaic on 64 workers.

Cluster start-up (and each worker's first imports, done in a warm-up call; for the prediction
also each worker's first prediction, as the local run gets one before it is timed) is timed
apart and left out of the rates. Every run goes ``--rounds`` times, interleaved (the clusters
stay up, idle, meanwhile); the best wall time counts. Commands, from the repository root, on
a quiet machine::

    OMP_NUM_THREADS=1 .venv/bin/python bench/distributed.py            # full: ~8 min, 2 cores
    OMP_NUM_THREADS=1 .venv/bin/python bench/distributed.py --smoke    # 4 images, 2 scenes
"""

from __future__ import annotations

import argparse
import contextlib
import filecmp
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root on the path, not bench/
    # (bench/ first on the path would make this file the `distributed` package)
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]
    sys.path.insert(0, os.fspath(Path(__file__).resolve().parents[1]))

from bench.data import SHARED, load_nwpu  # noqa: E402
from bench.report import (  # noqa: E402
    code_version,
    command_line,
    load_text,
    log,
    machine_description,
    update_section,
    work_folder,
)
from jmlnet_geo.children import tune_malloc  # noqa: E402
from jmlnet_geo.evaluate.report import markdown_table  # noqa: E402

ISAID_BOXES = 655_451  # iSAID train + val instances (the paper's scale)
MOSAIC = 100_000  # px per side of the mosaic estimate
WORKERS = 64


def warm(client) -> float:
    """Import the libraries on every worker; seconds."""
    start = time.perf_counter()
    client.run(lambda: [__import__(m) for m in ("jmlnet_geo.predict", "cv2")] and None)
    return time.perf_counter() - start


def proposals_part(data, work: Path, rounds: int) -> tuple[list[list[str]], dict]:
    from jmlnet_geo.cluster import cluster_client, scene_map
    from jmlnet_geo.proposals.compose import write_proposals
    from jmlnet_geo.proposals.stage import make_proposals

    sbs, names = data.scene_boxes, data.class_names
    runs: dict[str, tuple[float, float, list]] = {}  # name: (best wall, start-up, summaries)

    def timed(name: str, fn, startup: float = 0.0) -> None:
        start = time.perf_counter()
        summaries = fn(work / name)
        wall = time.perf_counter() - start
        log(f"proposals {name}: {wall:.1f} s")
        if name not in runs or wall < runs[name][0]:
            runs[name] = (wall, startup, summaries)

    with contextlib.ExitStack() as stack:  # both clusters up (idle) through every round
        clients = {}
        for n in (1, 2):
            begin = time.perf_counter()
            clients[n] = stack.enter_context(cluster_client(f"local:{n}"))
            clients[n] = (clients[n], time.perf_counter() - begin + warm(clients[n]))
        for _ in range(rounds):  # interleaved: a slow spell of the machine hits every run
            timed("in-process", lambda out: write_proposals(sbs, names, ["grabcut"], out))
            timed("pool-2", lambda out: write_proposals(sbs, names, ["grabcut"], out, workers=2))
            for n, (client, startup) in clients.items():
                timed(
                    f"local-{n}",
                    lambda out, c=client: (
                        make_proposals(
                            sbs, names, ["grabcut"], out, scene_map=scene_map(c)
                        ).summaries
                    ),
                    startup,
                )
    first = work / "in-process"
    boxes = sum(len(sb) for sb in sbs)
    rows = []
    for name, (wall, startup, _) in runs.items():
        same = all(
            filecmp.cmp(first / f.name, work / name / f.name, shallow=False)
            for f in first.glob("*.tif")
        )
        rate = len(sbs) / wall
        rows.append(
            [name, f"{wall:.1f}", f"{startup:.1f}", f"{rate:.3f}", f"{boxes / wall:.2f}",
             f"{rate / (len(sbs) / runs['in-process'][0]):.2f}", "yes" if same else "NO"]
        )  # fmt: skip
    summaries = runs["in-process"][2]
    per_box = sum(s.methods["grabcut"].seconds for s in summaries) / boxes
    ratio = runs["local-1"][0] / runs["local-2"][0]
    return rows, {"per_box": per_box, "ratio": ratio, "boxes": boxes, "scenes": len(sbs)}


def predict_part(data, work: Path, scenes: int, rounds: int) -> tuple[list[list[str]], dict]:
    import torch

    from jmlnet_geo.bundle import untrained_bundle
    from jmlnet_geo.cluster import THREADS_ENV, cluster_client
    from jmlnet_geo.cluster_predict import predict_scenes
    from jmlnet_geo.predict import PredictOptions, Predictor

    bundle = work / "model.safetensors"
    norm = {"mean": [100.0] * 3, "std": [50.0] * 3}
    colours = [[(37 * i) % 256, (91 * i) % 256, (151 * i) % 256] for i in range(1, 11)]
    untrained_bundle(bundle, list(data.class_names), colours[: len(data.class_names)], norm, 256)
    paths = [sb.scene.path for sb in data.scene_boxes[:scenes]]
    options = PredictOptions(device="cpu")
    predictor = Predictor(bundle, "cpu")
    for threads in (2, 1):  # first-call costs (at each thread count) out of the timing
        torch.set_num_threads(threads)
        predictor.predict(paths[0], work / "warm", options)
    best: dict[str, tuple[float, list]] = {}  # run: (best wall, predictions)

    def timed(name: str, fn) -> None:
        start = time.perf_counter()
        predictions = fn()
        wall = time.perf_counter() - start
        log(f"predict {name}: {wall:.1f} s")
        if name not in best or wall < best[name][0]:
            best[name] = (wall, predictions)

    begin = time.perf_counter()
    os.environ[THREADS_ENV] = "1"  # 1 torch thread per worker, whatever the cores
    with cluster_client("local:2") as client:
        warm(client)  # as the local run: a first prediction per worker, here in the start-up
        predict_scenes(client, bundle, paths[:2], work / "warm-cluster", options)
        startup = time.perf_counter() - begin
        for _ in range(rounds):  # interleaved, the cluster idle while the local runs go
            for threads in (2, 1):
                torch.set_num_threads(threads)
                timed(
                    f"local, {threads} torch thread{'s' * (threads > 1)}",
                    lambda: [predictor.predict(p, work / "pred-local", options) for p in paths],
                )
            timed(
                "local:2, 1 thread each",
                lambda: predict_scenes(client, bundle, paths, work / "pred-cluster", options),
            )
    local_wall, local = best["local, 2 torch threads"]
    cluster_wall, remote = best["local:2, 1 thread each"]

    def same(predictions: list) -> str:
        pairs = zip(local, predictions, strict=True)
        identical = all(filecmp.cmp(a.classes, b.classes, shallow=False) for a, b in pairs)
        return "yes" if identical else "NO"

    mpx = sum(p.pixels for p in local) / 1e6
    forwarded = sum(p.windows * p.window**2 for p in remote)
    rows = [
        [name, f"{wall:.1f}", "-" if name.startswith("local,") else f"{startup:.1f}",
         f"{mpx / wall:.2f}", f"{local_wall / wall:.2f}",
         "-" if predictions is local else same(predictions)]
        for name, (wall, predictions) in best.items()
    ]  # fmt: skip
    per_px = sum(p.seconds for p in remote) / forwarded  # worker seconds per forwarded px
    return rows, {"per_px": per_px, "ratio": local_wall / cluster_wall, "predictor": predictor}


def estimates(prop: dict, pred: dict) -> str:
    """The wall times on 64 workers, from the measured single-thread costs."""
    from types import SimpleNamespace

    efficiency = min(1.0, prop["ratio"] / 2)
    boxes_wall = ISAID_BOXES * prop["per_box"] / (WORKERS * efficiency)
    from jmlnet_geo.predict_windows import panel_columns, panel_order
    from jmlnet_geo.tiling import grid_offsets

    plan = pred["predictor"].plan(SimpleNamespace(height=MOSAIC, width=MOSAIC))
    columns = grid_offsets(MOSAIC, plan.window, plan.window - plan.overlap)
    per_row = len(panel_order(columns, plan.window, panel_columns(MOSAIC, plan.panel)))
    forwarded = len(columns) * per_row * plan.window**2  # a square mosaic: as many rows
    rows_per_block = (256 * 2**20) // MOSAIC  # the default --split-pixels
    halo = (rows_per_block + plan.window) / rows_per_block  # each block redoes a window row
    mosaic_wall = forwarded * halo * pred["per_px"] / (WORKERS * efficiency)
    return (
        f"On paper, {WORKERS} workers of one thread, the parallel efficiency of `local:2` "
        f"({100 * efficiency:.0f} %) assumed to hold:\n\n"
        f"- iSAID-scale proposals, {ISAID_BOXES} boxes x {1000 * prop['per_box']:.0f} ms "
        f"(GrabCut per box, 1 thread, NWPU): **{boxes_wall / 3600:.1f} h**.\n"
        f"- A {MOSAIC} x {MOSAIC} px mosaic: the local plan for that width is window "
        f"{plan.window} px, overlap {plan.overlap}, panels of {plan.panel} columns "
        f"({forwarded / MOSAIC**2:.2f} forwarded px per px), row blocks of {rows_per_block} "
        f"rows redo one window row each (x{halo:.2f}); "
        f"{1e9 * pred['per_px']:.0f} ns per forwarded px (1 thread): "
        f"**{mosaic_wall / 3600:.1f} h**. Not included: the client writing the blocks and the "
        "COG copy, serial (one process, about the local run's write + cog phases).\n"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--work", type=Path, help="Kept folder for the files (default: temp).")
    parser.add_argument("--images", type=int, default=40, help="NWPU images of the proposals.")
    parser.add_argument("--scenes", type=int, default=8, help="NWPU images predicted.")
    parser.add_argument("--rounds", type=int, default=2, help="Interleaved runs; best counts.")
    parser.add_argument("--smoke", action="store_true", help="4 images, 2 scenes, no update.")
    parser.add_argument("--output", default="BENCHMARKS.md")
    args = parser.parse_args(argv)
    if args.smoke:
        args.images, args.scenes, args.rounds = 4, 2, 1
    if not (args.data / "nwpu_vhr10_train").is_dir():
        raise SystemExit(f"{args.data}/nwpu_vhr10_train is absent; nothing measured")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    tune_malloc()  # as jmlgeo does (its children and Dask workers too)
    with work_folder(args.work, "bench-distributed-") as work:
        data = load_nwpu(args.data, work)
        step = max(1, len(data.scene_boxes) // args.images)
        data.scene_boxes = data.scene_boxes[::step][: args.images]
        load = load_text()
        prop_rows, prop = proposals_part(data, work, args.rounds)
        pred_rows, pred = predict_part(data, work, args.scenes, args.rounds)
        prop_head = "run | wall s | start-up s | scenes/s | boxes/s | x in-process | same bytes"
        pred_head = "run | wall s | start-up s | Mpx/s | x local 2 threads | same bytes"
        text = (
            f"Measured {time.strftime('%Y-%m-%d')} on {machine_description()}, code "
            f"{code_version()}, load average at the start {load}. Command: `{command_line()}`.\n\n"
            f"Each run {args.rounds} times, interleaved; the best wall time counts.\n\n"
            f"Proposals (GrabCut) on {prop['scenes']} NWPU images ({prop['boxes']} boxes); "
            "start-up: the cluster's start and every worker's imports, not in the rates:\n\n"
            + markdown_table(prop_head, prop_rows)
            + f"\n`local:2` / `local:1`: **{prop['ratio']:.2f}x** (target >= 1.8).\n\n"
            f"Prediction of {args.scenes} NWPU images (untrained fast bundle, CPU; the 1-thread "
            "local run shows what a second thread gives one process):\n\n"
            + markdown_table(pred_head, pred_rows)
            + f"\nlocal 2 threads / `local:2`: **{pred['ratio']:.2f}x** (target: within 10 %).\n\n"
            + estimates(prop, pred)
        )
        print(text)
        if not args.smoke:
            update_section("distributed", text, args.output)


if __name__ == "__main__":
    main()
