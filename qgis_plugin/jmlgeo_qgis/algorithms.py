"""Processing algorithms: each builds a ``jmlgeo`` argument list, runs it, and loads the outputs.

Processing gives them background execution, batch mode, the graphical modeller and
``processing.run("jmlgeo:predict", {...})``. The work happens in the ``jmlgeo`` child process;
the algorithms only turn layers into file paths and the command's outputs back into layers.

Each algorithm is its own module (``predict_algorithm``, ``train_algorithm``, ...) over
:mod:`.algorithm_base` and the helpers of :mod:`.parameters`; this module lists them.
"""

from __future__ import annotations

from .audit_algorithm import AuditAlgorithm
from .evaluate_algorithm import EvaluateAlgorithm
from .predict_algorithm import PredictAlgorithm
from .proposals_algorithm import ProposalsAlgorithm
from .train_algorithm import TrainAlgorithm

ALGORITHMS = (
    PredictAlgorithm,
    TrainAlgorithm,
    ProposalsAlgorithm,
    EvaluateAlgorithm,
    AuditAlgorithm,
)

__all__ = [
    "ALGORITHMS",
    "AuditAlgorithm",
    "EvaluateAlgorithm",
    "PredictAlgorithm",
    "ProposalsAlgorithm",
    "TrainAlgorithm",
]
