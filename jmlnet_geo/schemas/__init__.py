"""JSON schemas of the STAC extensions jmlnet_geo writes, and offline validation against them.

:func:`validate` checks a STAC Item against the core STAC 1.1.0 Item schema that pystac ships
and against the schema of each extension it declares, from the files in this folder (see
README.md for where they come from). Nothing is downloaded: an extension whose schema is not
here is an error that says so.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from collections.abc import Mapping
from typing import Any

from jmlnet_geo.errors import JmlGeoError

__all__ = ["CLASSIFICATION_SCHEMA", "MLM_SCHEMA", "StacValidationError", "validate"]

MLM_SCHEMA = "https://stac-extensions.github.io/mlm/v1.4.0/schema.json"
CLASSIFICATION_SCHEMA = "https://stac-extensions.github.io/classification/v1.1.0/schema.json"
_EXT = "https://stac-extensions.github.io"
#: Schema URI -> file in jmlnet_geo/schemas (processing v1.1.0's file says v1.0.0 as its $id).
_BUNDLED = {
    MLM_SCHEMA: "mlm-v1.4.0.json",
    CLASSIFICATION_SCHEMA: "classification-v1.1.0.json",
    f"{_EXT}/raster/v1.1.0/schema.json": "raster-v1.1.0.json",
    f"{_EXT}/projection/v1.1.0/schema.json": "projection-v1.1.0.json",
    f"{_EXT}/processing/v1.1.0/schema.json": "processing-v1.1.0.json",
    f"{_EXT}/processing/v1.0.0/schema.json": "processing-v1.1.0.json",
}
_ITEM_SCHEMA = "https://schemas.stacspec.org/v1.1.0/item-spec/json-schema/item.json"


class StacValidationError(JmlGeoError, ValueError):
    """A STAC document does not validate against one of its schemas."""


@functools.lru_cache(maxsize=1)
def _registry() -> Any:
    from pystac.validation.local_validator import get_local_schema_cache
    from referencing import Registry, Resource

    store = dict(get_local_schema_cache())
    folder = importlib.resources.files(__name__)
    for uri, name in _BUNDLED.items():
        store[uri] = json.loads(folder.joinpath(name).read_text(encoding="utf-8"))
    registry = Registry().with_resources(
        (uri, Resource.from_contents(schema)) for uri, schema in store.items()
    )
    return store, registry


def validate(document: Mapping[str, Any], name: str = "STAC item") -> list[str]:
    """Validate a STAC Item dict against the core schema and each of its extensions, offline.

    Args:
        document: The item as JSON (``item.to_dict()``).
        name: What to call it in messages (its file).

    Returns:
        The schema URIs it was validated against.

    Raises:
        StacValidationError: A schema is not available offline, or the first error found.
    """
    from jsonschema import Draft7Validator
    from jsonschema.exceptions import best_match
    from referencing.exceptions import Unresolvable

    store, registry = _registry()
    uris = [_ITEM_SCHEMA, *document.get("stac_extensions", [])]
    for uri in uris:
        if uri not in store:
            raise StacValidationError(f"{name}: the schema {uri} is not available offline")
        try:
            error = best_match(Draft7Validator(store[uri], registry=registry).iter_errors(document))
        except Unresolvable as err:
            raise StacValidationError(f"{name}: {uri} needs {err}: not available offline") from None
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(top)"
            raise StacValidationError(f"{name}: invalid against {uri} at {where}: {error.message}")
    return uris
