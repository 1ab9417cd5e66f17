"""STAC for bundles and predictions, written with pystac and rio-stac, validated offline.

- :func:`write_model_item`: a bundle as a STAC Item with the Machine Learning Model extension
  (MLM v1.4.0): architecture, tasks, framework, pretrained source, parameters, input bands with
  their z-score normalisation and shape, output classes (values, names, colours), accelerator;
  the bundle (and the ONNX file, when exported) as ``mlm:model`` assets.
- :func:`write_prediction_item`: a class COG as a STAC Item: geometry and bbox in EPSG:4326 and
  the projection extension from rio-stac, classification classes on the raster asset, polygons
  and probabilities as assets when written, a ``derived_from`` link to the model item. A plain
  image without georeferencing gets a null geometry and says so in ``description`` (its item
  still records classes and files, as a catalogue of iSAID / DOTA predictions needs).
- :func:`resolve_scene`: a local STAC Item given as a scene -> the asset with the bundle's bands.

Every item written is validated by :func:`jmlnet_geo.schemas.validate` (no network).
Classification is declared at v1.1.0, the version MLM v1.4.0's schema refers to. Local files
only; nothing here imports torch.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jmlnet_geo.errors import InputFileError, display_path
from jmlnet_geo.schemas import CLASSIFICATION_SCHEMA, validate

__all__ = [
    "find_model_item",
    "is_stac_item",
    "model_item",
    "prediction_item",
    "resolve_scene",
    "write_model_item",
    "write_prediction_item",
]

_SAFETENSORS = "application/octet-stream; application=safetensors"
_ONNX = "application/octet-stream; framework=onnx; profile=onnx"
_GPKG = "application/geopackage+sqlite3"
#: Human names of the presets' architectures (the factories live in jmlnet_geo.models).
_ENCODERS = {"fast": "EfficientNet-Lite0", "paper": "ResNet-50"}
_HEADS = {"deeplabv3": "DeepLabV3", "deeplabv3plus": "DeepLabV3+"}
_NCHW = ["batch", "channel", "height", "width"]


# ------------------------------------------------------------------------------------ classes


def _band_names(card: Mapping[str, Any]) -> list[str]:
    """The card's band names, ``band_N`` where a band has none (or GDAL's ``undefined``)."""
    names = list(card.get("band_names") or [])
    return [
        n if i < len(names) and (n := names[i]) and n != "undefined" else f"band_{i + 1}"
        for i in range(int(card["bands"]))
    ]


def _classes(card: Mapping[str, Any], nodata: bool = False) -> list[Any]:
    """Classification objects: background 0, the card's classes 1..K, and 255 when ``nodata``."""
    from pystac.extensions.classification import Classification

    colours = [[0, 0, 0], *card.get("colours", [])]
    classes = []
    for value, name in enumerate(["background", *card["classes"]]):
        rgb = colours[value] if value < len(colours) else None
        hint = "{:02X}{:02X}{:02X}".format(*rgb[:3]) if rgb else None
        classes.append(
            Classification.create(
                value=value, name=name, title=name, description=name, color_hint=hint
            )
        )
    if nodata:
        classes.append(
            Classification.create(value=255, name="nodata", description="nodata", nodata=True)
        )
    return classes


def _pin_classification(item: Any) -> None:
    """Declare classification v1.1.0 (the version MLM v1.4.0 refers to) instead of pystac's."""
    extensions = [u for u in item.stac_extensions if "/classification/" not in u]
    item.stac_extensions = [*extensions, CLASSIFICATION_SCHEMA]


# --------------------------------------------------------------------------------- model item


