"""Blending of window logits into finished strips of a scene, panel by panel; strip writing.

Each window's logits are weighted by :func:`jmlnet_geo.predict_windows.weight_window` (tapering
over the overlap) and summed into a buffer one window high and one *panel* wide: a range of the
scene's columns (:func:`jmlnet_geo.predict_windows.panel_columns`; the whole width unless the
scene is wider than the plan's ``panel``). Rows that no later window reaches are final and
leave the buffer as a strip. A window that straddles two panels is added to both (the part
inside each), so the sums, and the classes, do not depend on where the panels are cut.
:func:`strip_writers` writes each strip into the class (and probability) rasters.

Not for planning (window, overlap, panels): see :mod:`jmlnet_geo.predict_windows`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio
from rasterio.windows import Window

from jmlnet_geo.io.class_raster import class_raster_profile, class_raster_writer
from jmlnet_geo.io.raster import Scene, open_dataset, read_valid
from jmlnet_geo.predict_windows import panel_columns, panel_order, weight_window
from jmlnet_geo.tiling import GridTiles, ScenesTiles, SceneTiles, window_of
from jmlnet_geo.vocabulary import IGNORE

if TYPE_CHECKING:
    from jmlnet_geo.bundle import ModelCard

__all__ = [
    "Blender",
    "PanelBlender",
    "blend_batch",
    "strip_outputs",
    "submit_strip",
    "timed_strips",
    "window_order",
]


@dataclass(frozen=True)
class WindowOrder:
    """A scene's window grid and the order a prediction forwards it in (:func:`window_order`).

    Attributes:
        data: The scene as the DataLoader's dataset.
        grid: Its sampler items ``(scene index, query)``, row by row from the top-left.
        windows: The pixel ``Window`` of each grid item.
        panels: The panels' column ranges (:func:`jmlnet_geo.predict_windows.panel_columns`).
        order: ``(panel index, grid index)`` in forwarding order, panel by panel
            (:func:`jmlnet_geo.predict_windows.panel_order`).
    """

    data: ScenesTiles
    grid: list
    windows: list[Window]
    panels: list[tuple[int, int]]
    order: list[tuple[int, int]]


def window_order(scene: Scene, plan: Any) -> WindowOrder:
    """The windows of a :class:`jmlnet_geo.predict_windows.WindowPlan` and their order.

    One order for the local run and for the cluster's row blocks, so both sum every pixel's
    logits alike.
    """
    data = ScenesTiles([SceneTiles(scene)])
    grid = list(GridTiles(data, plan.window, plan.window - plan.overlap))
    windows = [window_of(scene, query) for _, query in grid]
    panels = panel_columns(scene.width, plan.panel)
    order = panel_order([int(w.col_off) for w in windows], plan.window, panels)
    return WindowOrder(data, grid, windows, panels, order)


class Blender:
    """Weighted sum of window logits over a buffer one window high, emitting finished strips.

    The buffer holds float32 (K+1, window, c1 - c0) weighted logit sums and (window, c1 - c0)
    weight sums of the scene columns ``c0:c1`` (``columns``; default: all), in scene pixel
    coordinates shifted up by ``top`` rows and left by ``c0`` columns; rows no later window
    reaches are handed to ``finish_strip(sums, weights)`` (views of the buffer, so it must copy
    what it keeps) and what it returns is yielded with the strip's first row. Windows must come
    row by row from the top, as :class:`jmlnet_geo.tiling.GridTiles` yields them; the parts of
    a window outside ``c0:c1`` are left out.
    """

    def __init__(
        self,
        scene: Any,
        num_classes: int,
        tile: int,
        overlap: int,
        finish_strip: Callable[[np.ndarray, np.ndarray], Any],
        weights: str = "ramp",
        columns: tuple[int, int] | None = None,
    ) -> None:
        self.scene, self.tile, self.finish_strip = scene, tile, finish_strip
        self.top = 0
        self.c0, self.c1 = columns if columns is not None else (0, scene.width)
        self.logits = np.zeros((num_classes, tile, self.c1 - self.c0), np.float32)
        self.weight = np.zeros((tile, self.c1 - self.c0), np.float32)
        self.window_weight = weight_window(tile, overlap, weights)

    def add(self, window: list[int], logits: np.ndarray) -> Iterator[tuple[int, Any]]:
        """Add one window's float32 logits (K+1, tile, tile) at ``window`` = (col, row, ...)."""
        col, row = window[0], window[1]
        if row > self.top:
            yield self._flush(row - self.top)
        height = min(self.tile, self.scene.height - row)
        x0, x1 = max(col, self.c0), min(col + self.tile, self.c1, self.scene.width)
        if x1 <= x0:
            return
        r0, inside = row - self.top, slice(x0 - col, x1 - col)
        w = self.window_weight[:height, inside]
        target = (slice(r0, r0 + height), slice(x0 - self.c0, x1 - self.c0))
        self.logits[(slice(None), *target)] += logits[:, :height, inside] * w
        self.weight[target] += w

    def finish(self) -> Iterator[tuple[int, Any]]:
        """Yield the last strip."""
        yield self._flush(min(self.tile, self.scene.height - self.top))

    def _flush(self, rows: int) -> tuple[int, Any]:
        item = self.top, self.finish_strip(self.logits[:, :rows], self.weight[:rows])
        for plane in (*self.logits, self.weight):  # move up in place, one class at a time
            plane[:-rows] = plane[rows:]
            plane[-rows:] = 0
        self.top += rows
        return item


