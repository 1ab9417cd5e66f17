"""The proposals stage: any set of proposal rasters for scenes and boxes, in one call.

:func:`make_proposals` runs the classic methods (:func:`jmlnet_geo.proposals.compose.
write_proposals`: box, crf, grabcut, per box in parallel), then, when asked for, the detector's
(:func:`jmlnet_geo.proposals.detector_proposals.write_detector_proposals`: detcam, camcut). It is
what ``jmlgeo train`` (each method a cached stage of the run folder), ``jmlgeo proposals`` and
the QGIS plugin (through the CLI) run.

The detector is given as a file, or as a function that returns one (trained or reused when
first needed, e.g. :func:`jmlnet_geo.train.detector.train_detector`): this package never
imports the training code. A :class:`ProposalCache` says which methods are up to date (they are
skipped) and learns which ones were written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from jmlnet_geo.config import CAMCUT_LOW, TAU_HIGH, TAU_LOW
from jmlnet_geo.io.vector import SceneBoxes
from jmlnet_geo.proposals.compose import SceneSummary, check_methods
from jmlnet_geo.proposals.options import CLASSIC_METHODS, DETECTOR_METHODS, ProposalOptions
from jmlnet_geo.vocabulary import Progress, ShouldStop, StageProgress

#: A detector file, or a function giving one when it is first needed.
DetectorSource = str | os.PathLike[str] | Callable[[], os.PathLike[str]]
#: ``write(scenes) -> summaries``: one of the two writers with everything but the scenes bound.
SceneWriter = Callable[[Sequence[SceneBoxes]], list[SceneSummary]]
#: ``scene_map(write, scenes, progress) -> summaries``: runs ``write`` on each scene alone
#: (e.g. one Dask task per scene, :func:`jmlnet_geo.cluster.scene_map`), summaries in scene
#: order, ``progress(boxes done, boxes in all)`` as scenes finish.
SceneMap = Callable[[SceneWriter, Sequence[SceneBoxes], Progress], list[SceneSummary]]


class ProposalCache(Protocol):
    """Which proposal methods are up to date in the output folder."""

    def fresh(self, method: str) -> bool:
        """Whether the rasters of ``method`` are up to date (then they are not made again)."""

    def record(self, method: str) -> None:
        """Note that the rasters of ``method`` were just written."""


@dataclass
class ProposalsResult:
    """What :func:`make_proposals` did.

    Attributes:
        summaries: Per scene, the methods written in this call (cached ones are left out).
        detector: The detector file used, or None when no detector method was written.
    """

    summaries: list[SceneSummary]
    detector: Path | None = None


@dataclass(frozen=True)
class DetectorProposalOptions:
    """Settings of the detector-based methods.

    Attributes:
        tau_low: D_l = DetCAM > tau_low: the DetCAM proposal, CAMCut's sure background below.
        tau_high: D_h = DetCAM > tau_high: CAMCut's sure foreground.
        heatmap: Also write ``<stem>.detcam_heat.tif`` (the continuous DetCAM, 0-255).
        device: ``auto``, ``cpu`` or ``cuda`` for the detector.
        camcut_low: CAMCut's start for in-box pixels at or below tau_low: ``sure`` background
            (the paper) or ``probable`` (see :class:`jmlnet_geo.proposals.camcut.CAMCutOptions`).
    """

    tau_low: float = TAU_LOW
    tau_high: float = TAU_HIGH
    heatmap: bool = False
    device: str = "auto"
    camcut_low: str = CAMCUT_LOW[0]


def check_request(
    methods: Sequence[str],
    detector_options: DetectorProposalOptions | None = None,
    detector: DetectorSource | None = None,
) -> list[str]:
    """Check a request before any work: methods known, thresholds valid, detector file readable.

    Returns:
        The methods in the order given, without repeats.

    Raises:
        OptionError: An unknown method, or thresholds not 0 <= tau_low < tau_high <= 1.
        DetectorFileError: A detector file that is missing or not a jmlgeo detector.
    """
    chosen = check_methods(methods, (*CLASSIC_METHODS, *DETECTOR_METHODS))
    if any(m in DETECTOR_METHODS for m in chosen):
        from jmlnet_geo.detector_file import read_detector_card
        from jmlnet_geo.errors import OptionError
        from jmlnet_geo.proposals.detcam import check_thresholds

        opts = detector_options or DetectorProposalOptions()
        check_thresholds(opts.tau_low, opts.tau_high)
        if opts.camcut_low not in CAMCUT_LOW:
            raise OptionError(f"--camcut-low {opts.camcut_low}: use {' or '.join(CAMCUT_LOW)}")
        if detector is not None and not callable(detector):
            read_detector_card(detector)
    return chosen


def make_proposals(
    scene_boxes: Sequence[SceneBoxes],
    class_names: Sequence[str],
    methods: Sequence[str],
    out_dir: str | os.PathLike[str],
    options: ProposalOptions | None = None,
    detector: DetectorSource | None = None,
    detector_options: DetectorProposalOptions | None = None,
    workers: int = 1,
    cache: ProposalCache | None = None,
    stage_progress: StageProgress | None = None,
    should_stop: ShouldStop | None = None,
    scene_map: SceneMap | None = None,
) -> ProposalsResult:
    """Write the proposal rasters ``out_dir/<stem>.<method>.tif`` of every scene and method.

    Classic methods first, then the detector's; a method the cache calls fresh is skipped. The
    rasters are uint8 class rasters on each scene's grid (0 background, class ids 1..K, 255
    nodata), byte-identical to those of the two writers called alone.

    Args:
        scene_boxes: Each scene with its boxes (:func:`jmlnet_geo.io.vector.boxes_for_scenes`).
        class_names: Names of class ids 1..K.
        methods: Any of box, crf, grabcut, detcam, camcut.
        out_dir: Output folder (created when missing).
        options: Crop and method settings shared by all methods (default ``ProposalOptions()``).
        detector: For detcam/camcut: a detector file, or a function returning one (called once,
            only when a detector method is to be written).
        detector_options: Thresholds, heat map and device of the detector methods.
        workers: Processes for the classic methods.
        cache: Which methods are up to date (None: make every method).
        stage_progress: Progress per step: ``proposals (<methods>)`` and ``<methods>``, in boxes.
        should_stop: Polled during the work; True stops with ``CancelledError`` (no raster of
            the step in progress is written). Not polled by a ``scene_map``.
        scene_map: Runs each scene's writer elsewhere (a cluster): the writers see absolute
            paths, one scene at a time, ``workers=1``; the rasters are the same bytes.

    Returns:
        The summaries of the methods written, and the detector used.

    Raises:
        OptionError: Unknown methods or bad thresholds; detector methods and no ``detector``.
        DetectorFileError: An unusable detector file or scenes that do not fit it.
        OutputError: The folder cannot be written, or two scenes share a file stem.
        CancelledError: ``should_stop`` returned True.
    """
    from jmlnet_geo.errors import OptionError

    if not methods:  # e.g. a run on true masks only
        return ProposalsResult([])
    options = options or ProposalOptions()
    det = detector_options or DetectorProposalOptions()
    chosen = check_request(methods, det)
    progress_of = stage_progress or no_progress
    result = ProposalsResult([])
    classic = [m for m in chosen if m in CLASSIC_METHODS and not (cache and cache.fresh(m))]
    if classic:
        from jmlnet_geo.proposals.compose import write_proposals

        with progress_of(f"proposals ({', '.join(classic)})", "boxes") as report:
            if scene_map is None:
                result.summaries = write_proposals(
                    scene_boxes, class_names, classic, out_dir, options, workers, report,
                    should_stop,
                )  # fmt: skip
            else:
                write = functools.partial(
                    write_proposals, class_names=class_names, methods=classic, options=options
                )
                result.summaries = _mapped(scene_map, write, scene_boxes, out_dir, report)
        for m in classic:
            if cache:
                cache.record(m)
    wanted = [m for m in chosen if m in DETECTOR_METHODS]
    if not wanted:
        return result
    if detector is None:
        raise OptionError(f"{', '.join(wanted)}: give a detector file")
    path = Path(detector() if callable(detector) else detector)
    missing = [m for m in wanted if not (cache and cache.fresh(m))]
    if missing:
        from jmlnet_geo.proposals.camcut import CAMCutOptions
        from jmlnet_geo.proposals.detector_proposals import write_detector_proposals

        settings = dict(
            tau_low=det.tau_low, tau_high=det.tau_high, heatmap=det.heatmap, device=det.device,
            options=options, camcut_options=CAMCutOptions(low=det.camcut_low),
        )  # fmt: skip
        with progress_of(", ".join(missing), "boxes") as report:
            if scene_map is None:
                found = write_detector_proposals(
                    scene_boxes, class_names, missing, out_dir, path, progress=report,
                    should_stop=should_stop, **settings,
                )  # fmt: skip
            else:
                write = functools.partial(
                    write_detector_proposals, class_names=class_names, methods=missing,
                    detector_path=os.path.abspath(path), **settings,
                )  # fmt: skip
                found = _mapped(scene_map, write, scene_boxes, out_dir, report)
        result.summaries = _merge(result.summaries, found)
        result.detector = path
        for m in missing:
            if cache:
                cache.record(m)
    return result


def _mapped(
    scene_map: SceneMap,
    write: Callable[..., list[SceneSummary]],
    scene_boxes: Sequence[SceneBoxes],
    out_dir: str | os.PathLike[str],
    report: Progress,
) -> list[SceneSummary]:
    """Run ``write`` through ``scene_map`` on absolute paths; summaries as a local run's."""
    from jmlnet_geo.proposals.compose import output_paths, proposal_path

    methods = write.keywords["methods"]
    output_paths(scene_boxes, methods, out_dir)  # folder made, names checked, before any task
    absolute = [
        dataclasses.replace(sb, scene=dataclasses.replace(sb.scene, path=_absolute(sb.scene.path)))
        for sb in scene_boxes
    ]
    bound = functools.partial(write, out_dir=os.path.abspath(out_dir))
    summaries = scene_map(bound, absolute, report)
    for sb, summary in zip(scene_boxes, summaries, strict=True):
        summary.scene = sb.scene.path
        for method, m in summary.methods.items():
            m.path = os.fspath(proposal_path(out_dir, sb.scene, method))
    return summaries


def _absolute(path: str) -> str:
    return path if "://" in path or path.startswith("/vsi") else os.path.abspath(path)


def _merge(first: list[SceneSummary], second: list[SceneSummary]) -> list[SceneSummary]:
    """Scene summaries of two writers over the same scenes, methods of both."""
    if not first:
        return second
    for a, b in zip(first, second, strict=True):
        a.methods.update(b.methods)
    return first


@contextlib.contextmanager
def no_progress(name: str, unit: str) -> Iterator[Progress]:
    """A :data:`StageProgress` that reports nothing."""
    yield lambda done, total: None