def model_item(
    bundle: str | os.PathLike[str],
    item_path: str | os.PathLike[str],
    onnx: str | os.PathLike[str] | None = None,
) -> Any:
    """The STAC Item (MLM v1.4.0) of a bundle, hrefs relative to ``item_path``.

    Raises:
        InputFileError: Not a bundle.
    """
    import pystac
    from pystac.extensions import mlm

    from jmlnet_geo.card import read_card

    header = read_card(bundle)
    card = header.card
    arch = card.get("architecture", {})
    preset = arch.get("preset", "fast")
    tile, bands = int(card["tile_size"]), _band_names(card)
    norm = card["normalization"]
    scaling = [
        mlm.ValueScaling.create(type=mlm.ValueScalingType.Z_SCORE, mean=m, stddev=s).to_dict()
        for m, s in zip(norm["mean"], norm["std"], strict=True)
    ]
    model_input = mlm.ModelInput.create(
        name="scene",
        bands=bands,
        input=mlm.InputStructure.create([-1, len(bands), tile, tile], _NCHW, "float32"),
        description="Raw scene values, one z-score (value - mean) / stddev per band; nodata "
        "pixels are set to 0 after scaling. Any window size works; tile_size is the training one.",
    )
    model_input.properties["value_scaling"] = scaling  # one per band (pystac takes one object)
    output = mlm.ModelOutput.create(
        name="logits",
        tasks=[mlm.TaskType.SEMANTIC_SEGMENTATION],
        result=mlm.ResultStructure.create(
            [-1, len(card["classes"]) + 1, tile, tile], _NCHW, "float32"
        ),
        description="Logits per class, background first; the argmax is the class id.",
        classes=_classes(card),
    )
    config = card.get("config") or {}
    segmenter = config.get("segmenter") if isinstance(config, dict) else None
    created = dt.datetime.fromtimestamp(os.path.getmtime(bundle), tz=dt.UTC)
    name = Path(bundle).stem
    properties = {"bands": [{"name": b} for b in bands]}
    item = pystac.Item(id=name, geometry=None, bbox=None, datetime=created, properties=properties)
    item.properties["description"] = (
        f"jmlgeo segmenter for {', '.join(card['classes'])} ({len(bands)} bands, "
        f"tile {tile} px); predict with `jmlgeo predict {Path(bundle).name} SCENE --out DIR`."
    )
    versions = card.get("versions") or {}
    ext = mlm.MLMExtension.ext(item, add_if_missing=True)
    ext.apply(
        name=name,
        architecture=f"{_HEADS.get(arch.get('segmenter'), 'DeepLabV3')} "
        f"({_ENCODERS.get(preset, preset)})",
        tasks=[mlm.TaskType.SEMANTIC_SEGMENTATION],
        input=[model_input],
        output=[output],
        framework="PyTorch",
        framework_version=versions.get("torch"),  # None (left out) when not recorded
        total_parameters=header.total_parameters,
        memory_size=header.size_bytes,
        accelerator=mlm.AcceleratorType.AMD64,
        accelerator_constrained=False,
        accelerator_summary="CPU; a CUDA GPU with `jmlgeo predict --device cuda`",
        batch_size_suggestion=8,
        hyperparameters=mlm.Hyperparameters.create(**segmenter) if segmenter else None,
    )
    item.properties.pop("mlm:pretrained_source", None)  # null would say "from scratch"
    if segmenter and "weights" in segmenter:
        weights = segmenter["weights"]
        ext.pretrained = weights is not None
        ext.pretrained_source = _pretrained_source(weights, preset)
    for key in ("supervision", "stages", "validation", "seed"):  # what the run did (card 2)
        if card.get(key) not in (None, {}, []):
            item.properties[f"jmlgeo:{key}"] = card[key]
    _pin_classification(item)
    item.set_self_href(os.path.abspath(item_path))
    _add_model_asset(item, "model", bundle, _SAFETENSORS, "safetensors", "jmlgeo bundle")
    # STAC 1.1.0's item schema allows ``bands`` in properties (which MLM's band check reads)
    # only when an asset has ``bands`` too: the bundle's input bands
    item.assets["model"].extra_fields["bands"] = item.properties["bands"]
    if onnx is not None:
        _add_model_asset(item, "onnx", onnx, _ONNX, "onnx", "ONNX (Deepness metadata)")
    item.make_asset_hrefs_relative()
    return item


def _pretrained_source(weights: str | None, preset: str) -> str | None:
    if weights is None:
        return None
    if str(weights).lower() == "imagenet":
        return f"ImageNet ({_ENCODERS.get(preset, preset)})"
    return os.path.basename(str(weights)) if os.sep in str(weights) else str(weights)


