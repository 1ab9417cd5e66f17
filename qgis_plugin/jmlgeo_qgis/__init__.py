"""JMLNet for QGIS: train from boxes, make proposals, predict and evaluate with ``jmlgeo``.

A thin shell over the ``jmlgeo`` command line: the plugin never imports torch or ``jmlnet_geo``
(QGIS's Python has neither, and two GDAL builds in one process break). :mod:`.runner` starts the
command and reads its JSON progress; :mod:`.algorithms` are the Processing algorithms.

QGIS imports this package at start-up, so it stays light: the plugin class is imported only when
QGIS asks for it.
"""


def classFactory(iface):  # noqa: N802 - the name QGIS looks for
    """The plugin instance QGIS loads (imported lazily, on demand)."""
    from .plugin import JmlGeoPlugin

    return JmlGeoPlugin(iface)
