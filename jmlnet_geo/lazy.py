"""Lazy public names of a package: ``__all__`` without importing the heavy modules behind it."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` (PEP 562) that imports each public name from its submodule.

    Args:
        package: The package's ``__name__``.
        homes: Public name -> the submodule (relative name) that defines it.

    Returns:
        The ``__getattr__`` to assign in the package's ``__init__``.
    """

    def __getattr__(name: str) -> Any:  # noqa: N807 - the module hook's required name
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{homes[name]}"), name)

    return __getattr__