class PanelBlender:
    """One :class:`Blender` per panel in turn, fed the windows in the plan's forwarding order.

    ``panel_of[i]`` is the panel index of the i-th window added (non-decreasing, as
    :func:`jmlnet_geo.predict_windows.panel_order` gives them); when it moves on, the panel's
    last strip is yielded and the next panel's buffer starts. Strips are ``(row, col, output)``
    with ``col`` the panel's first column.
    """

    def __init__(
        self,
        scene: Any,
        num_classes: int,
        plan: Any,
        panels: Sequence[tuple[int, int]],
        panel_of: Sequence[int],
        finish_strip: Callable[[np.ndarray, np.ndarray], Any],
        weights: str = "ramp",
    ) -> None:
        self.panels, self.panel_of, self.added = list(panels), list(panel_of), 0
        self.current, self.blender = -1, None
        self.make = lambda columns: Blender(
            scene, num_classes, plan.window, plan.overlap, finish_strip, weights, columns
        )

    def add(self, window: list[int], logits: np.ndarray) -> Iterator[tuple[int, int, Any]]:
        """Add the next window's float32 logits (K+1, tile, tile); yield finished strips."""
        panel = self.panel_of[self.added]
        self.added += 1
        if panel != self.current:
            yield from self.finish()
            self.current, self.blender = panel, self.make(self.panels[panel])
        yield from self._tagged(self.blender.add(window, logits))

    def finish(self) -> Iterator[tuple[int, int, Any]]:
        """Yield the current panel's last strip (nothing before the first window)."""
        if self.blender is not None:
            yield from self._tagged(self.blender.finish())
            self.blender = None

    def _tagged(self, strips: Iterator[tuple[int, Any]]) -> Iterator[tuple[int, int, Any]]:
        col = self.panels[self.current][0]
        for row, output in strips:
            yield row, col, output


#: Columns per step when turning a strip's logit sums into classes (bounds the temporaries).
_COLUMNS = 2048


def strip_outputs(
    sums: np.ndarray, weights: np.ndarray, probabilities: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Class ids and optional probabilities of a blended strip.

    Args:
        sums: float32 (K+1, rows, width) weighted sums of window logits.
        weights: float32 (rows, width) sums of the weights (all > 0).
        probabilities: Also return the softmax of the blended logits.

    Returns:
        uint8 (rows, width) argmax class ids, and uint8 (K+1, rows, width) probabilities scaled
        to 0-255 (or None). The weights are positive, so the sums' argmax is the blended
        logits' argmax; only the probabilities divide.
    """
    ids = np.empty(weights.shape, np.uint8)
    probs = np.empty(sums.shape, np.uint8) if probabilities else None
    for start in range(0, weights.shape[1], _COLUMNS):
        part = slice(start, start + _COLUMNS)
        ids[:, part] = sums[:, :, part].argmax(0)
        if probs is not None:
            logits = sums[:, :, part] / weights[:, part]
            shifted = np.exp(logits - logits.max(0, keepdims=True))
            probs[:, :, part] = np.rint(255 * shifted / shifted.sum(0, keepdims=True))
    return ids, probs


def blend_batch(buffer: Blender, windows: list, logits: Any, event: Any, phases: dict):
    """Wait for a launched batch's logits and add them to the buffer; yield finished strips.

    ``logits``: float32 (N, K+1, tile, tile) host tensor of the batch's ``windows``; ``event``:
    the CUDA event marking its copy back, or None; the blender's seconds go to
    ``phases["blend"]``.
    """
    if event is not None:
        event.synchronize()
    for window, window_logits in zip(windows, logits.numpy(), strict=True):
        yield from timed_strips(buffer.add(window, window_logits), phases)


def timed_strips(strips: Iterator[tuple[int, Any]], phases: dict) -> list:
    """The blender's strips, its time added to ``phases["blend"]``."""
    start = time.perf_counter()
    done = list(strips)
    phases["blend"] += time.perf_counter() - start
    return done


def submit_strip(writer: ThreadPoolExecutor, write, strip, pending: Future | None) -> Future:
    """Queue a strip write; at most one write waits, so memory stays bounded."""
    if pending is not None:
        pending.result()
    return writer.submit(write, strip)


@contextlib.contextmanager
def strip_writers(
    scene: Scene,
    card: ModelCard,
    classes_path: Path,
    probs_path: Path | None,
    phases: dict[str, float] | None = None,
):
    """Yield ``write((row, col, (class ids, probabilities)))``, which writes one strip.

    The strip's rows start at ``row`` and its columns at ``col``; nodata is masked.

    With ``phases``, the seconds of every write are added to ``phases["write"]``.
    """
    with contextlib.ExitStack() as stack:
        classes = stack.enter_context(
            class_raster_writer(classes_path, scene, card.classes, colours=card.colours)
        )
        probs = None
        if probs_path is not None:
            profile = class_raster_profile(scene) | {"count": card.num_classes, "nodata": None}
            probs = stack.enter_context(rasterio.open(probs_path, "w", **profile))
            probs.update_tags(class_names=",".join(["background", *card.classes]))
        src = stack.enter_context(open_dataset(scene))

        def write(item: tuple[int, int, tuple[np.ndarray, np.ndarray | None]]) -> None:
            start = time.perf_counter()
            row, col, (ids, p) = item
            window = Window(col, row, ids.shape[1], ids.shape[0])
            valid = read_valid(src, scene, window)
            ids[~valid] = IGNORE
            classes.write(ids, 1, window=window)
            if probs is not None and p is not None:
                p[:, ~valid] = 0
                probs.write(p, window=window)
            if phases is not None:
                phases["write"] = phases.get("write", 0.0) + time.perf_counter() - start

        yield write
