"""Shared helpers of the hostile-input battery (tests/test_hostile_*.py)."""

from __future__ import annotations

from pathlib import Path

import torch

from jmlnet_geo.bundle import ModelCard, save_bundle


def assert_refused(result, *fragments: str, outputs: tuple[Path, ...] = ()) -> str:
    """Non-zero exit, one 'error:' line naming every fragment, no traceback, no final output."""
    assert result.code != 0, (result.out, result.err)
    assert "Traceback" not in result.err, result.err
    lines = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    for path in outputs:
        assert not Path(path).exists(), path
    return lines[0]


def card_dict(bands: int = 3, classes: int = 1) -> dict:
    """A sound card of the fast preset (JSON form), to spoil one field at a time."""
    return {
        "classes": [f"c{i}" for i in range(classes)],
        "colours": [[200, 10, 10]] * classes,
        "bands": bands,
        "band_names": [f"b{i}" for i in range(bands)],
        "normalization": {"mean": [100.0] * bands, "std": [30.0] * bands},
        "tile_size": 64,
        "resolution": [0.5, 0.5],
        "crs_units": "metre",
        "architecture": {
            "segmenter": "deeplabv3plus",
            "preset": "fast",
            "num_classes": classes + 1,
            "in_channels": bands,
        },
    }


def write_raw_bundle(path: Path, card, format_version: str = "1", state=None) -> Path:
    """A bundle file whose header holds exactly ``card`` (any JSON) and ``format_version``."""
    import json

    from safetensors.torch import save_file

    state = state if state is not None else {"w": torch.zeros(2)}
    metadata = {
        "format": "jmlgeo-bundle",
        "format_version": format_version,
        "jmlgeo_model_card": json.dumps(card),
    }
    save_file(state, str(path), metadata=metadata)
    return path


def real_bundle(path: Path, bands: int = 3) -> Path:
    """A working bundle of random weights (fast preset, one class)."""
    from jmlnet_geo.models.segmenter import build_segmenter

    torch.manual_seed(0)
    model = build_segmenter("fast", 2, bands, weights=None, head="deeplabv3plus")
    save_bundle(path, model.state_dict(), ModelCard(**card_dict(bands)))
    return path
