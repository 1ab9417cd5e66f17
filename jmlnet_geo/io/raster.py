"""Scenes: metadata, windowed reads with their nodata mask, and per-band statistics.

A *scene* is one raster file that GDAL can read. Georeferenced scenes keep their CRS and affine
transform. Plain images with no georeferencing (PNG/JPEG as in iSAID, DOTA, NWPU) get the
identity transform, so map coordinates are pixel coordinates (x = column, y = row, y down), the
convention GDAL itself uses for them; box layers for such images carry no CRS.

Alpha bands are not image bands: they become part of the nodata mask. In float scenes NaN and
infinite values are nodata too, whatever nodata value the file declares (no model can take them,
and one NaN spreads over a whole window through the convolutions); their pixels read as 0 and
invalid. A scene that cannot be read to its last block fails with a one-line error naming it.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import rasterio
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from jmlnet_geo.errors import InputFileError, display_path


class PlainImageWarning(UserWarning):
    """Scenes without georeferencing are used in pixel coordinates."""


@dataclass(frozen=True)
class Scene:
    """What we know about one scene, read once from its header.

    Attributes:
        path: The file.
        width: Columns.
        height: Rows.
        crs: Coordinate reference system, or None (plain images; rasters with a transform only).
        transform: Pixel -> map affine. Identity for plain images.
        georeferenced: False for plain images (identity transform, no CRS).
        bands: 1-based indexes of the image bands (alpha bands excluded).
        dtype: Numpy dtype name of the image bands (e.g. ``"uint8"``, ``"uint16"``, ``"float32"``).
        nodata: The nodata value, or None.
        band_names: A description per image band (GDAL description or colour interpretation).
        alpha: 1-based index of the alpha band that masks every band, or None.
    """

    path: str
    width: int
    height: int
    crs: CRS | None
    transform: Affine
    georeferenced: bool
    bands: tuple[int, ...]
    dtype: str
    nodata: float | None
    band_names: tuple[str, ...] = field(default=())
    alpha: int | None = None

    @property
    def name(self) -> str:
        """File name without folders, used to tie plain images to their boxes."""
        return os.path.basename(self.path)

    @property
    def count(self) -> int:
        """Number of image bands."""
        return len(self.bands)

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size (x, y) in map units, both positive."""
        return (abs(self.transform.a), abs(self.transform.e))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in map coordinates (for plain images bottom > top)."""
        left, top = self.transform @ (0, 0)
        right, bottom = self.transform @ (self.width, self.height)
        return (left, bottom, right, top)

    @property
    def crs_name(self) -> str:
        """A short human name of the CRS (``EPSG:32632``), or a note when there is none."""
        if self.crs is None:
            return "pixel coordinates" if not self.georeferenced else "no CRS"
        epsg = self.crs.to_epsg()
        return f"EPSG:{epsg}" if epsg else self.crs.to_string()


def open_scene(path: str | os.PathLike[str]) -> Scene:
    """Read a scene's header.

    Raises:
        InputFileError: The file is missing, not a raster, rotated, or has no image band.
    """
    shown = display_path(path)
    if not os.path.exists(path):
        raise InputFileError(f"{shown}: scene not found; check the path")
    if os.path.isdir(path):
        raise InputFileError(f"{shown}: is a folder; pass raster files (e.g. {shown}/*.tif)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                return _scene_from_dataset(os.fspath(path), ds)
    except RasterioIOError as err:
        first_line = str(err).splitlines()[0] if str(err) else "unknown reason"
        raise InputFileError(
            f"{shown}: cannot be read as a raster ({first_line}); "
            "pass a GeoTIFF or another GDAL-readable image"
        ) from None


def _scene_from_dataset(path: str, ds: rasterio.DatasetReader) -> Scene:
    shown = display_path(path)
    transform = ds.transform
    if transform.b != 0 or transform.d != 0:
        raise InputFileError(
            f"{shown}: rotated or sheared geotransform is not supported; "
            "make it north-up first (gdalwarp scene.tif north_up.tif)"
        )
    georeferenced = not (transform.is_identity and ds.crs is None)
    if not georeferenced and ds.gcps[0]:
        raise InputFileError(
            f"{shown}: georeferenced by ground control points only; "
            "warp it to a map grid first (gdalwarp scene.tif warped.tif)"
        )
    bands = tuple(i + 1 for i, interp in enumerate(ds.colorinterp) if interp != ColorInterp.alpha)
    alphas = [i + 1 for i, interp in enumerate(ds.colorinterp) if interp == ColorInterp.alpha]
    if not bands:
        raise InputFileError(f"{shown}: has no image band (only alpha); pass the imagery")
    dtypes = {ds.dtypes[b - 1] for b in bands}
    if len(dtypes) > 1:
        raise InputFileError(
            f"{shown}: bands have different data types ({', '.join(sorted(dtypes))}); "
            "convert to one type (gdal_translate -ot Float32)"
        )
    names = tuple(ds.descriptions[b - 1] or ds.colorinterp[b - 1].name for b in bands)
    return Scene(
        path=path,
        width=ds.width,
        height=ds.height,
        crs=ds.crs,
        transform=transform,
        georeferenced=georeferenced,
        bands=bands,
        dtype=dtypes.pop(),
        nodata=ds.nodata,
        band_names=names,
        alpha=alphas[0] if alphas else None,
    )


def open_scenes(paths: Iterable[str | os.PathLike[str]]) -> list[Scene]:
    """Read the headers of many scenes, warning once about those without georeferencing.

    Raises:
        InputFileError: As :func:`open_scene`, for the first bad file.
    """
    scenes = [open_scene(p) for p in paths]
    plain = [s.name for s in scenes if not s.georeferenced]
    if plain:
        shown = ", ".join(plain[:3]) + (f" and {len(plain) - 3} more" if len(plain) > 3 else "")
        warnings.warn(
            f"{len(plain)} scene(s) have no georeferencing ({shown}): "
            "using pixel coordinates; their boxes must be in pixels too, tied by an image column",
            PlainImageWarning,
            stacklevel=2,
        )
    return scenes


def open_dataset(scene: Scene) -> rasterio.DatasetReader:
    """Open a scene for reading, silencing rasterio's warning for plain images."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(scene.path)