def _add_model_asset(item: Any, key: str, path: Any, media: str, kind: str, title: str) -> None:
    import pystac
    from pystac.extensions import mlm

    asset = pystac.Asset(os.path.abspath(path), title=title, media_type=media)
    asset.roles = ["mlm:model", "data"]
    item.add_asset(key, asset)
    mlm.AssetGeneralMLMExtension.ext(asset, add_if_missing=False).artifact_type = kind


def write_model_item(
    bundle: str | os.PathLike[str],
    out: str | os.PathLike[str],
    onnx: str | os.PathLike[str] | None = None,
) -> Path:
    """Write (atomically) and validate the MLM item of a bundle; returns ``out``.

    Raises:
        InputFileError: Not a bundle. StacValidationError: Invalid item (a bug: report it).
    """
    return _save(model_item(bundle, out, onnx), out)


def find_model_item(bundle: str | os.PathLike[str]) -> Path | None:
    """``<bundle stem>.json`` beside the bundle when it is a STAC Item with the bundle as asset."""
    candidate = Path(bundle).with_suffix(".json")
    if not candidate.is_file():
        return None
    try:
        document = json.loads(candidate.read_text(encoding="utf-8"))
        hrefs = [a.get("href", "") for a in document.get("assets", {}).values()]
    except (ValueError, AttributeError, OSError):
        return None
    target = os.path.realpath(bundle)
    for href in hrefs:
        if os.path.realpath(os.path.join(candidate.parent, href)) == target:
            return candidate
    return None


# ---------------------------------------------------------------------------- prediction item


def prediction_item(
    classes: str | os.PathLike[str],
    card: Mapping[str, Any],
    item_path: str | os.PathLike[str],
    polygons: str | os.PathLike[str] | None = None,
    probabilities: str | os.PathLike[str] | None = None,
    model_item_path: str | os.PathLike[str] | None = None,
) -> Any:
    """The STAC Item of a class raster (see the module docstring); hrefs relative to the item."""
    import pystac
    import rasterio
    from pystac.extensions.classification import ClassificationExtension
    from rio_stac import create_stac_item

    stem = Path(classes).name.removesuffix(".tif").removesuffix(".classes")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(classes) as ds:
            georeferenced = ds.crs is not None and not ds.transform.is_identity
    if georeferenced:
        item = create_stac_item(
            os.fspath(classes),
            id=stem,
            asset_name="classes",
            asset_roles=["data"],
            asset_href=os.path.abspath(classes),
            with_proj=True,
        )
    else:  # plain image: pixel coordinates only, no footprint to give
        item = pystac.Item(
            id=stem, geometry=None, bbox=None, datetime=dt.datetime.now(dt.UTC), properties={}
        )
        item.add_asset("classes", pystac.Asset(os.path.abspath(classes), roles=["data"]))
        item.properties["description"] = (
            "Prediction of a plain image without georeferencing: geometry is null and the "
            "raster is in pixel coordinates."
        )
    asset = item.assets["classes"]
    asset.media_type = pystac.MediaType.COG
    asset.title = "classes (0 background, 1..K classes, 255 nodata)"
    ClassificationExtension.ext(asset, add_if_missing=True).classes = _classes(card, nodata=True)
    _pin_classification(item)
    for key, path, media, title in (
        ("polygons", polygons, _GPKG, "polygons (class id, class name, area)"),
        ("probabilities", probabilities, pystac.MediaType.COG, "probabilities, uint8 0-255"),
    ):
        if path is not None:
            item.add_asset(key, pystac.Asset(os.path.abspath(path), title, media_type=media))
            item.assets[key].roles = ["data"]
    item.set_self_href(os.path.abspath(item_path))
    if model_item_path is not None:
        href = os.path.relpath(os.path.abspath(model_item_path), Path(item_path).parent.absolute())
        item.add_link(pystac.Link("derived_from", href, "application/geo+json", "model"))
    item.make_asset_hrefs_relative()
    return item


