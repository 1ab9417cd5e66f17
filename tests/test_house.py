"""House rules read from the source with ``ast``: imports point downstream, no module uses
another's private names, modules stay under 400 lines.

The layers follow ``../shared/DESIGN.md``'s layout and issue 16: the base (errors, vocabulary,
config...), then io, then the pieces built on it (tiling, models, the model file format...),
then what composes them (proposals, predict, detection), then audit, and ``train/`` on top.
A module imports only modules of lower layers (or of its own top-level package or module);
imports under ``if TYPE_CHECKING:`` are annotations, not arrows, and do not count.
"""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: Layer of each top-level module or subpackage of ``jmlnet_geo`` (``jmlnet_geo``: its
#: ``__init__``). A new module needs a line here: where it sits is a design decision.
LAYERS = {
    "errors": 0,
    "vocabulary": 0,
    "lazy": 0,
    "children": 0,
    "jmlnet_geo": 1,
    "card": 1,
    "config": 1,
    "devices": 1,
    "schemas": 1,
    "io": 1,
    "box_losses": 2,
    "doctor": 2,
    "evaluate": 2,
    "info": 2,
    "losses": 2,
    "model_file": 2,
    "models": 2,
    "normalization": 2,
    "predict_windows": 2,
    "stac": 2,
    "tiling": 2,
    "vectorize": 2,
    "blending": 3,
    "box_sampler": 3,
    "bundle": 3,
    "detector_file": 3,
    "detection": 4,
    "export": 4,
    "predict": 4,
    "proposals": 4,
    "audit": 5,
    "cluster": 5,
    "cluster_predict": 6,
    "audit_layers": 5,
    "audit_missing": 5,
    "audit_appearance": 6,
    "audit_run": 7,
    "train": 8,
}

#: The modules these rules cover (the plugin's tests and the benches' tests are not modules).
MODULE_FOLDERS = ("jmlnet_geo", "cli", "bench", "qgis_plugin/jmlgeo_qgis")
#: Where the modules whose private names are theirs alone live (as imported).
OURS = ("jmlnet_geo", "bench", "cli", "qgis_plugin")


def _files(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (REPO / f).rglob("*.py"))


def _group(module: str) -> str:
    """``jmlnet_geo.proposals.crf`` -> ``proposals``; ``jmlnet_geo`` -> ``jmlnet_geo``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "jmlnet_geo"


def _module_of(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_nodes(tree: ast.AST):
    """Every node but those under ``if TYPE_CHECKING:``."""
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        yield node
        todo.extend(ast.iter_child_nodes(node))


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, imported names) of each runtime import, relative ones resolved."""
    package = _module_of(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.append((node.lineno, module, [a.name for a in node.names]))
    return found


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_every_library_module_has_a_layer():
    groups = {_group(_module_of(p)) for p in _files("jmlnet_geo")}
    assert sorted(groups - set(LAYERS)) == [], "add the new modules to LAYERS"


def test_imports_point_downstream():
    upstream = []
    for path in _files("jmlnet_geo"):
        here = _group(_module_of(path))
        for line, module, _ in _imports(path):
            if not module.startswith("jmlnet_geo"):
                continue
            there = _group(module)
            if there == "cli" or there not in LAYERS:
                upstream.append(f"{path.relative_to(REPO)}:{line} imports {module}")
            elif there != here and LAYERS[there] >= LAYERS[here]:
                upstream.append(
                    f"{path.relative_to(REPO)}:{line} ({here}, layer {LAYERS[here]}) imports "
                    f"{module} (layer {LAYERS[there]})"
                )
    assert upstream == []


def test_only_train_imports_train():
    importers = [
        f"{path.relative_to(REPO)}:{line}"
        for path in _files("jmlnet_geo")
        if _group(_module_of(path)) != "train"
        for line, module, _ in _imports(path)
        if module == "jmlnet_geo.train" or module.startswith("jmlnet_geo.train.")
    ]
    assert importers == []


@pytest.mark.parametrize("folder", MODULE_FOLDERS)
def test_no_module_uses_another_modules_private_names(folder):
    used = []
    for path in _files(folder):
        own = _module_of(path)
        modules = {}  # local name -> imported module
        for line, module, names in _imports(path):
            if module == own:
                continue
            used += [
                f"{path.relative_to(REPO)}:{line} imports {module}.{n}"
                for n in names
                if _private(n)
            ]
            for n in names:
                modules[n] = f"{module}.{n}"
        for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):  # import a.b as c: c is a.b; import a.b: a is a
                modules.update({a.asname or a.name.split(".")[0]: a.name for a in node.names})
        for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Attribute) or not _private(node.attr):
                continue
            owner = ast.unparse(node.value)  # mod._x, pkg.mod._x
            first = owner.split(".")[0]
            if first in modules and modules[first].startswith(OURS):
                used.append(f"{path.relative_to(REPO)}:{node.lineno} uses {owner}.{node.attr}")
    assert used == []


@pytest.mark.parametrize("folder", ["jmlnet_geo", "cli", "bench", "qgis_plugin"])
def test_modules_stay_under_400_lines(folder):
    long = [
        f"{p.relative_to(REPO)}: {n} lines"
        for p in _files(folder)
        if "tests" not in p.relative_to(REPO).parts
        and (n := len(p.read_text(encoding="utf-8").splitlines())) >= 400
    ]
    assert long == []
