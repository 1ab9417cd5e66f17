"""Benchmark of streaming sliding-window prediction (``jmlgeo predict``, issues 6 and 18).

Parts: ``throughput`` (bare forward, torchgeo recipe, ours at overlap 0 and the default, on a
synthetic scene), ``memory`` (peak RSS/PSS of a fresh process per scene size), ``seams``
(agreement under a half-stride shift, tiled and untiled). Each part rewrites its own section of
BENCHMARKS.md; what is measured and how is described there, beside the figures.

    .venv/bin/python bench/predict.py [--quick] [--parts throughput,memory,seams] [--work DIR]
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
from jmlnet_geo.evaluate.report import markdown_table

SECTION = "predict"
PARTS = ("throughput", "memory", "seams")
CLASSES = ["building", "storage_tank", "vehicle"]
COLOURS = [[230, 159, 0], [86, 180, 233], [0, 158, 115]]
TRAINED = REPO / "demo" / "run" / "model.safetensors"
ISAID_IMAGE = REPO.parent / "shared" / "data" / "isaid_devkit_samples" / "val" / "images"
ISAID_IMAGE = ISAID_IMAGE / "P0003.png"
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


def grid_windows(side: int, tile: int, stride: int) -> list[tuple[int, int]]:
    """(col, row) of our snapped grid over a square scene (as :mod:`jmlnet_geo.tiling`)."""
    from jmlnet_geo.tiling import grid_offsets

    offsets = [round(o) for o in grid_offsets(float(side), float(tile), float(stride))]
    return [(col, row) for row in offsets for col in offsets]


def bare_batches(scene_path: Path, predictor, tile: int, batch_size: int) -> list:
    """Normalised float32 batches of every window of the overlap-0 grid, made beforehand."""
    import torch

    with rasterio.open(scene_path) as ds:
        image = ds.read()
    side = image.shape[1]
    tiles = [image[:, r : r + tile, c : c + tile] for c, r in grid_windows(side, tile, tile)]
    batches = []
    for i in range(0, len(tiles), batch_size):
        raw = torch.from_numpy(np.stack(tiles[i : i + batch_size]).astype(np.float32))
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


def part_throughput(args: argparse.Namespace, work: Path, results: Results) -> None:
    import torch

    from jmlnet_geo.predict import PredictOptions, Predictor

    side, tile, batch_size = args.size, args.tile, args.batch_size
    scene = synthetic_scene(work / f"synthetic_{side}.tif", side)
    bundle = random_bundle(work / "random_fast.safetensors", tile)
    default_overlap = tile // 4
    variants = {
        "a": "(a) bare forward, tiles in memory",
        "b": "(b) torchgeo recipe, in-memory stitching",
        "c0": "(c) ours, overlap 0",
        "c": f"(c) ours, overlap {default_overlap} (default)",
    }
    windows = {
        "a": len(grid_windows(side, tile, tile)),
        "c0": len(grid_windows(side, tile, tile)),
        "c": len(grid_windows(side, tile, tile - default_overlap)),
    }
    windows["b"] = math.ceil(side / tile) ** 2  # torchgeo: last tiles past the edges
    times: dict[str, list[float]] = {k: [] for k in variants}
    breakdown: dict[str, dict[str, float]] = {}
    recipe_forward: list[float] = []
    cpus: dict[str, list[float]] = {k: [] for k in variants}
    predictor = Predictor(bundle, device="cpu")
    batches = bare_batches(scene, predictor, tile, batch_size)
    log(f"throughput: {side}² scene, {len(batches)} batches; warming up")
    with torch.inference_mode():
        for x in batches[:2]:
            predictor.model(x)
    for repeat in range(args.repeats):
        order = list(variants) if repeat % 2 == 0 else list(reversed(variants))
        for key in order:
            out = work / f"throughput_{key}"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            cpu_start = cpu_seconds()
            if key == "a":
                seconds = run_bare(predictor.model, batches)
            elif key == "b":
                model, normalization = predictor.model, predictor.normalization
                seconds, forward = run_recipe(
                    model, normalization, scene, out / "classes.tif", tile, batch_size
                )
                recipe_forward.append(forward)
            else:
                overlap = 0 if key == "c0" else None
                options = PredictOptions(tile=tile, overlap=overlap, batch_size=batch_size)
                start = time.perf_counter()
                prediction = predictor.predict(scene, out, options)
                seconds = time.perf_counter() - start
                if not times[key] or seconds < min(times[key]):
                    breakdown[key] = dict.fromkeys(("forward", "blend", "write", "cog"), 0.0)
                    breakdown[key] |= prediction.phases
            cpu = cpu_seconds() - cpu_start
            cpus[key].append(cpu)
            times[key].append(seconds)
            log(
                f"  run {repeat + 1}: {variants[key]}: {seconds:.1f} s, CPU {cpu:.1f} s "
                f"(load {load_text()})"
            )
    del batches
    pixels = side * side / 1e6
    forwarded = {k: windows[k] * tile * tile / 1e6 for k in variants}
    best = {k: min(v) for k, v in times.items()}
    best_cpu = {k: min(v) for k, v in cpus.items()}
    scene_rate = {k: pixels / best[k] for k in variants}
    forwarded_rate = {k: forwarded[k] / best[k] for k in variants}
    # CPU efficiency: forwarded (or scene) pixels per CPU second, relative to (a) (or (b)).
    cpu_of_bare = {
        k: forwarded[k] / best_cpu[k] / (forwarded["a"] / best_cpu["a"]) for k in variants
    }
    cpu_of_recipe = {k: best_cpu["b"] / best_cpu[k] for k in variants}
    rows = [
        [label, windows[key], " / ".join(f"{t:.1f}" for t in times[key]),
         f"{scene_rate[key]:.3f}", f"{forwarded_rate[key]:.3f}",
         f"{forwarded_rate[key] / forwarded_rate['a']:.2f}" if key != "a" else "1",
         f"{scene_rate[key] / scene_rate['b']:.2f}" if key != "b" else "1",
         " / ".join(f"{t:.1f}" for t in cpus[key]),
         f"{cpu_of_bare[key]:.2f}" if key != "a" else "1",
         f"{cpu_of_recipe[key]:.2f}" if key != "b" else "1"]
        for key, label in variants.items()
    ]  # fmt: skip
    header = (
        "variant | windows | wall s (runs) | scene Mpx/s | forwarded Mpx/s | "
        "forwarded Mpx/s / (a) | scene Mpx/s / (b) | CPU s (runs) | "
        "forwarded Mpx per CPU s / (a) | scene Mpx per CPU s / (b)"
    )
    parts = [
        f"### 1. Throughput: {side} x {side} px uint8 RGB scene, tile {tile}, batch {batch_size}, "
        f"fast preset (random weights), CPU, {torch.get_num_threads()} torch threads; best of "
        f"{args.repeats} interleaved runs\n",
        markdown_table(header, rows, align="lrrrrrrrrr"),
    ]
    rows = []
    for key in ("c0", "c"):
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
    if args.child == "ours":
        predictor.predict(args.child_scene, out)
    else:
        tile = predictor.card.tile_size
        run_recipe(
            predictor.model, predictor.normalization, Path(args.child_scene), out / "r.tif", tile, 8
        )
    seconds = time.perf_counter() - start
    report = {
        "seconds": seconds,
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

    label = {"ours": f"ours (overlap {tile // 4})", "recipe": "(b) torchgeo recipe"}
    kbs = ("loaded_kb", "main_max_rss_kb", "workers_max_rss_kb", "tree_rss_kb", "tree_pss_kb")
    rows = [
        [label[kind], f"{side} x {side}", f"{side * side * 3 / 1e9:.2f}", f"{r['seconds']:.0f}",
         *(gb(r[k]) for k in kbs)]
        for kind, side, r in measured
    ]  # fmt: skip
    header = (
        "prediction | scene (px) | raw scene (GB) | time (s) | RSS after loading the model | "
        "max RSS, main process | max RSS, child processes (reader workers, if any) | "
        "peak tree RSS (sampled) | peak tree PSS (sampled)"
    )
    results.add(
        f"### 2. Peak memory (GB = 10^9 bytes): tile {tile}, batch 8, fast preset, CPU, default "
        "options, a fresh process per prediction\n\n"
        + markdown_table(header, rows, align="llrrrrrrr")
    )


# --- part 3: seams ----------------------------------------------------------------------------


def read_image(path: Path) -> tuple[np.ndarray, dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as ds:
            return ds.read(), ds.profile


def write_crop(src: Path, dst: Path, dy: int, dx: int, size: tuple[int, int] | None = None) -> Path:
    """A GeoTIFF of ``src`` without its first ``dy`` rows and ``dx`` columns (only ``size`` =
    height, width of the rest when given), same georeference."""
    image, profile = read_image(src)
    h, w = size or image.shape[1:]
    crop = image[:, dy : dy + h, dx : dx + w]
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
    return predict_classes(predictor, scene, out, tile=side, overlap=0)[0]


def agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    valid = (a != 255) & (b != 255)
    return float((a[valid] == b[valid]).mean()), int(valid.sum())


def seam_groups(args: argparse.Namespace) -> list[tuple[str, list[Path]]]:
    """The scenes of the seams part, in groups pooled into one row each: (label, paths)."""
    if args.seams_scenes:
        names = ", ".join(p.name for p in args.seams_scenes[:3])
        more = f" and {len(args.seams_scenes) - 3} more" if len(args.seams_scenes) > 3 else ""
        label = f"{args.seams_label or 'scenes'}: {len(args.seams_scenes)} ({names}{more})"
        return [(label, list(args.seams_scenes))]
    groups = [
        ("sample_data/scene.tif (synthetic, training scene)", [REPO / "sample_data/scene.tif"])
    ]
    if ISAID_IMAGE.exists():
        groups.append(("iSAID val P0003.png (real, out of domain)", [ISAID_IMAGE]))
    return groups


def part_seams(args: argparse.Namespace, work: Path, results: Results) -> None:
    from jmlnet_geo.predict import Predictor

    bundle, origin = trained_bundle(args)
    predictor = Predictor(bundle, device="cpu")
    tile = predictor.card.tile_size
    overlaps = (0, tile // 4, tile // 2)
    rows, found = [], {}
    for label, paths in seam_groups(args):
        sizes = set()
        for overlap in overlaps:
            shift = (tile - overlap) // 2  # half the stride: borders as far as can be from before
            agree = pixels = untiled_agree = untiled_pixels = 0
            differ_margins, same_margins = [], []
            for path in paths:
                image, _ = read_image(path)
                sizes.add(f"{image.shape[2]} x {image.shape[1]}")
                folder = work / "seams" / path.stem
                whole = predict_untiled(predictor, path, folder / "whole")
                crop = write_crop(path, folder / f"crop_{shift}.tif", shift, shift)
                out = folder / f"overlap{overlap}"
                options = {"tile": tile, "overlap": overlap}
                full, result = predict_classes(
                    predictor, path, out / "full", probabilities=True, **options
                )
                probs = read_image(result.probabilities)[0]
                shifted, _ = predict_classes(predictor, crop, out / "shifted", **options)
                shifted_whole = predict_untiled(predictor, crop, out / "shifted_whole")
                common = full[shift:, shift:]
                fraction, count = agreement(common, shifted)
                agree, pixels = agree + fraction * count, pixels + count
                fraction, count = agreement(whole[shift:, shift:], shifted_whole)
                untiled_agree, untiled_pixels = (
                    untiled_agree + fraction * count,
                    untiled_pixels + count,
                )
                top2 = np.sort(probs[:, shift:, shift:], axis=0)[-2:].astype(np.int16)
                margin = (top2[1] - top2[0]) / 255
                differ_margins.append(
                    margin[(common != shifted) & (common != 255) & (shifted != 255)]
                )
                same_margins.append(margin[(common == shifted) & (common != 255)])
            tiled, untiled = agree / pixels, untiled_agree / untiled_pixels
            differ, same = np.concatenate(differ_margins), np.concatenate(same_margins)
            rows.append([
                label, " / ".join(sorted(sizes)) if len(sizes) <= 2 else f"{len(sizes)} sizes",
                f"{overlap}" + (" (default)" if overlap == tile // 4 else ""), f"{shift}",
                f"{pixels / 1e6:.2f}", f"{100 * tiled:.2f} %", f"{100 * untiled:.2f} %",
                f"{100 * (untiled - tiled):+.2f}",
                f"{np.median(differ):.2f} / {np.median(same):.2f}" if differ.size else "-",
            ])  # fmt: skip
            found[label, overlap] = tiled, untiled
            log(f"seams: {label} overlap {overlap}: {100 * tiled:.2f} % agree (untiled model "
                f"{100 * untiled:.2f} %)")  # fmt: skip
    header = (
        "scenes | size (px) | overlap (px) | shift (px) | compared Mpx | "
        "tiled: agreement with the shifted grid | "
        "untiled: agreement of one window over the scene with one over the shifted copy | "
        "seam excess (points) | median top-2 margin, differing / agreeing pixels (tiled)"
    )
    results.add(
        f"### 3. Seams: bundle {origin}, tile {tile}, CPU (agreement under a half-stride shift; "
        "margin: top-2 class probabilities, 0 = tie)\n\n"
        + markdown_table(header, rows, align="llrrrrrrr")
    )


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = bench_parser(
        "Benchmark streaming prediction: throughput, peak memory, seams; each part updates its "
        "own section.", PARTS, "Folder for scenes and outputs, kept (default: temporary).",
    )  # fmt: skip
    add = parser.add_argument
    add("--size", type=int, help="Throughput scene side (default 4096; quick 2048).")
    add("--tile", type=int, default=256, help="Tile side of parts 1 and 2.")
    add("--batch-size", type=int, default=8, help="Tiles per forward pass.")
    add("--repeats", type=int, help="Runs per throughput variant (default 3; quick 1).")
    add("--memory-sizes", type=int, nargs="+", help="Our memory runs' scene sides.")
    add("--recipe-sizes", type=int, nargs="*", help="The recipe's memory runs' scene sides.")
    add("--trained", type=Path, default=TRAINED, help="Bundle of the seams part.")
    add("--seams-scenes", type=Path, nargs="+", help="Scenes of the seams part, pooled.")
    add("--seams-label", help="Names a seams run; its own section predict-seams-LABEL.")
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
    if args.child:
        return child_main(args)
    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
    import torch  # noqa: F401 - so that machine_description names a GPU when one is used

    versions = package_versions(["torch", "torchgeo", "rasterio", "segmentation-models-pytorch"])
    versions += f"; GDAL {rasterio.__gdal_version__}"
    with work_folder(args.work, "jmlgeo-bench-predict-") as work:
        for part in (p for p in PARTS if p in args.parts):
            results, run = Results(), Run()
            {"throughput": part_throughput, "memory": part_memory, "seams": part_seams}[part](
                args, work, results
            )
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
