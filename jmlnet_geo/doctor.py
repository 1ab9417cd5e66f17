"""What a bug report needs: versions of the stack, the device, threads, optional extras.

``jmlgeo doctor`` prints :func:`report`. Heavy packages are imported inside :func:`report`, so
``import jmlnet_geo.doctor`` stays light; a package that is missing or fails to import is
reported as such instead of failing.
"""

from __future__ import annotations

import importlib
import os
import platform
import shutil
import sys


def _version(module: str, attribute: str = "__version__") -> str:
    try:
        imported = importlib.import_module(module)
    except Exception as err:  # noqa: BLE001 - a broken install is what doctor reports
        return f"not available ({type(err).__name__}: {err})".splitlines()[0]
    return str(getattr(imported, attribute, "unknown"))


def _device() -> tuple[str, str]:
    try:
        import torch
    except Exception as err:  # noqa: BLE001
        return f"unknown (torch: {err})".splitlines()[0], "unknown"
    threads = str(torch.get_num_threads())
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        return f"cuda ({names})", threads
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps", threads
    return "cpu (no CUDA device)", threads


def _qgis() -> str:
    qgis = shutil.which("qgis") or shutil.which("qgis_process")
    return f"found: {qgis}" if qgis else "not found on PATH (the plugin needs QGIS >= 3.22)"


def report() -> dict[str, str]:
    """Name -> value for everything the report lists, in order."""
    from jmlnet_geo import __version__

    try:
        from osgeo import gdal  # noqa: F401 - GDAL's own bindings are optional

        gdal_bindings = "yes"
    except ImportError:
        gdal_bindings = "no (rasterio's GDAL is used)"
    device, threads = _device()
    try:
        import rasterio

        gdal_version = rasterio.__gdal_version__
    except Exception as err:  # noqa: BLE001
        gdal_version = f"not available ({err})".splitlines()[0]
    crf = _version("pydensecrf.densecrf", "__name__")
    return {
        "jmlgeo": __version__,
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": platform.platform(),
        "torch": _version("torch"),
        "torchvision": _version("torchvision"),
        "torchgeo": _version("torchgeo"),
        "lightning": _version("lightning"),
        "rasterio": _version("rasterio"),
        "GDAL": gdal_version,
        "GDAL Python bindings": gdal_bindings,
        "geopandas": _version("geopandas"),
        "opencv": _version("cv2"),
        "device": device,
        "torch threads": threads,
        "CPU cores": str(os.cpu_count() or "unknown"),
        "dense CRF (pydensecrf)": "available" if not crf.startswith("not") else crf,
        "QGIS": _qgis(),
    }


def format_report(values: dict[str, str]) -> str:
    """One ``name: value`` line each, names aligned: paste it into a bug report."""
    width = max(len(name) for name in values)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in values.items())


__all__ = ["format_report", "report"]
