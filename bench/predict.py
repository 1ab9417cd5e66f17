"""Benchmark of streaming sliding-window prediction (``jmlgeo predict``, issues 6 and 18).

Parts: ``throughput`` (bare forward on the defaults' windows, torchgeo recipe, ours at the
defaults and at the old ones, on a synthetic scene), ``memory`` (peak RSS/PSS of a fresh process
per scene size, defaults), ``seams`` (agreement under a half-stride shift, tiled and untiled, for
the defaults and their variants; real images as a mosaic with ``--seams-mosaic``). Each part
rewrites its own section of BENCHMARKS.md; the reading is written by hand after it. The settled
``malloc`` part (glibc's settings against ``tune_malloc``) left the script; its table stays in
BENCHMARKS.md and the script in git history.

    .venv/bin/python bench/predict.py [--quick] [--parts throughput,memory,seams]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import resource
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import psutil
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin
from rasterio.windows import Window

if __package__ in (None, ""):  # run as a file (python bench/predict.py)
    sys.path.insert(0, os.fspath(Path(__file__).resolve().parents[1]))

from bench.report import (
    REPO,
    SHARED,
    Results,
    Run,
    bench_parser,
    cpu_seconds,
    load_text,
    log,
    package_versions,
    update_section,
    work_folder,
)
from jmlnet_geo.children import tune_malloc
from jmlnet_geo.evaluate.report import markdown_table

SECTION = "predict"
PARTS = ("throughput", "memory", "seams")
CLASSES = ["building", "storage_tank", "vehicle"]
COLOURS = [[230, 159, 0], [86, 180, 233], [0, 158, 115]]
TRAINED = REPO / "demo" / "run" / "model.safetensors"
ISAID_IMAGE = SHARED / "isaid_devkit_samples" / "val" / "images" / "P0003.png"
PIXEL = 0.5  # metres; the synthetic scenes and the random bundle agree on it


# --- inputs -----------------------------------------------------------------------------------


def synthetic_scene(path: Path, side: int, strip: int = 512) -> Path:
    """A uint8 RGB GeoTIFF (tiled 256, DEFLATE) of ``side``² pixels, written strip by strip.

    Smooth shading, noise and bright squares on a lattice (something for the model to see). The
    content of a pixel depends on its position only, not on the strip height; the file is reused
    when it already exists with the right size.
    """
    if path.exists():
        with rasterio.open(path) as ds:
            if (ds.width, ds.height, ds.count) == (side, side, 3):
                return path
    profile = {"driver": "GTiff", "width": side, "height": side, "count": 3, "dtype": "uint8"}
    profile |= {"tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate"}
    profile |= {"interleave": "pixel", "photometric": "RGB", "crs": "EPSG:32633"}
    profile["transform"] = from_origin(431200.0, 5052800.0, PIXEL, PIXEL)
    tmp = path.with_name(f".{path.name}.tmp")
    start = time.perf_counter()
    xs = np.arange(side)
    shade_x = np.sin(xs / 37.0).astype(np.float32)
    in_x = (xs % 64) < 24
    with rasterio.open(tmp, "w", **profile) as ds:
        for row in range(0, side, strip):
            height = min(strip, side - row)
            ys = np.arange(row, row + height)
            shade = 110 + 40 * np.cos(ys / 53.0).astype(np.float32)[:, None] * shade_x[None, :]
            square = ((xs // 64)[None, :] + 7 * (ys // 64)[:, None]) % 5 == 0
            square &= in_x[None, :] & ((ys % 64) < 24)[:, None]
            noise = np.random.default_rng([side, row]).integers(0, 24, (3, height, side), np.uint8)
            bands = np.empty((3, height, side), np.uint8)
            for band in range(3):
                value = shade + 12 * band + 90 * square * (band != 1)
                bands[band] = np.clip(value, 1, 230).astype(np.uint8) + noise[band]
            ds.write(bands, window=Window(0, row, side, height))
    os.replace(tmp, path)
    log(f"wrote {path.name} ({side}² px) in {time.perf_counter() - start:.0f} s")
    return path


def random_bundle(path: Path, tile: int) -> Path:
    """A randomly initialised ``fast`` segmenter as a bundle (3 bands, 3 classes)."""
    from jmlnet_geo.bundle import untrained_bundle

    normalization = {"mean": [110.0, 120.0, 110.0], "std": [40.0] * 3}
    names = ["red", "green", "blue"]
    untrained_bundle(path, CLASSES, COLOURS, normalization, tile, PIXEL, band_names=names)
    return path


def trained_bundle(args: argparse.Namespace) -> tuple[Path, str]:
    """The trained bundle of the seams part (``make demo`` writes the default one)."""
    if not args.trained.exists():
        sys.exit(f"{args.trained}: no such bundle; run `make demo` or give --trained BUNDLE")
    note = " (the demo bundle, trained on sample_data/scene.tif)" * (args.trained == TRAINED)
    return args.trained, f"`{args.trained}`{note}"


# --- part 1: throughput -----------------------------------------------------------------------


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


# --- part 2: memory ---------------------------------------------------------------------------


def tree_memory(root: int) -> tuple[int, int]:
    """(sum of RSS, sum of PSS) in kB of process ``root`` and its descendants (psutil)."""
    rss = pss = 0
    with contextlib.suppress(psutil.Error):
        tree = psutil.Process(root)
        for proc in [tree, *tree.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):  # a worker may end between the two calls
                memory = proc.memory_full_info()
                rss, pss = rss + memory.rss // 1024, pss + memory.pss // 1024
    return rss, pss


def measure_child(kind: str, bundle: Path, scene: Path, out: Path) -> dict:
    """Run one prediction in a fresh process; its own report plus the sampled tree peaks."""
    command = [sys.executable, os.fspath(Path(__file__).resolve()), "--child", kind]
    command += ["--child-bundle", os.fspath(bundle), "--child-scene", os.fspath(scene)]
    command += ["--child-out", os.fspath(out)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    peak_rss = peak_pss = 0
    while proc.poll() is None:
        rss, pss = tree_memory(proc.pid)
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        time.sleep(0.2)
    stdout = proc.stdout.read() if proc.stdout else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} prediction of {scene.name} failed ({proc.returncode})")
    report = json.loads(stdout.strip().splitlines()[-1])
    report.update(tree_rss_kb=peak_rss, tree_pss_kb=peak_pss)
    return report


def child_main(args: argparse.Namespace) -> int:
    """Inside the measured subprocess: load, predict, report (JSON on the last stdout line)."""
    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
    from jmlnet_geo.predict import Predictor

    predictor = Predictor(args.child_bundle, device="cpu")
    loaded = psutil.Process().memory_info().rss // 1024
    out = Path(args.child_out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    plan = {}
    if args.child == "ours":
        result = predictor.predict(args.child_scene, out)
        plan = {"window": result.window, "overlap": result.overlap}
    else:
        tile = predictor.card.tile_size
        run_recipe(
            predictor.model, predictor.normalization, Path(args.child_scene), out / "r.tif", tile, 8
        )
    report = plan | {
        "seconds": time.perf_counter() - start,
        "loaded_kb": loaded,
        "main_max_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "workers_max_rss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    }
    print(json.dumps(report), flush=True)
    return 0


def part_memory(args: argparse.Namespace, work: Path, results: Results) -> None:
    tile = args.tile
    bundle = random_bundle(work / "random_fast.safetensors", tile)
    measured: list[tuple[str, int, dict]] = []
    runs = [("ours", side) for side in args.memory_sizes]
    runs += [("recipe", side) for side in args.recipe_sizes]
    for kind, side in runs:
        scene = synthetic_scene(work / f"synthetic_{side}.tif", side)
        out = work / f"memory_{kind}_{side}"
        shutil.rmtree(out, ignore_errors=True)
        log(f"memory: {kind} on {side}² ...")
        report = measure_child(kind, bundle, scene, out)
        shutil.rmtree(out, ignore_errors=True)
        measured.append((kind, side, report))
        log(
            f"  {report['seconds']:.0f} s, main {report['main_max_rss_kb'] / 2**20:.2f} GiB, "
            f"tree PSS {report['tree_pss_kb'] / 2**20:.2f} GiB (load {load_text()})"
        )

    def gb(kb: float) -> str:
        return f"{kb * 1024 / 1e9:.2f}"

    def label(kind: str, r: dict) -> str:
        if kind == "ours":
            return f"ours, defaults (window {r['window']}, overlap {r['overlap']})"
        return f"(b) torchgeo recipe (tile {tile}, batch 8)"

    kbs = ("loaded_kb", "main_max_rss_kb", "workers_max_rss_kb", "tree_rss_kb", "tree_pss_kb")
    rows = [
        [label(kind, r), f"{side} x {side}", f"{side * side * 3 / 1e9:.2f}", f"{r['seconds']:.0f}",
         *(gb(r[k]) for k in kbs)]
        for kind, side, r in measured
    ]  # fmt: skip
    header = (
        "prediction | scene (px) | raw scene (GB) | time (s) | RSS after loading the model | "
        "max RSS, main process | max RSS, child processes (reader workers, if any) | "
        "peak tree RSS (sampled) | peak tree PSS (sampled)"
    )
    results.add(
        "### 2. Peak memory (GB = 10^9 bytes): fast preset, CPU, a fresh process per "
        "prediction\n\n" + markdown_table(header, rows, align="llrrrrrrr")
    )


# --- part 3: seams ----------------------------------------------------------------------------


def read_image(path: Path) -> tuple[np.ndarray, dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as ds:
            return ds.read(), ds.profile


def write_crop(src: Path, dst: Path, dy: int, dx: int) -> Path:
    """A GeoTIFF of ``src`` without its first ``dy`` rows and ``dx`` columns, same georeference."""
    image, profile = read_image(src)
    crop = image[:, dy:, dx:]
    out = {"driver": "GTiff", "width": crop.shape[2], "height": crop.shape[1]}
    out |= {"count": crop.shape[0], "dtype": crop.dtype.name, "nodata": profile.get("nodata")}
    if profile.get("crs") is not None:  # plain images stay plain (identity transform)
        out.update(crs=profile["crs"], transform=profile["transform"] * Affine.translation(dx, dy))
    with rasterio.open(dst, "w", **out) as ds:
        ds.write(crop)
    return dst


def predict_classes(predictor, scene: Path, out: Path, **options) -> tuple[np.ndarray, object]:
    """Class ids (uint8 H x W) of one prediction into ``out`` (``PredictOptions`` fields as
    keywords), and its ``Prediction``."""
    from jmlnet_geo.predict import PredictOptions

    result = predictor.predict(scene, out, PredictOptions(**options))
    return read_image(result.classes)[0][0], result


def predict_untiled(predictor, scene: Path, out: Path) -> np.ndarray:
    """Class ids from one window covering the whole scene (its longer side, rounded up to 16)."""
    with rasterio.open(scene) as ds:
        side = math.ceil(max(ds.width, ds.height) / 16) * 16
    return predict_classes(predictor, scene, out, window=side, overlap=0)[0]


def agreement(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(pixels where both are valid and agree, pixels where both are valid)."""
    valid = (a != 255) & (b != 255)
    return np.array([(a[valid] == b[valid]).sum(), valid.sum()])


