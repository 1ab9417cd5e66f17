"""The ``jmlgeo`` command line: thin typer commands over :mod:`jmlnet_geo`.

Installed as ``jmlnet_geo.cli`` (setuptools package-dir), not as a bare ``cli`` package.
"""