def read_window(
    ds: rasterio.DatasetReader, scene: Scene, window: Window
) -> tuple[np.ndarray, np.ndarray]:
    """Read a window of the image bands and its validity mask.

    The window may reach past the scene's edges: pixels outside are filled with 0 and marked
    invalid, so a tile is always the window's size.

    Args:
        ds: The open dataset of ``scene`` (see :func:`open_dataset`).
        scene: The scene's header.
        window: Pixel window in the scene; integer offsets and sizes.

    Returns:
        ``(image, valid)``: image of shape (bands, height, width) in the scene's dtype; valid of
        shape (height, width), bool, False where the scene is nodata, alpha-masked or absent.
    """
    image = read_padded(ds, scene.bands, window, 0)
    valid = _mask_valid(ds, scene, window)
    if is_float(scene):
        finite = np.isfinite(image)
        valid &= finite.all(axis=0)
        image[~finite] = 0
    return image, valid


def read_valid(ds: rasterio.DatasetReader, scene: Scene, window: Window) -> np.ndarray:
    """Validity (bool (height, width)) of a window, as in :func:`read_window`, without the image.

    (Float scenes read the image too: their NaN and infinite pixels are invalid.)
    """
    valid = _mask_valid(ds, scene, window)
    if is_float(scene):
        valid &= np.isfinite(read_padded(ds, scene.bands, window, 0)).all(axis=0)
    return valid


def is_float(scene: Scene) -> bool:
    """Whether the scene's bands hold floating-point values (which may be NaN)."""
    return np.issubdtype(np.dtype(scene.dtype), np.floating)


def _mask_valid(ds: rasterio.DatasetReader, scene: Scene, window: Window) -> np.ndarray:
    # GDAL semantics: a pixel is valid where any band is valid (per-band nodata) ...
    valid = read_padded(ds, scene.bands, window, 0, masks=True).any(axis=0)
    # ... and an alpha band, where there is one, masks every band.
    if scene.alpha is not None:
        valid &= read_padded(ds, [scene.alpha], window, 0)[0] > 0
    return valid


