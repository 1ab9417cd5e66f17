"""Class rasters: uint8 GeoTIFFs of class ids on a scene's grid, written strip by strip.

A *class raster* holds 0 for background, 1..K for the classes of a model card or box layer and
255 (nodata) where nothing is known. Proposals and predictions are class rasters. Each one carries
the class names in its metadata (tag :data:`CLASS_NAMES_TAG`, ids 1..K, comma-separated) and a
colour table, so QGIS shows it coloured and ``jmlgeo evaluate`` knows its classes.
"""

from __future__ import annotations

import colorsys
import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence

import rasterio
from rasterio.windows import Window

from jmlnet_geo.io.raster import Scene
from jmlnet_geo.io.write import atomic_output
from jmlnet_geo.vocabulary import IGNORE

#: Raster metadata tag listing the class names of ids 1..K, comma-separated.
CLASS_NAMES_TAG = "class_names"

#: Rows written at once; a strip of a 100k-column scene is 100 MB at most.
STRIP_ROWS = 1024

# Distinct, colour-blind-friendlier first colours (Okabe-Ito and Tableau), then generated hues.
_FIRST_COLOURS = [
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (240, 228, 66),
    (0, 114, 178),
    (213, 94, 0),
    (204, 121, 167),
    (148, 103, 189),
    (140, 86, 75),
    (188, 189, 34),
]


def class_colours(num_classes: int) -> list[tuple[int, int, int]]:
    """RGB colours for class ids 1..K (``num_classes`` = K); stable for a given id."""
    colours = list(_FIRST_COLOURS[:num_classes])
    for i in range(len(colours), num_classes):
        hue = (i * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(hue, 0.65, 0.9)
        colours.append((round(255 * r), round(255 * g), round(255 * b)))
    return colours


def colour_table(
    class_names: Sequence[str], colours: Sequence[Sequence[int]] | None = None
) -> dict[int, tuple[int, int, int, int]]:
    """GDAL colour table: background black, classes in :func:`class_colours`, 255 transparent.

    GeoTIFF palettes keep no alpha; QGIS hides 255 as nodata, and a ``.qml`` style can hide 0.
    """
    table = {0: (0, 0, 0, 0), IGNORE: (0, 0, 0, 0)}
    for class_id, rgb in enumerate(colours or class_colours(len(class_names)), start=1):
        table[class_id] = (*(int(v) for v in rgb[:3]), 255)
    return table


def class_raster_profile(scene: Scene, block: int = 256) -> dict:
    """The rasterio profile of a class raster on ``scene``'s grid: tiled, DEFLATE, nodata 255."""
    profile = {
        "driver": "GTiff",
        "width": scene.width,
        "height": scene.height,
        "count": 1,
        "dtype": "uint8",
        "nodata": IGNORE,
        "compress": "deflate",
        "predictor": 2,
        "interleave": "band",
    }
    if scene.width >= block and scene.height >= block:
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    if scene.georeferenced:
        profile.update(crs=scene.crs, transform=scene.transform)
    return profile


def strips(scene: Scene, rows: int = STRIP_ROWS) -> Iterator[Window]:
    """Full-width row strips covering the scene, top to bottom."""
    for row in range(0, scene.height, rows):
        yield Window(0, row, scene.width, min(rows, scene.height - row))


@contextlib.contextmanager
def class_raster_writer(
    path: str | os.PathLike[str],
    scene: Scene,
    class_names: Sequence[str],
    tags: Mapping[str, str] | None = None,
    colours: Sequence[Sequence[int]] | None = None,
) -> Iterator[rasterio.io.DatasetWriter]:
    """Open a class raster on ``scene``'s grid for windowed writes; rename it into place at the end.

    Args:
        path: The output GeoTIFF.
        scene: Gives the grid (size, CRS, transform); plain images give a plain GeoTIFF.
        class_names: Names of class ids 1..K (written to the metadata and the colour table).
        tags: More metadata tags (e.g. the proposal method).
        colours: RGB of ids 1..K (default: :func:`class_colours`).

    Yields:
        The open dataset; write uint8 (rows, cols) arrays with ``ds.write(a, 1, window=w)``.

    Raises:
        OutputError: The destination cannot be written.
    """
    with (
        atomic_output(path) as tmp,
        rasterio.Env(GDAL_PAM_ENABLED=False),
        rasterio.open(tmp, "w", **class_raster_profile(scene)) as ds,
    ):
        ds.update_tags(**{CLASS_NAMES_TAG: ",".join(class_names)}, **(tags or {}))
        ds.write_colormap(1, colour_table(class_names, colours))
        ds.set_band_description(1, "class id")
        yield ds


def read_class_names(ds: rasterio.DatasetReader) -> tuple[str, ...] | None:
    """Class names of ids 1..K from a class raster's metadata, or None when it has none."""
    text = ds.tags().get(CLASS_NAMES_TAG)
    if not text:
        return None
    names = tuple(name.strip() for name in text.split(","))
    return names[1:] if names and names[0].lower() == "background" else names


def copy_to_cog(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Copy a class raster to a Cloud-Optimised GeoTIFF (tiled, DEFLATE, nearest overviews).

    The destination appears only when complete (see :func:`jmlnet_geo.io.write.atomic_output`).
    Colour table, nodata and metadata tags travel with the copy.
    """
    import rasterio.shutil

    with atomic_output(dst) as tmp, rasterio.Env(GDAL_PAM_ENABLED=False):
        rasterio.shutil.copy(
            src,
            tmp,
            driver="COG",
            compress="DEFLATE",
            predictor="2",
            blocksize=512,
            overview_resampling="NEAREST",
            resampling="NEAREST",
            overviews="AUTO",
        )


def write_qml(
    path: str | os.PathLike[str],
    class_names: Sequence[str],
    colours: Sequence[Sequence[int]] | None = None,
) -> None:
    """Write a QGIS raster style (paletted renderer) with a label and colour per class id.

    Background (0) is transparent, so the classes lie over the scene; 255 is nodata.
    """
    from xml.sax.saxutils import quoteattr

    colours = colours or class_colours(len(class_names))
    entries = ['        <paletteEntry value="0" color="#000000" alpha="0" label="background"/>']
    for class_id, (name, rgb) in enumerate(zip(class_names, colours, strict=True), start=1):
        hex_colour = "#{:02x}{:02x}{:02x}".format(*rgb[:3])
        entries.append(
            f'        <paletteEntry value="{class_id}" color="{hex_colour}" alpha="255" '
            f"label={quoteattr(name)}/>"
        )
    text = "\n".join(
        [
            "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>",
            '<qgis version="3.22" styleCategories="AllStyleCategories">',
            "  <pipe>",
            '    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1">',
            "      <colorPalette>",
            *entries,
            "      </colorPalette>",
            "    </rasterrenderer>",
            "  </pipe>",
            "  <blendMode>0</blendMode>",
            "</qgis>",
            "",
        ]
    )
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
