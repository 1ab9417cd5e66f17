"""The ``jmlgeo`` command line: thin typer commands over :mod:`jmlnet_geo` (installed as jmlnet_geo.cli)."""
