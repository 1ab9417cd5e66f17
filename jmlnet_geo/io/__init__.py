"""Reading what users bring (scenes, box layers, datasets) and writing what we make.

- :mod:`~jmlnet_geo.io.raster`: scenes (metadata, windows, band statistics);
- :mod:`~jmlnet_geo.io.vector`: box layers (CRS, classes, boxes per scene);
- :mod:`~jmlnet_geo.io.write`: atomic outputs and vector writing;
- :mod:`~jmlnet_geo.io.class_raster`: class rasters (COG, colour table, QGIS style);
- :mod:`~jmlnet_geo.io.importers`: COCO and DOTA datasets.

This ``__init__`` stays light: the names of ``__all__`` are imported on first use (PEP 562), so
``import jmlnet_geo.io`` loads neither rasterio nor geopandas until one is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jmlnet_geo.lazy import lazy_exports

if TYPE_CHECKING:
    from jmlnet_geo.io.class_raster import (
        class_colours,
        class_raster_writer,
        copy_to_cog,
        read_class_names,
        write_qml,
    )
    from jmlnet_geo.io.importers import ImportSummary, import_coco, import_dota
    from jmlnet_geo.io.raster import (
        BandStats,
        PlainImageWarning,
        Scene,
        band_statistics,
        open_dataset,
        open_scene,
        open_scenes,
        read_padded,
        read_valid,
        read_window,
    )
    from jmlnet_geo.io.vector import (
        BACKGROUND,
        IGNORE,
        BoxesDroppedWarning,
        BoxLayer,
        ClassMap,
        SceneBoxes,
        boxes_for_scene,
        boxes_for_scenes,
        read_boxes,
    )
    from jmlnet_geo.io.write import (
        atomic_output,
        check_vector_output,
        check_writable,
        output_folder,
        write_vector,
    )

#: Submodule -> the public names it defines.
_MODULES = {
    "raster": (
        "BandStats",
        "PlainImageWarning",
        "Scene",
        "band_statistics",
        "open_dataset",
        "open_scene",
        "open_scenes",
        "read_padded",
        "read_valid",
        "read_window",
    ),
    "vector": (
        "BACKGROUND",
        "IGNORE",
        "BoxLayer",
        "BoxesDroppedWarning",
        "ClassMap",
        "SceneBoxes",
        "boxes_for_scene",
        "boxes_for_scenes",
        "read_boxes",
    ),
    "write": (
        "atomic_output",
        "check_vector_output",
        "check_writable",
        "output_folder",
        "write_vector",
    ),
    "class_raster": (
        "class_colours",
        "class_raster_writer",
        "copy_to_cog",
        "read_class_names",
        "write_qml",
    ),
    "importers": ("ImportSummary", "import_coco", "import_dota"),
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}

__all__ = [
    "BACKGROUND",
    "BandStats",
    "BoxLayer",
    "BoxesDroppedWarning",
    "ClassMap",
    "IGNORE",
    "ImportSummary",
    "PlainImageWarning",
    "Scene",
    "SceneBoxes",
    "atomic_output",
    "band_statistics",
    "boxes_for_scene",
    "boxes_for_scenes",
    "check_vector_output",
    "check_writable",
    "class_colours",
    "class_raster_writer",
    "copy_to_cog",
    "import_coco",
    "import_dota",
    "open_dataset",
    "open_scene",
    "open_scenes",
    "output_folder",
    "read_boxes",
    "read_class_names",
    "read_padded",
    "read_valid",
    "read_window",
    "write_qml",
    "write_vector",
]


__getattr__ = lazy_exports(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
