"""The stage-1 label chosen by agreement, and the self-training ``model`` proposal.

**Agreement** (``stage1_proposal="auto"``): stage 1 learns from the stage-2 proposal whose
per-box masks agree best with the others' (mean box-wise IoU,
:func:`jmlnet_geo.proposals.agreement.raster_agreement`); no truth is needed. With only two
candidates the table would tie (each has the same single pair), so the filled box votes as a
third opinion; it is never chosen itself (every proposal starts from it).

**Model proposal** (``model`` among the stage-2 proposals; the BoxSup idea): a finished stage's
own prediction of each training scene, kept inside the boxes as the box's class and background
elsewhere (:func:`jmlnet_geo.proposals.model_proposal.write_model_proposal`), written as
``proposals/<stem>.model.tif`` like every proposal. Its run-folder stage ``proposals:model`` is
fingerprinted on the stage that predicted it, so it is recomputed only when that stage changes;
with ``rounds`` > 1 each round refreshes it from the round before.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from jmlnet_geo.config import MODEL_PROPOSAL, TrainConfig
from jmlnet_geo.errors import OptionError
from jmlnet_geo.io.raster import Scene
from jmlnet_geo.io.vector import SceneBoxes
from jmlnet_geo.normalization import Normalization
from jmlnet_geo.proposals.agreement import Agreement, agreement_lines, raster_agreement
from jmlnet_geo.proposals.stage import StageProgress
from jmlnet_geo.train.checks import MASK
from jmlnet_geo.train.fingerprint import fingerprint
from jmlnet_geo.train.run_folder import RunFolder
from jmlnet_geo.train.stage import WEIGHTS

#: The extra voter of a two-candidate agreement (never chosen).
BOX_VOTER = "box"
#: Run-folder stage of the model proposal.
MODEL_STAGE = f"proposals:{MODEL_PROPOSAL}"


def agreement_candidates(proposals: Sequence[str]) -> list[str]:
    """The proposals ``auto`` may choose from: the stage-2 ones, without ``model`` and ``mask``.

    Raises:
        OptionError: No such proposal (e.g. ``--proposals model`` alone).
    """
    candidates = [p for p in dict.fromkeys(proposals) if p not in (MODEL_PROPOSAL, MASK)]
    if not candidates:
        raise OptionError(
            "--stage1-proposal auto chooses among the stage-2 proposals; give at least one "
            "besides model and mask in --proposals, or name the stage-1 proposal"
        )
    return candidates


def agreement_voters(proposals: Sequence[str]) -> list[str]:
    """The proposal rasters the agreement reads: the candidates, plus the box with two."""
    candidates = agreement_candidates(proposals)
    if len(candidates) == 2 and BOX_VOTER not in candidates:
        return [*candidates, BOX_VOTER]
    return candidates


@dataclass
class Stage1Choice:
    """Which proposal stage 1 learns from, and why.

    Attributes:
        proposal: The chosen method.
        table: The agreement table (best first; empty when there was one candidate or the
            user named the proposal).
        by_agreement: Whether ``auto`` chose it.
    """

    proposal: str
    table: list[Agreement] = field(default_factory=list)
    by_agreement: bool = False

    def as_dict(self) -> dict:
        """JSON-ready form for ``run.json`` and the model card."""
        return {
            "proposal": self.proposal,
            "by_agreement": self.by_agreement,
            "agreement": [
                {"method": r.method, "mean_iou": r.mean_iou, "pairs": r.pairs, "boxes": r.boxes}
                for r in self.table
            ],
        }


def choose_stage1(
    scene_boxes: Sequence[SceneBoxes],
    proposal_dir: Path,
    proposals: Sequence[str],
    say: Callable[[str], None],
) -> Stage1Choice:
    """The agreement-chosen stage-1 proposal (``stage1_proposal="auto"``).

    Args:
        scene_boxes: The training scenes and their boxes.
        proposal_dir: The run's ``proposals/`` folder, holding every voter's rasters.
        proposals: The stage-2 proposals.
        say: Receives the table and the choice, one line each.
    """
    candidates = agreement_candidates(proposals)
    if len(candidates) == 1:
        say(f"stage 1 learns from {candidates[0]} (the only stage-2 proposal to choose from)")
        return Stage1Choice(candidates[0], [], True)
    table = raster_agreement(scene_boxes, proposal_dir, agreement_voters(proposals))
    chosen = next(r.method for r in table if r.method in candidates)
    say("proposal agreement (mean box-wise IoU with the other proposals):")
    for line in agreement_lines(table):
        say(f"  {line}")
    say(f"stage 1 learns from {chosen}: it agrees best with the other proposals")
    return Stage1Choice(chosen, table, True)


@dataclass
class ModelProposalInputs:
    """What the model proposal needs besides the stage it comes from.

    Attributes:
        run: The run folder.
        scenes: The training scenes (in ``scene_boxes`` order).
        scene_boxes: Each scene with its boxes.
        names: Class names of ids 1..K.
        normalization: Band standardisation of the scenes.
        config: The run's settings (device; the card of the stage's temporary bundle).
        progress_of: ``progress_of(name, unit)`` gives a ``progress(done, total)`` context.
    """

    run: RunFolder
    scenes: Sequence[Scene]
    scene_boxes: Sequence[SceneBoxes]
    names: Sequence[str]
    normalization: Normalization
    config: TrainConfig
    progress_of: StageProgress


def model_proposal_fingerprint(stage_fp: str) -> str:
    """The fingerprint of the model proposal predicted by the stage of fingerprint ``stage_fp``."""
    return fingerprint(stage_fp, MODEL_PROPOSAL)


def model_proposal(stage: str, stage_fp: str, inputs: ModelProposalInputs) -> None:
    """Write (or reuse) the ``model`` proposal of every scene from a finished stage's weights.

    One set of rasters serves every round: each round that trains rewrites it from the stage
    before (``run.json`` records which stage it came from), and a finished round is reused
    without it.

    Args:
        stage: The finished stage whose ``<stage>/weights.safetensors`` predicts.
        stage_fp: Its fingerprint (the proposal's depends on it alone).
        inputs: The run's scenes, boxes and settings.
    """
    run = inputs.run
    fp = model_proposal_fingerprint(stage_fp)
    out = run.path / "proposals"
    paths = [out / f"{Path(sb.scene.path).stem}.{MODEL_PROPOSAL}.tif" for sb in inputs.scene_boxes]
    if not run.primary:  # a DDP child: rank 0 writes it
        run.wait_for(MODEL_STAGE, fp)
        return
    if run.finished(MODEL_STAGE, fp) and all(p.exists() for p in paths):
        run.reused.append(MODEL_STAGE)
        return
    from jmlnet_geo.proposals.model_proposal import write_model_proposal

    out.mkdir(parents=True, exist_ok=True)
    predict_stage(
        stage, inputs, f"model proposal (from {stage})",
        lambda i, predicted: write_model_proposal(paths[i], inputs.scene_boxes[i], predicted,
                                                  inputs.names),
    )  # fmt: skip
    run.finish(MODEL_STAGE, fp, source=stage)


def predict_stage(
    stage: str, inputs: ModelProposalInputs, title: str, each: Callable[[int, Path], None]
) -> None:
    """Predict every training scene with a finished stage's weights, one scene at a time.

    Args:
        stage: The finished stage whose ``<stage>/weights.safetensors`` predicts (through a
            temporary bundle in ``<stage>_predictions/``, removed at the end).
        inputs: The run's scenes and settings.
        title: The progress bar's title.
        each: Called with the scene's index in ``inputs.scene_boxes`` and the path of its
            uint8 class raster (class ids, 0 = background, on the scene's grid), which is
            deleted when ``each`` returns.
    """
    from jmlnet_geo.predict import PredictOptions, Predictor
    from jmlnet_geo.train.card import write_bundle

    run = inputs.run
    work = run.path / f"{stage}_predictions"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    bundle = work / "model.safetensors"
    write_bundle(
        bundle, run.path / stage / WEIGHTS, inputs.scenes, inputs.scene_boxes, inputs.names,
        inputs.normalization, inputs.config, {},
    )  # fmt: skip
    predictor = Predictor(bundle, inputs.config.device)
    options = PredictOptions(device=inputs.config.device, loader_workers=0)
    with inputs.progress_of(title, "scenes") as report:
        for i, sb in enumerate(inputs.scene_boxes):
            predicted = predictor.predict(sb.scene.path, work, options).classes
            each(i, Path(predicted))
            Path(predicted).unlink()
            report(i + 1, len(inputs.scene_boxes))
    shutil.rmtree(work, ignore_errors=True)