def write_prediction_item(
    classes: str | os.PathLike[str],
    bundle: str | os.PathLike[str],
    polygons: str | os.PathLike[str] | None = None,
    probabilities: str | os.PathLike[str] | None = None,
    model_item_path: str | os.PathLike[str] | None = None,
) -> Path:
    """Write ``<stem>.item.json`` beside a class COG, validated; returns its path.

    ``model_item_path`` defaults to the bundle's own item (:func:`find_model_item`), if any.
    """
    from jmlnet_geo.card import read_card

    card = read_card(bundle).card
    if model_item_path is not None and not Path(model_item_path).is_file():
        raise InputFileError(
            f"{display_path(model_item_path)}: model item not found; write it with "
            "`jmlgeo export BUNDLE --stac ITEM.json` or leave --model-item out"
        )
    model = model_item_path or find_model_item(bundle)
    stem = Path(classes).name.removesuffix(".tif").removesuffix(".classes")
    out = Path(classes).with_name(f"{stem}.item.json")
    item = prediction_item(classes, card, out, polygons, probabilities, model)
    return _save(item, out)


def _save(item: Any, out: str | os.PathLike[str]) -> Path:
    from jmlnet_geo.io.write import atomic_output

    # through JSON: rio-stac's coordinates are tuples, which JSON schema does not call arrays
    document = json.loads(json.dumps(item.to_dict(include_self_link=False, transform_hrefs=False)))
    validate(document, display_path(out))
    with atomic_output(out) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(document, f, indent=2)
    return Path(out)


# ------------------------------------------------------------------------------ STAC in


def is_stac_item(path: str | os.PathLike[str]) -> bool:
    """True for a ``.json`` / ``.geojson`` file (a scene argument read as a STAC Item)."""
    return Path(path).suffix.lower() in (".json", ".geojson")


def resolve_scene(
    path: str | os.PathLike[str], card: Mapping[str, Any], asset: str | None = None
) -> str:
    """The raster a local STAC Item points to for a bundle with this card.

    The asset is ``asset`` when given; otherwise the one whose band names (STAC 1.1 ``bands``
    or ``eo:bands``) are the bundle's, else the only raster asset with the bundle's band count
    (``raster:bands``), else the only raster asset. Relative hrefs are resolved from the item.

    Raises:
        InputFileError: Not a STAC Item, no (or several) matching assets, or a remote href;
            the message names the file and says what to do.
    """
    import pystac

    shown = display_path(path)
    try:
        item = pystac.Item.from_file(os.fspath(path))
    except Exception as err:  # pystac raises many kinds for a bad document
        raise InputFileError(f"{shown}: not a STAC Item ({type(err).__name__}: {err})") from None
    if asset is not None:
        if asset not in item.assets:
            raise InputFileError(
                f"{shown}: no asset {asset!r}; it has {', '.join(item.assets) or 'none'}"
            )
        chosen = asset
    else:
        chosen = _matching_asset(item, card, shown)
    href = item.assets[chosen].get_absolute_href() or item.assets[chosen].href
    if "://" in href and not href.startswith("file://"):
        raise InputFileError(f"{shown}: asset {chosen!r} is remote ({href}); download it first")
    return href.removeprefix("file://")


def _matching_asset(item: Any, card: Mapping[str, Any], shown: str) -> str:
    wanted = [n.casefold() for n in _band_names(card)]
    rasters, by_count, unknown = [], [], []
    for key, candidate in item.assets.items():
        media = (candidate.media_type or "").lower()
        if not (media.startswith("image/") or candidate.href.lower().endswith((".tif", ".tiff"))):
            continue
        if {"thumbnail", "overview"} & set(candidate.roles or []):
            continue
        rasters.append(key)
        fields = candidate.extra_fields
        names = [b.get("name") or b.get("common_name") for b in fields.get("bands") or []]
        names = names or [b.get("name") or b.get("common_name") for b in fields.get("eo:bands", [])]
        if [str(n).casefold() for n in names] == wanted:
            return key
        count = len(names) or len(fields.get("raster:bands", []))
        if count == len(wanted):
            by_count.append(key)
        elif count == 0:
            unknown.append(key)
    if len(by_count) == 1:
        return by_count[0]
    if len(unknown) == 1 and len(rasters) == 1:  # the band check of predict still applies
        return unknown[0]
    listed = ", ".join(by_count or rasters) or "none"
    raise InputFileError(
        f"{shown}: no single asset has the bundle's {len(wanted)} bands ({', '.join(wanted)}); "
        f"raster assets: {listed}; name one with --asset"
    )