def read_padded(
    ds: rasterio.DatasetReader,
    indexes: Sequence[int],
    window: Window,
    fill: float,
    masks: bool = False,
) -> np.ndarray:
    """Read bands (or their masks) in a window that may reach past the dataset's edges.

    The part inside the dataset is read as an ordinary window and placed into an array filled
    with ``fill``. (rasterio's ``boundless=True`` builds a VRT for every read: slower, and its
    memory grew with the scene, to 3 GB in a worker predicting a 20000² scene.)

    Args:
        ds: An open dataset.
        indexes: 1-based band indexes.
        window: Pixel window with integer offsets and sizes.
        fill: Value outside the dataset (masks: 0 = invalid).
        masks: Read GDAL's validity masks (uint8 0/255) instead of the values.

    Returns:
        (len(indexes), window.height, window.width), the bands' dtype (uint8 for masks).
    """
    col, row = int(window.col_off), int(window.row_off)
    width, height = int(window.width), int(window.height)
    c0, r0 = max(col, 0), max(row, 0)
    c1, r1 = min(col + width, ds.width), min(row + height, ds.height)
    dtype = np.uint8 if masks else np.dtype(ds.dtypes[indexes[0] - 1])
    out = np.full((len(indexes), height, width), fill, dtype=dtype)
    if c1 <= c0 or r1 <= r0:
        return out
    inside = Window(c0, r0, c1 - c0, r1 - r0)
    with warnings.catch_warnings(), unreadable_blocks(ds.name):
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        read = ds.read_masks if masks else ds.read
        out[:, r0 - row : r1 - row, c0 - col : c1 - col] = read(list(indexes), window=inside)
    return out


@contextlib.contextmanager
def unreadable_blocks(path: str) -> Iterator[None]:
    """Turn GDAL's read errors (a truncated or corrupt file) into a one-line InputFileError."""
    try:
        yield
    except (RasterioIOError, CPLE_BaseError) as err:
        detail = str(err.__cause__ or err) or "unknown reason"
        first = detail.splitlines()[0][:200]
        raise InputFileError(
            f"{display_path(path)}: cannot be read to the end ({first}); the file is truncated "
            "or corrupt, copy or download it again"
        ) from None


@dataclass(frozen=True)
class BandStats:
    """Statistics of one band over its valid pixels.

    ``approximate`` is True when they were computed on a decimated read of a large scene.
    """

    band: int
    name: str
    minimum: float
    maximum: float
    mean: float
    std: float
    valid_fraction: float
    approximate: bool


def band_statistics(scene: Scene, max_pixels: int = 4_000_000) -> list[BandStats]:
    """Per-band min, max, mean and standard deviation over valid pixels.

    Scenes larger than ``max_pixels`` are read decimated (GDAL uses overviews when present),
    like ``gdalinfo -approx_stats``, so the cost does not grow with the scene.
    """
    scale = max(1.0, math.sqrt(scene.width * scene.height / max_pixels))
    out_h = max(1, round(scene.height / scale))
    out_w = max(1, round(scene.width / scale))
    with open_dataset(scene) as ds, warnings.catch_warnings(), unreadable_blocks(scene.path):
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        data = ds.read(scene.bands, out_shape=(scene.count, out_h, out_w))
        masks = ds.read_masks(scene.bands, out_shape=(scene.count, out_h, out_w)) > 0
        if scene.alpha is not None:
            masks &= ds.read(scene.alpha, out_shape=(out_h, out_w))[None] > 0
    if is_float(scene):  # NaN and infinities are nodata (see the module docstring)
        masks &= np.isfinite(data).all(axis=0)[None]
    stats = []
    for i, band in enumerate(scene.bands):
        values = data[i][masks[i]].astype(np.float64)
        if values.size:
            stat = (values.min(), values.max(), values.mean(), values.std())
        else:
            stat = (math.nan,) * 4
        stats.append(
            BandStats(
                band=band,
                name=scene.band_names[i] if scene.band_names else f"band {band}",
                minimum=float(stat[0]),
                maximum=float(stat[1]),
                mean=float(stat[2]),
                std=float(stat[3]),
                valid_fraction=float(masks[i].mean()),
                approximate=scale > 1.0,
            )
        )
    return stats
