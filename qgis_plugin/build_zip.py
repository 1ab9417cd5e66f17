"""Build the plugin zip for QGIS "Plugins > Manage and Install Plugins > Install from ZIP".

Usage: ``python3 qgis_plugin/build_zip.py [dist/jmlgeo_qgis.zip]`` (what ``make qgis-plugin`` runs).
The zip holds one root folder, ``jmlgeo_qgis/``, as QGIS expects; caches are left out and every
entry gets the same timestamp, so the same sources give the same bytes.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

PLUGIN = Path(__file__).resolve().parent / "jmlgeo_qgis"
SKIP_DIRS = {"__pycache__"}
SKIP_SUFFIXES = {".pyc", ".pyo"}
TIMESTAMP = (2020, 1, 1, 0, 0, 0)


def plugin_files(root: Path = PLUGIN) -> list[Path]:
    """The files that go into the zip, sorted."""
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and not SKIP_DIRS & set(p.relative_to(root).parts)
        and p.suffix not in SKIP_SUFFIXES
    )


def build(target: Path) -> Path:
    """Write the zip to ``target`` (atomically) and return it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in plugin_files():
            name = f"{PLUGIN.name}/{path.relative_to(PLUGIN).as_posix()}"
            info = zipfile.ZipInfo(name, TIMESTAMP)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, path.read_bytes())
    partial.replace(target)
    return target


def main(argv: list[str]) -> None:
    """Build the zip named on the command line (default ``dist/jmlgeo_qgis.zip``)."""
    target = Path(argv[0]) if argv else Path("dist") / "jmlgeo_qgis.zip"
    build(target)
    count = len(plugin_files())
    print(f"{target}: {count} files; install it in QGIS: Plugins > Manage > Install from ZIP")


if __name__ == "__main__":
    main(sys.argv[1:])
