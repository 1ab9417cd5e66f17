"""Part 1 of ``bench/predict.py``: throughput of a bare forward pass, the usual torchgeo
recipe (a ``RasterDataset``, a ``GridGeoSampler`` of the training tile, each pixel predicted
once) and ours at the defaults and at the old ones, on a synthetic scene."""

from __future__ import annotations

import argparse
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import rasterio

from bench.predict_inputs import random_bundle, synthetic_scene
from bench.report import Results, cpu_seconds, load_text, log
from jmlnet_geo.evaluate.report import markdown_table


def bare_batches(scene_path: Path, predictor, plan) -> list:
    """Normalised float32 batches of every window of ``plan`` (our snapped grid), made ahead."""
    import torch

    from jmlnet_geo.tiling import grid_offsets

    with rasterio.open(scene_path) as ds:
        image = ds.read()
    size, stride = plan.window, plan.window - plan.overlap
    rows, cols = (grid_offsets(float(n), float(size), float(stride)) for n in image.shape[1:])
    tiles = [image[:, round(r) : round(r) + size, round(c) : round(c) + size]
             for r in rows for c in cols]  # fmt: skip
    batches = []
    for i in range(0, len(tiles), plan.batch_size):
        raw = torch.from_numpy(np.stack(tiles[i : i + plan.batch_size]).astype(np.float32))
        batches.append(predictor.normalization.apply(raw))
    return batches


def run_bare(model, batches) -> float:
    import torch

    start = time.perf_counter()
    with torch.inference_mode():
        for x in batches:
            model(x)
    return time.perf_counter() - start


def run_recipe(
    model, normalization, scene_path: Path, out_path: Path, tile: int, batch_size: int
) -> tuple[float, float]:
    """The usual torchgeo recipe (see the module docstring); (seconds, forward seconds)."""
    import torch
    from torch.utils.data import DataLoader
    from torchgeo.datasets import RasterDataset, stack_samples
    from torchgeo.samplers import GridGeoSampler, Units

    start = time.perf_counter()
    forward = 0.0
    dataset = RasterDataset(paths=[os.fspath(scene_path)])
    sampler = GridGeoSampler(dataset, size=tile, stride=tile, units=Units.PIXELS)
    loader = DataLoader(
        dataset, sampler=sampler, batch_size=batch_size, num_workers=1, collate_fn=stack_samples
    )
    with rasterio.open(scene_path) as src:
        profile, inverse = src.profile, ~src.transform
        height, width = src.height, src.width
    out = np.zeros((height, width), np.uint8)
    with torch.inference_mode():
        for batch in loader:
            t0 = time.perf_counter()
            classes = model(normalization.apply(batch["image"])).argmax(1).to(torch.uint8).numpy()
            forward += time.perf_counter() - t0
            for (x, y, _), tile_classes in zip(batch["bounds"], classes, strict=True):
                col, row = (round(v) for v in inverse * (x.start, y.stop))
                h, w = min(tile, height - row), min(tile, width - col)
                out[row : row + h, col : col + w] = tile_classes[:h, :w]
    profile.update(count=1, dtype="uint8", nodata=255, compress="deflate", photometric=None)
    profile.update(tiled=True, blockxsize=256, blockysize=256, interleave="band")
    with rasterio.open(out_path, "w", **profile) as dst:
        dst.write(out, 1)
    return time.perf_counter() - start, forward


#: The prediction defaults before issue 18 (the training tile as the window, a quarter overlap).
OLD = {"window": 256, "overlap": 64, "batch_size": 8}


