"""Inputs of ``bench/predict.py``: a synthetic scene, a random and a trained bundle."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from bench.report import REPO, SHARED, log

CLASSES = ["building", "storage_tank", "vehicle"]
COLOURS = [[230, 159, 0], [86, 180, 233], [0, 158, 115]]
TRAINED = REPO / "demo" / "run" / "model.safetensors"
ISAID_IMAGE = SHARED / "isaid_devkit_samples" / "val" / "images" / "P0003.png"
PIXEL = 0.5  # metres; the synthetic scenes and the random bundle agree on it


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
