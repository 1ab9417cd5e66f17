"""Inference windows decoupled from the training tile (issue 18): what the defaults rest on.

Parts: ``receptive`` (radii holding 50/90/95 % of the excess input gradient of one output
pixel), ``padding`` (mean vs reflect padding of a crop smaller than the window), ``seams`` (seam
excess on a 2048² mosaic of the sample scene for the old and new window options) and
``throughput`` (old vs new defaults side by side). Written to the ``predict-windows`` section of
BENCHMARKS.md only with ``--update``; the figures the defaults rest on are quoted in
:mod:`jmlnet_geo.predict_windows`.

    .venv/bin/python bench/predict_windows.py --bundle demo/run/model.safetensors [--parts seams]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio

if __package__ in (None, ""):  # run as a file
    sys.path.insert(0, os.fspath(Path(__file__).resolve().parents[1]))

from bench.predict import agreement, predict_classes, write_crop
from bench.report import REPO, Run, package_versions, update_section
from jmlnet_geo.evaluate.report import markdown_table

PARTS = ("receptive", "padding", "seams", "throughput")
SCENE = REPO / "sample_data" / "scene.tif"
DEMO = REPO / "demo" / "run" / "model.safetensors"
OLD = {"window": 256, "overlap": 64, "batch_size": 8}


def mosaic(path: Path, side: int, out: Path) -> Path:
    """A side x side scene of ``path`` and its mirror images (continuous at the joins)."""
    with rasterio.open(path) as ds:
        data, profile = ds.read(), ds.profile
    row = np.concatenate([data, data[:, :, ::-1]] * (side // (2 * data.shape[2]) + 1), axis=2)
    tiles = np.concatenate([row, row[:, ::-1]] * (side // (2 * data.shape[1]) + 1), axis=1)
    profile |= {"width": side, "height": side, "nodata": None}
    with rasterio.open(out, "w", **profile) as ds:
        ds.write(tiles[:, :side, :side])
    return out


def classes(predictor, scene: Path, work: Path, **options) -> tuple[np.ndarray, object]:
    """Class ids of one prediction into a new folder under ``work``, and its ``Prediction``."""
    out = Path(tempfile.mkdtemp(dir=work))
    return predict_classes(predictor, scene, out, loader_workers=0, **options)


def agree(a: np.ndarray, b: np.ndarray) -> float:
    return agreement(a, b)[0]


def part_receptive(predictor, work: Path) -> str:
    import torch

    with rasterio.open(SCENE) as ds:
        raw = torch.from_numpy(ds.read(window=((256, 768), (256, 768))).astype(np.float32))
    x = predictor.normalization.apply(raw[None]).requires_grad_(True)
    out = predictor.model(x)
    grad = torch.zeros_like(out)
    grad[0, :, 256, 256] = 1
    out.backward(grad)
    mag = x.grad.abs().sum((0, 1)).numpy()
    yy, xx = np.mgrid[:512, :512]
    dist = np.maximum(abs(yy - 256), abs(xx - 256))
    ring = np.array([mag[dist == r].mean() for r in range(256)])
    far = np.median(ring[-64:])
    excess = np.clip(ring - far, 0, None) * np.maximum(8 * np.arange(256), 1)
    cum = np.cumsum(excess) / excess.sum()
    radii = [int(np.searchsorted(cum, q)) for q in (0.5, 0.9, 0.95)]
    return "1. Effective receptive field (px, Chebyshev radius from the output pixel)\n\n" + (
        markdown_table(
            ["50 % of the excess gradient", "90 %", "95 %", "far-field level / peak"],
            [[*map(str, radii), f"{far / ring.max():.3f}"]],
        )
    )


def part_padding(predictor, work: Path) -> str:
    import torch

    rows = []
    context = classes(predictor, SCENE, work, window=1024)[0]  # the crops with their surroundings
    for off, h, w in ((100, 200, 150), (100, 300, 420), (300, 500, 380), (300, 260, 600)):
        small = write_crop(SCENE, work / f"small{off}_{h}.tif", off, off, (h, w))
        ours, result = classes(predictor, small, work, window=1024)  # one window
        with rasterio.open(small) as ds:
            raw = ds.read().astype(np.float32)
        side = result.window
        padded = np.pad(raw, ((0, 0), (0, side - h), (0, side - w)), mode="reflect")
        logits = predictor.logits(torch.from_numpy(padded)[None], torch.ones(1, side, side) > 0)
        reflect = logits.argmax(1)[0, :h, :w].numpy()
        truth = context[off : off + h, off : off + w]
        rows.append([
            f"{w} x {h} at ({off}, {off})", str(side), f"{100 * (1 - agree(ours, reflect)):.2f} %",
            f"{100 * agree(ours, truth):.2f} %", f"{100 * agree(reflect, truth):.2f} %",
        ])  # fmt: skip
    header = ["crop (px)", "window", "classes differing, mean (zero) vs reflect padding",
              "mean padding: agreement with the crop predicted in the whole scene",
              "reflect padding: same"]  # fmt: skip
    return "2. Padding of scenes smaller than a window\n\n" + markdown_table(header, rows)


def part_seams(predictor, work: Path, configs: list[dict]) -> str:
    scene = mosaic(SCENE, 2048, work / "mosaic2048.tif")
    whole_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    rows = []
    for config in configs:
        options = {k: v for k, v in config.items() if k != "label"}
        full, result = classes(predictor, scene, work, **options)
        shift = (result.window - result.overlap) // 2
        shifted_path = write_crop(scene, work / f"shift{shift}.tif", shift, shift)
        shifted, _ = classes(predictor, shifted_path, work, **options)
        if shift not in whole_cache:
            whole_cache[shift] = (
                classes(predictor, scene, work, window=2048, overlap=0)[0],
                classes(predictor, shifted_path, work, window=2048, overlap=0)[0],
            )
        whole, whole_shifted = whole_cache[shift]
        tiled, untiled = (
            agree(full[shift:, shift:], shifted),
            agree(whole[shift:, shift:], whole_shifted),
        )
        rows.append([
            config["label"], f"{result.window} / {result.overlap}", config.get("weights", "ramp"),
            str(shift), f"{100 * tiled:.2f} %", f"{100 * untiled:.2f} %",
            f"{100 * (untiled - tiled):+.2f}",
        ])  # fmt: skip
        print(rows[-1], flush=True)
    header = ["options", "window / overlap", "weights", "shift", "tiled agreement",
              "untiled agreement", "seam excess (points)"]  # fmt: skip
    return (
        "3. Seams on a 2048² mosaic of sample_data/scene.tif and its mirror images\n\n"
        + markdown_table(header, rows)
    )


def part_throughput(predictor, work: Path) -> str:
    scenes = [SCENE, mosaic(SCENE, 4096, work / "mosaic4096.tif")]
    variants = [("old defaults (tile 256, overlap 64, batch 8)", OLD), ("new defaults", {}),
                ("new defaults, --tta flips", {"tta": "flips"})]  # fmt: skip
    rows = []
    for scene in scenes:
        for label, options in variants:
            if options.get("tta") and scene != SCENE:
                continue  # 4x the forward: on the small scene only, to keep the run short
            start = time.perf_counter()
            _, result = classes(predictor, scene, work, **options)
            seconds = time.perf_counter() - start
            forwarded = result.windows * result.window**2 / result.pixels
            rows.append([
                scene.name, label, f"{result.window} / {result.overlap}", str(result.windows),
                f"{forwarded:.2f}", f"{seconds:.1f}", f"{result.pixels / seconds / 1e6:.3f}",
            ])  # fmt: skip
            print(rows[-1], flush=True)
    header = ["scene", "options", "window / overlap", "windows", "forwarded / scene px",
              "wall s", "scene Mpx/s"]  # fmt: skip
    return "4. Throughput, CPU, one run each, side by side\n\n" + markdown_table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=DEMO)
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--update", action="store_true", help="write BENCHMARKS.md")
    args = parser.parse_args()
    from jmlnet_geo.predict import Predictor

    predictor = Predictor(args.bundle, device="cpu")
    run = Run()
    sections = []
    configs = [
        {"label": "old default", "window": 256, "overlap": 64},
        {"label": "new default (ramp)"},
        {"label": "new default, cosine", "weights": "cosine"},
        {"label": "new default, --tta flips", "tta": "flips"},
        {"label": "overlap 96, ramp", "overlap": 96},
        {"label": "overlap 512, ramp", "overlap": 512},
        {"label": "overlap 96, cosine", "overlap": 96, "weights": "cosine"},
    ]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="predict-windows.") as tmp:
        work = Path(tmp)
        for part in args.parts:
            start = time.perf_counter()
            if part == "seams":
                text = part_seams(predictor, work, configs)
            else:
                text = globals()[f"part_{part}"](predictor, work)
            print(text, f"\n({time.perf_counter() - start:.0f} s)\n", flush=True)
            sections.append(text)
    head = (
        "### Prediction windows (`bench/predict_windows.py`, issue 18)\n\n"
        f"{run.head(package_versions(['torch']), f'bundle {args.bundle.name}')}\n\n"
    )
    if args.update:
        update_section("predict-windows", head + "\n\n".join(sections))


if __name__ == "__main__":
    main()
