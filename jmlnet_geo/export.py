"""ONNX export of a bundle, with the metadata the Deepness QGIS plugin reads.

The exported graph takes float32 (N, C, H, W) tiles **scaled to 0..1** (raw value / 255), as
Deepness feeds them, and returns per-class probabilities (N, K+1, H, W) (softmax), background
first. Deepness then standardises with ``standardization_mean`` / ``standardization_std``, so
the bundle's normalisation (in raw scene units) is written divided by 255. That is exact for
8-bit scenes; for other dtypes Deepness's 0..1 scaling does not hold and the model should be
used with ``jmlgeo predict`` instead (the metadata keeps the raw values too).

Metadata keys (Deepness): ``model_type`` (``Segmentor``), ``class_names`` (JSON id -> name),
``resolution`` (cm per pixel), ``tiles_size``, ``tiles_overlap`` (percent),
``standardization_mean``, ``standardization_std``; ours: ``jmlgeo_model_card``.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict

import torch
from torch import nn

from jmlnet_geo.bundle import ModelCard, build_model, load_bundle
from jmlnet_geo.errors import JmlGeoError
from jmlnet_geo.io.write import atomic_output

#: Default overlap of Deepness tiles, percent.
TILES_OVERLAP = 25


class _Probabilities(nn.Module):
    """The segmenter with Deepness's input scaling undone and a softmax on top."""

    def __init__(self, model: nn.Module, card: ModelCard) -> None:
        super().__init__()
        self.model = model
        mean = torch.tensor(card.normalization["mean"], dtype=torch.float32) / 255.0
        std = torch.tensor(card.normalization["std"], dtype=torch.float32) / 255.0
        self.register_buffer("mean", mean[None, :, None, None])
        self.register_buffer("std", std[None, :, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """float32 (N, C, H, W) in 0..1 -> probabilities (N, K+1, H, W)."""
        return torch.softmax(self.model((x - self.mean) / self.std), dim=1)


def export_onnx(bundle: str | os.PathLike[str], out: str | os.PathLike[str]) -> dict[str, str]:
    """Write the bundle's segmenter as ONNX with Deepness metadata; returns the metadata.

    Raises:
        InputFileError: Not a bundle.
        JmlGeoError: The ONNX packages are missing or the export failed.
    """
    try:
        import onnx
    except ImportError:
        raise JmlGeoError(
            "ONNX export needs the onnx package: pip install onnx onnxscript"
        ) from None
    state, card = load_bundle(bundle)
    wrapped = _Probabilities(build_model(card, state), card).eval()
    tile = card.tile_size
    example = torch.rand(1, card.bands, tile, tile)
    metadata = deepness_metadata(card)
    with atomic_output(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                wrapped,
                (example,),
                tmp,
                input_names=["image"],
                output_names=["probabilities"],
                dynamic_axes={"image": {0: "batch"}, "probabilities": {0: "batch"}},
                opset_version=18,
                dynamo=False,
            )
        except Exception as err:  # exporter internals vary; the user needs one line
            raise JmlGeoError(f"ONNX export failed: {type(err).__name__}: {err}") from None
        model = onnx.load(tmp)
        for key, value in metadata.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(model, tmp)
    return metadata


def deepness_metadata(card: ModelCard) -> dict[str, str]:
    """The ONNX metadata of a bundle (Deepness keys and our model card)."""
    names = {str(i): name for i, name in enumerate(["background", *card.classes])}
    resolution_cm = None
    if card.resolution and (card.crs_units or "").lower() in ("metre", "meter", "m"):
        resolution_cm = card.resolution[0] * 100
    meta = {
        "model_type": json.dumps("Segmentor"),
        "class_names": json.dumps(names),
        "tiles_size": json.dumps(card.tile_size),
        "tiles_overlap": json.dumps(TILES_OVERLAP),
        "standardization_mean": json.dumps([m / 255.0 for m in card.normalization["mean"]]),
        "standardization_std": json.dumps([s / 255.0 for s in card.normalization["std"]]),
        "jmlgeo_model_card": json.dumps(asdict(card)),
    }
    if resolution_cm is not None:
        meta["resolution"] = json.dumps(resolution_cm)
    return meta
