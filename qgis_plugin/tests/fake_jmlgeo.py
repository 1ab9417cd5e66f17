# ruff: noqa: D103 - a test helper script, like the files under tests/
"""A stand-in for the ``jmlgeo`` command in tests: speaks its JSON protocol and writes tiny outputs.

Tests copy this file to ``<tmp>/bin/jmlgeo`` with a ``#!<python>`` line so it runs like the real
command (GDAL from ``osgeo`` in QGIS's Python, else rasterio and geopandas from the main venv).
What it does is chosen with environment variables (the plugin keeps those, it only drops
QGIS's PYTHONPATH, PROJ/GDAL and ``QGIS_*`` variables):

- ``FAKE_JMLGEO_MODE``: ``ok`` (default: write the outputs of the command in argv), ``error``
  (``error: $FAKE_JMLGEO_ERROR`` and exit 1), ``crash`` (a traceback, exit 1), ``hang`` (a stage,
  a worker process, then sleep; ``FAKE_JMLGEO_IGNORE_TERM=1`` also ignores SIGTERM), ``garbled``
  (partial, broken and non-UTF-8 lines around valid events), ``daemon`` (exit, leaving a process
  outside the group that holds the pipes open).
- ``FAKE_JMLGEO_RECORD``: a file that receives ``{"argv": [...], "env": {...}, "pids": [...]}``.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

SIZE = 32


def emit(**event):
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def record(**extra):
    target = os.environ.get("FAKE_JMLGEO_RECORD")
    if not target:
        return
    data = {"argv": sys.argv[1:], "env": dict(os.environ), "pid": os.getpid(), **extra}
    tmp = target + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(tmp, target)


def option(argv, name, default=None):
    return argv[argv.index(name) + 1] if name in argv else default


def positionals(argv):
    """Arguments that are neither options nor option values (the fake knows its options)."""
    flags = {"--polygons", "--probabilities", "--resume", "--force", "--preview"}
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg.startswith("--"):
            skip = arg not in flags
        else:
            out.append(arg)
    return out


def scene_grid(scene):
    """(crs wkt, geotransform) of the scene, or a UTM fallback when it cannot be read."""
    try:
        from osgeo import gdal

        ds = gdal.Open(scene)
        if ds is not None:
            return ds.GetProjection(), ds.GetGeoTransform()
    except ImportError:
        import rasterio

        with rasterio.open(scene) as src:
            return src.crs.to_wkt(), src.transform.to_gdal()
    return 'PROJCS["WGS 84 / UTM zone 33N",AUTHORITY["EPSG","32633"]]', (5e5, 1, 0, 5e6, 0, -1)


def class_pixels():
    # Class 1 in the top-left quarter, class 2 in the bottom-right one, background elsewhere.
    half = SIZE // 2
    return bytes(
        1 if r < half and c < half else 2 if r >= half and c >= half else 0
        for r in range(SIZE)
        for c in range(SIZE)
    )


COLOURS = {0: (0, 0, 0), 1: (230, 159, 0), 2: (86, 180, 233), 3: (0, 158, 115)}


def write_class_raster(path, scene, names):
    wkt, transform = scene_grid(scene)
    try:
        from osgeo import gdal
    except ImportError:
        gdal = None
    if gdal is not None:
        ds = gdal.GetDriverByName("GTiff").Create(str(path), SIZE, SIZE, 1, gdal.GDT_Byte)
        ds.SetProjection(wkt)
        ds.SetGeoTransform(transform)
        ds.SetMetadataItem("class_names", ",".join(names))
        band = ds.GetRasterBand(1)
        band.SetNoDataValue(255)
        band.WriteRaster(0, 0, SIZE, SIZE, class_pixels())
        table = gdal.ColorTable()
        for value, rgb in COLOURS.items():
            table.SetColorEntry(value, (*rgb, 255))
        band.SetRasterColorTable(table)
        ds = None
        return
    import numpy as np
    import rasterio
    from affine import Affine

    data = np.frombuffer(class_pixels(), dtype=np.uint8).reshape(SIZE, SIZE)
    profile = {"driver": "GTiff", "width": SIZE, "height": SIZE, "count": 1, "dtype": "uint8"}
    profile.update(crs=wkt, transform=Affine.from_gdal(*transform), nodata=255)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
        dst.update_tags(class_names=",".join(names))
        dst.write_colormap(1, {k: (*v, 255) for k, v in COLOURS.items()})


def write_polygons(path, scene, names):
    wkt, (x0, dx, _, y0, _, dy) = scene_grid(scene)
    half = SIZE // 2
    squares = {  # class id -> (col0, row0, col1, row1)
        1: (0, 0, half, half),
        2: (half, half, SIZE, SIZE),
    }
    try:
        from osgeo import ogr, osr
    except ImportError:
        ogr = None
    if ogr is not None:
        ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
        srs = osr.SpatialReference()
        srs.ImportFromWkt(wkt)
        layer = ds.CreateLayer("polygons", srs, ogr.wkbPolygon)
        layer.CreateField(ogr.FieldDefn("class_id", ogr.OFTInteger))
        layer.CreateField(ogr.FieldDefn("class_name", ogr.OFTString))
        layer.CreateField(ogr.FieldDefn("area", ogr.OFTReal))
        for class_id, (c0, r0, c1, r1) in squares.items():
            ring = [(x0 + c * dx, y0 + r * dy) for c, r in ((c0, r0), (c1, r0), (c1, r1), (c0, r1))]
            coords = ", ".join(f"{x} {y}" for x, y in [*ring, ring[0]])
            geom = ogr.CreateGeometryFromWkt(f"POLYGON(({coords}))")
            feature = ogr.Feature(layer.GetLayerDefn())
            feature.SetField("class_id", class_id)
            feature.SetField("class_name", names[class_id - 1])
            feature.SetField("area", geom.GetArea())
            feature.SetGeometry(geom)
            layer.CreateFeature(feature)
        ds = None
        return
    import geopandas as gpd
    from shapely.geometry import box

    geoms = [
        box(x0 + c0 * dx, y0 + r1 * dy, x0 + c1 * dx, y0 + r0 * dy)
        for c0, r0, c1, r1 in squares.values()
    ]
    frame = gpd.GeoDataFrame(
        {
            "class_id": list(squares),
            "class_name": [names[i - 1] for i in squares],
            "area": [g.area for g in geoms],
        },
        geometry=geoms,
        crs=wkt,
    )
    frame.to_file(path, layer="polygons", driver="GPKG")


QML = """<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.22" styleCategories="Symbology">
  <pipe>
    <rasterrenderer type="paletted" band="1" opacity="1" nodataColor="">
      <colorPalette>
{entries}
      </colorPalette>
    </rasterrenderer>
  </pipe>