def part_throughput(args: argparse.Namespace, work: Path, results: Results) -> None:
    """(a) bare forward on the defaults' windows, (b) the torchgeo recipe (each pixel once, the
    training tile), (c) ours at the defaults, (d) ours at the old defaults; interleaved runs."""
    import torch

    from jmlnet_geo.io.raster import open_scene
    from jmlnet_geo.predict import PredictOptions, Predictor

    side, tile = args.size, args.tile
    scene = synthetic_scene(work / f"synthetic_{side}.tif", side)
    bundle = random_bundle(work / "random_fast.safetensors", tile)
    predictor = Predictor(bundle, device="cpu")
    plan = predictor.plan(open_scene(scene), PredictOptions())
    variants = {
        "a": f"(a) bare forward, the defaults' windows in memory (batch {plan.batch_size})",
        "b": f"(b) torchgeo recipe, tile {tile}, batch 8, in-memory stitching",
        "c": f"(c) ours, defaults (window {plan.window}, overlap {plan.overlap})",
        "d": "(d) ours, old defaults (window 256, overlap 64, batch 8)",
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    cpus: dict[str, list[float]] = {k: [] for k in variants}
    windows, breakdown, recipe_forward = {}, {}, []
    batches = bare_batches(scene, predictor, plan)
    windows["a"] = sum(len(b) for b in batches)
    windows["b"] = math.ceil(side / tile) ** 2  # torchgeo: last tiles past the edges
    log(f"throughput: {side}² scene, plan {plan}; warming up")
    run_bare(predictor.model, batches[:1])
    for repeat in range(args.repeats):
        for key in list(variants) if repeat % 2 == 0 else list(reversed(variants)):
            out = work / f"throughput_{key}"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            cpu_start, start = cpu_seconds(), time.perf_counter()
            if key == "a":
                run_bare(predictor.model, batches)
            elif key == "b":
                model, normalization = predictor.model, predictor.normalization
                recipe_forward.append(
                    run_recipe(model, normalization, scene, out / "classes.tif", tile, 8)[1]
                )
            else:
                options = PredictOptions(**(OLD if key == "d" else {}))
                prediction = predictor.predict(scene, out, options)
                windows[key] = prediction.windows
                seconds = time.perf_counter() - start
                if not times[key] or seconds < min(times[key]):
                    breakdown[key] = dict.fromkeys(("forward", "blend", "write", "cog"), 0.0)
                    breakdown[key] |= prediction.phases | {"window": prediction.window}
            times[key].append(time.perf_counter() - start)
            cpus[key].append(cpu_seconds() - cpu_start)
            log(f"  run {repeat + 1}: {variants[key]}: {times[key][-1]:.1f} s, CPU "
                f"{cpus[key][-1]:.1f} s (load {load_text()})")  # fmt: skip
    del batches
    pixels = side * side / 1e6
    sizes = {"a": plan.window, "b": tile, "c": breakdown["c"]["window"], "d": 256}
    forwarded = {k: windows[k] * sizes[k] ** 2 / 1e6 for k in variants}
    best = {k: min(v) for k, v in times.items()}
    best_cpu = {k: min(v) for k, v in cpus.items()}
    scene_rate = {k: pixels / best[k] for k in variants}
    forwarded_rate = {k: forwarded[k] / best[k] for k in variants}
    rows = [
        [label, windows[key], f"{forwarded[key] / pixels:.2f}",
         " / ".join(f"{t:.1f}" for t in times[key]), f"{scene_rate[key]:.3f}",
         f"{forwarded_rate[key]:.3f}", f"{forwarded_rate[key] / forwarded_rate['a']:.2f}",
         f"{scene_rate[key] / scene_rate['b']:.2f}", " / ".join(f"{t:.1f}" for t in cpus[key]),
         f"{best_cpu['b'] / best_cpu[key]:.2f}"]
        for key, label in variants.items()
    ]  # fmt: skip
    header = (
        "variant | windows | forwarded / scene px | wall s (runs) | scene Mpx/s | "
        "forwarded Mpx/s | forwarded Mpx/s / (a) | scene Mpx/s / (b) | CPU s (runs) | "
        "scene Mpx per CPU s / (b)"
    )
    parts = [
        f"### 1. Throughput: {side} x {side} px uint8 RGB scene, fast preset (random weights), "
        f"CPU, {torch.get_num_threads()} torch threads; best of {args.repeats} interleaved runs\n",
        markdown_table(header, rows, align="lrrrrrrrrr"),
    ]
    rows = []
    for key in ("c", "d"):
        s, total = breakdown[key], best[key]
        other = total - s["forward"] - s["blend"] - s["cog"]
        rows.append([
            variants[key], f"{total:.1f}", f"{s['forward']:.1f} ({s['forward'] / total:.0%})",
            f"{s['blend']:.2f}", f"{s['write']:.2f}", f"{s['cog']:.2f}", f"{other:.1f}",
        ])  # fmt: skip
    recipe = recipe_forward[times["b"].index(best["b"])]
    rows.append([variants["b"], f"{best['b']:.1f}", f"{recipe:.1f} ({recipe / best['b']:.0%})",
                 "", "", "", f"{best['b'] - recipe:.1f}"])  # fmt: skip
    parts.append(
        "Where the time of the best runs goes (seconds):\n\n"
        + markdown_table(
            "variant | total | forward | blend | strip writes | COG copy | other", rows, "lrrrrrr"
        )
    )
    results.add("\n".join(parts))
