"""Part 3 of ``bench/predict.py``: agreement under a half-stride shift, tiled and untiled,
for the defaults and their variants (real images as a mosaic with ``--seams-mosaic``)."""

from __future__ import annotations

import argparse
import math
import re
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning

from bench.predict_inputs import ISAID_IMAGE, trained_bundle
from bench.predict_throughput import OLD
from bench.report import REPO, Results, log
from jmlnet_geo.evaluate.report import markdown_table


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
