"""Inference windows decoupled from the training tile (issue 18): what the defaults rest on.

Parts: ``receptive`` (radii holding 50/90/95 % of the excess input gradient of one output
pixel) and ``padding`` (mean vs reflect padding of a crop smaller than the window). Seams and
throughput at the defaults against the old ones are parts of ``bench/predict.py``. Written to the
``predict-windows`` section of BENCHMARKS.md only with ``--update``; the figures the defaults
rest on are quoted in :mod:`jmlnet_geo.predict_windows`.

    .venv/bin/python bench/predict_windows.py --bundle demo/run/model.safetensors [--parts padding]
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

PARTS = ("receptive", "padding")
SCENE = REPO / "sample_data" / "scene.tif"
DEMO = REPO / "demo" / "run" / "model.safetensors"


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
    with tempfile.TemporaryDirectory(prefix="predict-windows.") as tmp:
        work = Path(tmp)
        for part in args.parts:
            start = time.perf_counter()
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