def mosaic(paths: Sequence[Path], side: int, out: Path) -> Path:
    """A side x side plain GeoTIFF: one image and its mirror images (continuous at the joins),
    or several images' centres in a k x k grid of cells (k = ceil(sqrt(n)), reflect-padded)."""
    images = [read_image(p)[0] for p in paths]
    if len(images) == 1:
        data = images[0]
        reps = [side // (2 * n) + 1 for n in data.shape[1:]]
        row = np.concatenate([data, data[:, :, ::-1]] * reps[1], axis=2)
        canvas = np.concatenate([row, row[:, ::-1]] * reps[0], axis=1)[:, :side, :side]
    else:
        k = math.ceil(math.sqrt(len(images)))
        cell = side // k
        canvas = np.zeros((images[0].shape[0], side, side), images[0].dtype)
        for i in range(k * k):
            image = images[i % len(images)]
            pad = [(0, 0), *((0, max(cell - n, 0)) for n in image.shape[1:])]
            image = np.pad(image, pad, mode="reflect")
            y, x = ((n - cell) // 2 for n in image.shape[1:])
            canvas[:, i // k * cell : (i // k + 1) * cell, i % k * cell : (i % k + 1) * cell] = (
                image[:, y : y + cell, x : x + cell]
            )
    profile = {"driver": "GTiff", "width": side, "height": side, "count": canvas.shape[0]}
    with rasterio.open(out, "w", **profile, dtype=canvas.dtype.name) as ds:
        ds.write(canvas)
    return out


def seam_groups(args: argparse.Namespace, work: Path) -> list[tuple[str, list[Path]]]:
    """The scenes of the seams part, in groups pooled into one row each: (label, paths)."""
    if args.seams_scenes:
        names = ", ".join(p.name for p in args.seams_scenes[:3])
        more = f" and {len(args.seams_scenes) - 3} more" if len(args.seams_scenes) > 3 else ""
        label = f"{args.seams_label or 'scenes'}: {len(args.seams_scenes)} ({names}{more})"
        if not args.seams_mosaic:
            return [(label, list(args.seams_scenes))]
        path = mosaic(args.seams_scenes, args.seams_mosaic, work / "seams_mosaic.tif")
        return [(f"{label}, their centres in a {args.seams_mosaic}² mosaic", [path])]
    scene = REPO / "sample_data/scene.tif"
    groups = [
        ("sample_data/scene.tif (synthetic, training scene)", [scene]),
        ("sample_data/scene.tif and mirror images, 2048² mosaic",
         [mosaic([scene], 2048, work / "sample_mosaic.tif")]),
    ]  # fmt: skip
    if ISAID_IMAGE.exists():
        groups.append(("iSAID val P0003.png (real, out of domain)", [ISAID_IMAGE]))
    return groups


#: The seams part's variants: (label, PredictOptions fields); shift = half the plan's stride.
SEAM_VARIANTS = [
    ("old defaults (window 256, overlap 64)", OLD),
    ("defaults", {}),
    ("defaults, cosine weights", {"weights": "cosine"}),
    ("defaults, overlap 512", {"overlap": 512}),
    ("defaults, --tta flips", {"tta": "flips"}),
]


def part_seams(args: argparse.Namespace, work: Path, results: Results) -> None:
    """Agreement with a half-stride-shifted copy, tiled (each variant) and untiled (the same
    shift), pooled over a group's scenes; the excess of the untiled over the tiled agreement."""
    from jmlnet_geo.predict import Predictor

    bundle, origin = trained_bundle(args)
    predictor = Predictor(bundle, device="cpu")
    rows, untiled_cache = [], {}
    for label, paths in seam_groups(args, work):
        sizes = set()
        for path in paths:
            with rasterio.open(path) as ds:  # the header only
                sizes.add(f"{ds.width} x {ds.height}")
        for name, options in SEAM_VARIANTS:
            tiled, untiled, seconds, scene_px = np.zeros(2), np.zeros(2), 0.0, 0
            differ_margins, same_margins, plans = [], [], set()
            for path in paths:
                folder = work / "seams" / path.stem / re.sub(r"[^a-z0-9]+", "-", name)
                start = time.perf_counter()
                full, result = predict_classes(
                    predictor, path, folder / "full", probabilities=True, **options
                )
                seconds, scene_px = seconds + time.perf_counter() - start, scene_px + full.size
                plans.add(f"{result.window} / {result.overlap}")
                shift = (result.window - result.overlap) // 2
                crop = write_crop(path, folder / f"crop_{shift}.tif", shift, shift)
                shifted, _ = predict_classes(predictor, crop, folder / "shifted", **options)
                common = full[shift:, shift:]
                tiled += agreement(common, shifted)
                if (path, shift) not in untiled_cache:
                    whole = predict_untiled(predictor, path, folder / "whole")
                    whole_shifted = predict_untiled(predictor, crop, folder / "whole_shifted")
                    untiled_cache[path, shift] = agreement(whole[shift:, shift:], whole_shifted)
                untiled += untiled_cache[path, shift]
                top2 = np.sort(read_image(result.probabilities)[0][:, shift:, shift:], axis=0)
                margin = (top2[-1].astype(np.int16) - top2[-2]) / 255
                valid = (common != 255) & (shifted != 255)
                differ_margins.append(margin[valid & (common != shifted)])
                same_margins.append(margin[valid & (common == shifted)])
            pixels, (tiled, untiled) = tiled[1], (tiled[0] / tiled[1], untiled[0] / untiled[1])
            differ, same = np.concatenate(differ_margins), np.concatenate(same_margins)
            rows.append([
                label, " / ".join(sorted(sizes)) if len(sizes) <= 2 else f"{len(sizes)} sizes",
                name, ", ".join(sorted(plans)), f"{pixels / 1e6:.2f}", f"{100 * tiled:.2f} %",
                f"{100 * untiled:.2f} %", f"{100 * (untiled - tiled):+.2f}",
                f"{seconds / scene_px * 1e6:.2f}",
                f"{np.median(differ):.2f} / {np.median(same):.2f}" if differ.size else "-",
            ])  # fmt: skip
            log(f"seams: {label}, {name}: {100 * tiled:.2f} % agree (untiled model "
                f"{100 * untiled:.2f} %)")  # fmt: skip
    header = (
        "scenes | size (px) | options | window / overlap | compared Mpx | "
        "tiled: agreement with the shifted copy | untiled: the same, one window each | "
        "seam excess (points) | s per scene Mpx | median top-2 margin, differing / agreeing"
    )
    results.add(
        f"### 3. Seams: bundle {origin}, CPU (agreement under a shift of half the stride; "
        "margin: top-2 class probabilities, 0 = tie)\n\n"
        + markdown_table(header, rows, align="lllrrrrrrr")
    )


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = bench_parser(
        "Benchmark streaming prediction: throughput, peak memory, seams; each part updates its "
        "own section.", PARTS, "Folder for scenes and outputs, kept (default: temporary).",
    )  # fmt: skip
    add = parser.add_argument
    add("--size", type=int, help="Throughput scene side (default 4096; quick 2048).")
    add("--tile", type=int, default=256, help="Training tile of the random bundle (parts 1, 2): "
        "the recipe's tile.")  # fmt: skip
    add("--repeats", type=int, help="Runs per throughput variant (default 3; quick 1).")
    add("--memory-sizes", type=int, nargs="+", help="Our memory runs' scene sides.")
    add("--recipe-sizes", type=int, nargs="*", help="The recipe's memory runs' scene sides.")
    add("--trained", type=Path, default=TRAINED, help="Bundle of the seams part.")
    add("--seams-scenes", type=Path, nargs="+", help="Scenes of the seams part, pooled.")
    add("--seams-label", help="Names a seams run; its own section predict-seams-LABEL.")
    add("--seams-mosaic", type=int, help="Pack the --seams-scenes' centres into one mosaic "
        "of this side (px), not pooled apart (a scene under a window has no seam).")  # fmt: skip
    add("--child", choices=["ours", "recipe"], help=argparse.SUPPRESS)
    for name in ("--child-bundle", "--child-scene", "--child-out"):
        add(name, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.size = args.size or (2048 if args.quick else 4096)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.memory_sizes = args.memory_sizes or ([2048, 4096] if args.quick else [2048, 8192, 20000])
    if args.recipe_sizes is None:
        args.recipe_sizes = [2048] if args.quick else [2048, 8192]
    return args


TITLES = {"throughput": "part 1: throughput", "memory": "part 2: peak memory",
          "seams": "part 3: seams"}  # fmt: skip
LOAD = " (other jobs share the cores; times are wall clock, compare the ratios)"
INTRO = "## Prediction: throughput, peak memory, seams (`bench/predict.py`)"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    tune_malloc()  # as jmlgeo does (its children and Dask workers too)
    if args.child:
        return child_main(args)
    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
    import torch  # noqa: F401 - so that machine_description names a GPU when one is used

    versions = package_versions(["torch", "torchgeo", "rasterio", "segmentation-models-pytorch"])
    versions += f"; GDAL {rasterio.__gdal_version__}"
    with work_folder(args.work, "jmlgeo-bench-predict-") as work:
        for part in (p for p in PARTS if p in args.parts):
            results, run = Results(), Run()
            parts = {"throughput": part_throughput, "memory": part_memory, "seams": part_seams}
            parts[part](args, work, results)
            print(f"\n{part}: {run.minutes:.1f} min", flush=True)
            if args.no_update:
                continue
            name, title = f"{SECTION}-{part}", f"Prediction, {TITLES[part]}"
            if part == "seams" and args.seams_label:
                name = f"{name}-{re.sub(r'[^a-z0-9]+', '-', args.seams_label.lower()).strip('-')}"
                title = f"{title}, {args.seams_label}"
            head = run.head(versions, f"this part took {run.minutes:.1f} min", load=LOAD)
            blocks = [block.replace("### ", "#### ", 1) for block in results.blocks]
            section = "\n\n".join([f"### {title} (`bench/predict.py`)", head, *blocks])
            update_section(SECTION, INTRO, args.output)
            # the parts' sections follow the intro in PARTS order, whichever ran first
            before = [SECTION, *(f"{SECTION}-{p}" for p in PARTS[: PARTS.index(part) + 1])]
            after = [b for b in reversed(before) if b != name]
            log(f"updated {update_section(name, section, args.output, after=after)} ({name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