</qgis>
"""


def write_qml(path, names):
    entries = ['        <paletteEntry value="0" color="#000000" alpha="0" label="background"/>']
    for class_id, name in enumerate(names, start=1):
        rgb = "#{:02x}{:02x}{:02x}".format(*COLOURS.get(class_id, (128, 128, 128)))
        entries.append(
            f'        <paletteEntry value="{class_id}" color="{rgb}" alpha="255" label="{name}"/>'
        )
    Path(path).write_text(QML.format(entries="\n".join(entries)), encoding="utf-8")


def class_names():
    return os.environ.get("FAKE_JMLGEO_CLASSES", "building,tree").split(",")


def predict(argv):
    bundle, *scenes = positionals(argv)
    out = Path(option(argv, "--out"))
    out.mkdir(parents=True, exist_ok=True)
    names = class_names()
    for scene in scenes:
        stem = Path(scene).stem
        emit(event="stage", stage=f"predict {Path(scene).name}", total=4)
        for done in range(1, 5):
            emit(event="progress", stage=f"predict {Path(scene).name}", done=done, total=4,
                 fraction=done / 4)  # fmt: skip
        classes = out / f"{stem}.classes.tif"
        write_class_raster(classes, scene, names)
        write_qml(out / f"{stem}.classes.qml", names)
        emit(event="message", text=f"{classes}: predicted with {Path(bundle).name}")
        emit(event="output", kind="classes", path=str(classes.resolve()))
        emit(event="output", kind="style", path=str((out / f"{stem}.classes.qml").resolve()))
        if "--probabilities" in argv:
            probs = out / f"{stem}.probabilities.tif"
            write_class_raster(probs, scene, names)
            emit(event="output", kind="probabilities", path=str(probs.resolve()))
        if "--polygons" in argv:
            polygons = out / f"{stem}.polygons.gpkg"
            write_polygons(polygons, scene, names)
            emit(event="output", kind="polygons", path=str(polygons.resolve()))
    emit(event="done")


def train(argv):
    out = Path(option(argv, "--out", "run"))
    out.mkdir(parents=True, exist_ok=True)
    emit(event="stage", stage="proposals", total=2)
    emit(event="progress", stage="proposals", done=2, total=2, fraction=1.0)
    bundle = out / "model.safetensors"
    bundle.write_bytes(b"fake bundle")
    emit(event="message", text=f"bundle: {bundle}")
    emit(event="output", kind="bundle", path=str(bundle.resolve()))
    emit(event="done")


def proposals(argv):
    scenes = positionals(argv)
    out = Path(option(argv, "--out"))
    out.mkdir(parents=True, exist_ok=True)
    emit(event="stage", stage="proposals", total=len(scenes))
    for i, scene in enumerate(scenes, start=1):
        for method in option(argv, "--methods", "box,crf,grabcut").split(","):
            path = out / f"{Path(scene).stem}.{method}.tif"
            write_class_raster(path, scene, class_names())
            emit(event="output", kind="proposal", path=str(path.resolve()))
        emit(event="progress", stage="proposals", done=i, total=len(scenes))
    emit(event="done")


def evaluate(argv):
    print("| class | IoU |\n|---|---|\n| background | 90.00 |\n| building | 50.00 |")
    print("mIoU 70.00  pixel accuracy 91.50")
    out = option(argv, "--out")
    if out:
        Path(out).write_text(json.dumps({"miou": 0.7, "pixel_accuracy": 0.915}))


def audit(argv):
    """Write layers boxes (doubt, reason) and, with --model, missing, as jmlgeo audit does."""
    from osgeo import ogr, osr

    out = Path(option(argv, "--out"))
    wkt, (x0, dx, _, y0, _, dy) = scene_grid(positionals(argv)[0])
    srs = osr.SpatialReference()
    srs.ImportFromWkt(wkt)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(out))
    layers = [("boxes", [("doubt", 0.9, ogr.OFTReal), ("reason", "class?", ogr.OFTString)])]
    if option(argv, "--model"):
        layers.append(("missing", [("score", 0.8, ogr.OFTReal), ("class", "tree", ogr.OFTString)]))
    emit(event="stage", stage="audit", total=1)
    for name, fields in layers:
        layer = ds.CreateLayer(name, srs, ogr.wkbPolygon)
        for field, _, kind in fields:
            layer.CreateField(ogr.FieldDefn(field, kind))
        ring = [(x0 + c * dx, y0 + r * dy) for c, r in ((0, 0), (8, 0), (8, 8), (0, 8), (0, 0))]
        feature = ogr.Feature(layer.GetLayerDefn())
        for field, value, _ in fields:
            feature.SetField(field, value)
        coords = ", ".join(f"{x} {y}" for x, y in ring)
        feature.SetGeometry(ogr.CreateGeometryFromWkt(f"POLYGON(({coords}))"))
        layer.CreateFeature(feature)
    ds = None
    emit(event="progress", stage="audit", done=1, total=1)
    emit(event="output", kind="audit", path=str(out.resolve()))
    emit(event="done")


def hang():
    if os.environ.get("FAKE_JMLGEO_IGNORE_TERM") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    record(pids=[os.getpid(), worker.pid])
    emit(event="stage", stage="train", total=100)
    emit(event="progress", stage="train", done=1, total=100, fraction=0.01)
    while True:
        time.sleep(0.05)


def daemon():
    # A process outside the command's group that keeps stdout and stderr open after it exits.
    orphan = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True
    )
    record(pids=[os.getpid(), orphan.pid])
    emit(event="done")


def garbled():
    out = sys.stdout.buffer
    out.write(b'{"event": "stage", "stage": "pre')  # a line written in two pieces
    out.flush()
    time.sleep(0.2)
    out.write(b'dict", "total": 2}\n')
    out.write(b'{"event": "progress", "stage": "predict", "done": 1, "tot\n')  # broken JSON
    out.write(b"plain text \xff\xfe not utf-8\n")
    out.write(b'["event", "not an object"]\n')
    out.write(b'{"event": "progress", "done": 1, "total": 2}\n')  # no fraction: done / total
    out.write(b'{"event": "progress", "fraction": "half"}\n')  # unusable fraction
    out.write(b'{"event": "something-new", "x": 1}\n')
    out.write(b'{"event": "output", "kind": "classes", "path": "/tmp/x.classes.tif"}\n')
    out.write(b'{"event": "output", "kind": "classes"}\n')  # no path: ignored
    out.write(b'{"event": "done"}')  # the last line without its newline
    out.flush()


def main():
    if sys.argv[1:] == ["--version"]:  # the plugin's executable check; not recorded
        print(os.environ.get("FAKE_JMLGEO_VERSION", "jmlgeo 0.0.0+fake"))
        return
    record()
    mode = os.environ.get("FAKE_JMLGEO_MODE", "ok")
    argv = sys.argv[1:]
    if mode == "error":
        sys.stderr.write("warning: a warning before the error\n")
        message = os.environ.get("FAKE_JMLGEO_ERROR", "scene.tif: not found; check the path")
        sys.stderr.write(f"error: {message}\n")
        sys.exit(1)
    if mode == "crash":
        raise RuntimeError("an unexpected failure")
    if mode == "hang":
        hang()
    if mode == "daemon":
        daemon()
        return
    if mode == "garbled":
        garbled()
        return
    commands = {"predict": predict, "train": train, "proposals": proposals, "evaluate": evaluate,
                "audit": audit}  # fmt: skip
    if not argv or argv[0] not in commands:
        sys.stderr.write(f"error: fake jmlgeo does not know {argv[:1]}\n")
        sys.exit(2)
    commands[argv[0]](argv[1:])


if __name__ == "__main__":
    main()
