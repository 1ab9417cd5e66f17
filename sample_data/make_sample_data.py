"""Generate the embedded sample: a small synthetic aerial scene with boxes and exact truth.

Deterministic (fixed seed, numpy only for the pixels): running it again gives the same pixels
and the same geometries. Writes, next to this script (or into --out):

- ``scene.tif``: 1024 x 1024 RGB uint8, EPSG:32633 (UTM 33N), 0.5 m pixels, nodata 0 in a
  wedge at the top-right corner (like the edge of a real acquisition footprint).
- ``truth.gpkg``: one polygon per object with ``class`` (storage_tank, vehicle, building).
- ``boxes.gpkg``: the envelope of each truth polygon with the same ``class``: the weak labels.

Objects look like what they are from above: storage tanks are bright discs with a rim and a
shadow, vehicles are small coloured rectangles in rows on asphalt, buildings are roofs with a
ridge and a cast shadow. Ground is textured (grass, soil fields, roads), with trees and clutter
that are not objects. Shadows are not part of the objects.

Usage: python sample_data/make_sample_data.py [--out DIR]
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
from affine import Affine
from rasterio import features
from shapely import affinity
from shapely.geometry import Point, Polygon, box
from shapely.ops import unary_union

SIZE = 1024
RES = 0.5
CRS = "EPSG:32633"
ORIGIN = (431_200.0, 5_052_800.0)  # top-left corner, near Verona (UTM 33N)
SEED = 20201
SUN = np.array([0.55, 0.35])  # shadow direction in pixels per metre of height (x right, y down)


def _smooth_noise(rng: np.random.Generator, cells: int) -> np.ndarray:
    """Value noise in [0, 1] on a SIZE x SIZE grid from a cells x cells random lattice."""
    lattice = rng.random((cells + 1, cells + 1))
    coords = np.linspace(0, cells, SIZE, endpoint=False)
    i = coords.astype(int)
    f = coords - i
    f = f * f * (3 - 2 * f)
    top = lattice[i][:, i] * (1 - f)[None, :] + lattice[i][:, i + 1] * f[None, :]
    bottom = lattice[i + 1][:, i] * (1 - f)[None, :] + lattice[i + 1][:, i + 1] * f[None, :]
    return top * (1 - f)[:, None] + bottom * f[:, None]


def _mask(shapes: list[Polygon]) -> np.ndarray:
    """Pixels whose centres fall inside any shape (pixel coordinates)."""
    if not shapes:
        return np.zeros((SIZE, SIZE), bool)
    return features.rasterize(
        [(s, 1) for s in shapes], out_shape=(SIZE, SIZE), transform=Affine.identity()
    ).astype(bool)


def _paint(image: np.ndarray, mask: np.ndarray, colour, rng, noise: float = 6.0) -> None:
    values = np.asarray(colour, float)[None, :] + rng.normal(0, noise, (int(mask.sum()), 3))
    image[mask] = values


def _shadow(shape: Polygon, height_m: float) -> Polygon:
    """The ground an object of this height shades: the shape swept along the sun direction."""
    dx, dy = SUN * height_m
    steps = [affinity.translate(shape, dx * t, dy * t) for t in np.linspace(0, 1, 9)]
    return unary_union(steps).difference(shape)


class Layout:
    """Places shapes without overlap (in pixel coordinates, with a margin)."""

    def __init__(self) -> None:
        self.taken: list[Polygon] = []

    def free(self, shape: Polygon, margin: float = 3.0) -> bool:
        grown = shape.buffer(margin)
        inside = grown.bounds[0] >= 2 and grown.bounds[1] >= 2
        inside &= grown.bounds[2] <= SIZE - 2 and grown.bounds[3] <= SIZE - 2
        # keep objects away from the nodata wedge at the top-right corner
        inside &= not grown.intersects(NODATA_WEDGE.buffer(8))
        return inside and not any(grown.intersects(t) for t in self.taken)

    def take(self, shape: Polygon) -> None:
        self.taken.append(shape)


NODATA_WEDGE = Polygon([(SIZE - 170, 0), (SIZE, 0), (SIZE, 140)])


def make(out: Path) -> dict[str, int]:
    rng = np.random.default_rng(SEED)
    image = np.zeros((SIZE, SIZE, 3), float)

    # Ground: grass with large-scale variation, soil fields, fine texture.
    low = _smooth_noise(rng, 6)
    mid = _smooth_noise(rng, 24)
    grass = np.stack([88 + 30 * low, 108 + 28 * low, 62 + 16 * mid], axis=-1)
    image[:] = grass + rng.normal(0, 7, (SIZE, SIZE, 3))
    layout = Layout()
    fields = []
    for _ in range(5):
        w, h = rng.uniform(140, 280), rng.uniform(100, 220)
        x, y = rng.uniform(0, SIZE - w), rng.uniform(0, SIZE - h)
        field = affinity.rotate(box(x, y, x + w, y + h), rng.uniform(-25, 25))
        fields.append(field)
        m = _mask([field])
        stripes = 0.5 + 0.5 * np.sin(np.arange(SIZE) / rng.uniform(3, 6))
        tone = np.array([150, 125, 92]) if rng.random() < 0.6 else np.array([125, 140, 80])
        columns = np.nonzero(m)[1]
        image[m] = tone + 12 * stripes[columns][:, None] + rng.normal(0, 6, (int(m.sum()), 3))

    # Roads: two asphalt strips crossing the scene, with a dashed centre line.
    roads = [box(0, 610, SIZE, 640), box(300, 0, 328, SIZE)]
    _paint(image, _mask(roads), (92, 92, 96), rng, 5)
    dashes = [box(x, 624, x + 12, 626) for x in range(0, SIZE, 30)]
    dashes += [box(313, y, 315, y + 12) for y in range(0, SIZE, 30)]
    _paint(image, _mask(dashes), (215, 215, 205), rng, 4)
    for road in roads:
        layout.take(road)

    objects: list[tuple[str, Polygon]] = []
    shadows: list[Polygon] = []

    # Parking lots on asphalt with vehicles in rows; a few vehicles on the roads.
    lots = [(120, 660, 150, 90, 0.0), (400, 440, 160, 100, 12.0), (700, 300, 140, 110, -8.0)]
    car_colours = [(230, 230, 228), (30, 30, 35), (170, 30, 30), (40, 60, 140), (150, 150, 155)]
    vehicles = 0
    for x0, y0, w, h, angle in lots:
        lot = affinity.rotate(box(x0, y0, x0 + w, y0 + h), angle, origin=(x0, y0))
        if not layout.free(lot, margin=2):
            continue
        _paint(image, _mask([lot]), (70, 70, 74), rng, 5)
        layout.take(lot)
        for row_y in np.arange(y0 + 8, y0 + h - 12, 24):
            for col_x in np.arange(x0 + 6, x0 + w - 6, 8):
                if rng.random() < 0.3:
                    continue
                car = box(col_x, row_y, col_x + 4.2, row_y + 9.5)
                car = affinity.rotate(car, angle, origin=(x0, y0))
                objects.append(("vehicle", car))
                shadows.append(_shadow(car, 1.5))
                vehicles += 1
    for x in rng.uniform(20, SIZE - 40, 6):
        car = box(x, 615 + rng.choice([0, 13]), x + 9.5, 619.2 + rng.choice([0, 13]))
        objects.append(("vehicle", car))
        vehicles += 1

    # Buildings: roofs (rectangles and L shapes) with a ridge; cast shadows.
    roof_colours = [(168, 84, 70), (140, 138, 135), (118, 96, 80), (185, 170, 150)]
    buildings = 0
    while buildings < 14:
        w, h = rng.uniform(28, 70), rng.uniform(24, 56)
        x, y = rng.uniform(20, SIZE - 90), rng.uniform(20, SIZE - 90)
        shape = box(x, y, x + w, y + h)
        if rng.random() < 0.35:
            shape = shape.union(box(x, y + h - 4, x + w * 0.45, y + h + rng.uniform(15, 30)))
        shape = affinity.rotate(shape, rng.choice([0, 0, rng.uniform(-30, 30)]))
        shadow = _shadow(shape, rng.uniform(6, 12))
        if not layout.free(shape.union(shadow), margin=6):
            continue
        layout.take(shape.union(shadow))
        objects.append(("building", shape))
        shadows.append(shadow)
        buildings += 1

    # Storage tanks: a tank farm on a concrete pad plus some isolated tanks.
    pad = box(560, 700, 860, 930)
    _paint(image, _mask([pad]), (176, 172, 160), rng, 6)
    layout.take(box(560, 700, 560, 700))  # the pad itself hosts tanks
    tanks = 0
    attempts = 0
    while tanks < 16 and attempts < 4000:
        attempts += 1
        r = rng.uniform(9, 20)
        if tanks < 10:
            cx, cy = rng.uniform(575 + r, 845 - r), rng.uniform(715 + r, 915 - r)
        else:
            cx, cy = rng.uniform(40, SIZE - 40), rng.uniform(40, SIZE - 40)
        disc = Point(cx, cy).buffer(r, quad_segs=16)
        shadow = _shadow(disc, r * 0.9)
        if not layout.free(disc.union(shadow), margin=4):
            continue
        layout.take(disc.union(shadow))
        objects.append(("storage_tank", disc))
        shadows.append(shadow)
        tanks += 1

    # Clutter: tree canopies (green discs with shadows) and small bright debris; not objects.
    for _ in range(120):
        r = rng.uniform(4, 11)
        tree = Point(rng.uniform(10, SIZE - 10), rng.uniform(10, SIZE - 10)).buffer(r)
        if not layout.free(tree, margin=1):
            continue
        shadows.append(_shadow(tree, r))
        layout.take(tree.union(_shadow(tree, r)))
        image[_mask([_shadow(tree, r)])] *= 0.5
        _paint(image, _mask([tree]), (45, 78 + rng.uniform(-10, 10), 40), rng, 10)
    for _ in range(60):
        spot = Point(rng.uniform(5, SIZE - 5), rng.uniform(5, SIZE - 5)).buffer(rng.uniform(1, 3))
        if layout.free(spot, margin=1):
            _paint(image, _mask([spot]), (200, 196, 185), rng, 10)

    # Shadows darken the ground, then objects are painted on top.
    image[_mask(shadows)] *= 0.45
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    for kind, shape in objects:
        m = _mask([shape])
        if kind == "storage_tank":
            (cx, cy), r = shape.centroid.coords[0], math.sqrt(shape.area / math.pi)
            d = np.hypot(xx[m] + 0.5 - cx, yy[m] + 0.5 - cy) / r
            shade = 222 - 25 * d**2 - 30 * (d > 0.85)
            image[m] = shade[:, None] * np.array([1.0, 1.0, 0.97]) + rng.normal(0, 3, (m.sum(), 3))
        elif kind == "building":
            colour = np.array(roof_colours[rng.integers(len(roof_colours))], float)
            minx, miny, maxx, maxy = shape.bounds
            side = np.where(yy[m] + 0.5 < (miny + maxy) / 2, 1.12, 0.88)
            image[m] = colour * side[:, None] + rng.normal(0, 4, (m.sum(), 3))
        else:
            _paint(image, m, car_colours[rng.integers(len(car_colours))], rng, 8)

    pixels = np.clip(np.rint(image), 1, 255).astype(np.uint8)  # 0 is reserved for nodata
    pixels[_mask([NODATA_WEDGE])] = 0
    transform = Affine(RES, 0, ORIGIN[0], 0, -RES, ORIGIN[1])

    out.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff",
        "width": SIZE,
        "height": SIZE,
        "count": 3,
        "dtype": "uint8",
        "crs": CRS,
        "transform": transform,
        "nodata": 0,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "predictor": 2,
        "interleave": "pixel",
    }
    with rasterio.open(out / "scene.tif", "w", **profile) as ds:
        ds.write(pixels.transpose(2, 0, 1))
        ds.colorinterp = [
            rasterio.enums.ColorInterp.red,
            rasterio.enums.ColorInterp.green,
            rasterio.enums.ColorInterp.blue,
        ]

    to_map = [transform.a, transform.b, transform.d, transform.e, transform.c, transform.f]
    truth = gpd.GeoDataFrame(
        {"class": [k for k, _ in objects]},
        geometry=[affinity.affine_transform(s, to_map) for _, s in objects],
        crs=CRS,
    )
    boxes = gpd.GeoDataFrame({"class": truth["class"]}, geometry=truth.geometry.envelope, crs=CRS)
    for path, frame, layer in (
        (out / "truth.gpkg", truth, "truth"),
        (out / "boxes.gpkg", boxes, "boxes"),
    ):
        if path.exists():
            os.remove(path)
        frame.to_file(path, driver="GPKG", layer=layer)
    return truth["class"].value_counts().to_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    counts = make(parser.parse_args().out)
    print("objects:", ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


if __name__ == "__main__":
    main()
