"""Training: the ``jmlgeo train`` pipeline, the segmenter and detector tasks, and their folders.

The package sits on top: nothing else in :mod:`jmlnet_geo` imports it (only ``cli/``). Its
public names are listed in ``__all__`` and imported on first use, so importing the package
(or :mod:`jmlnet_geo.train.fingerprint`) imports neither torch nor Lightning.

Modules, by job: ``pipeline`` (orchestration), ``stage`` (one segmenter stage), ``detector``
(detector task, ``train_detector``, mAP), ``fit`` (the one Lightning fit), ``run_folder``
(``run.json`` and reuse rules), ``fingerprint``, ``checks``, ``card`` (the bundle of a run),
``curve`` (training curve), ``data`` (loaders, flips, box masks), ``optim``, ``segmenter``.
"""

from __future__ import annotations

from jmlnet_geo.lazy import lazy_exports

_HOMES = {
    "TrainInputs": "pipeline",
    "TrainResult": "pipeline",
    "train": "pipeline",
    "BUNDLE_NAME": "pipeline",
    "train_stage": "stage",
    "StageInputs": "stage",
    "train_detector": "detector",
    "DetectorTask": "detector",
    "average_precision": "detector",
    "mean_average_precision": "detector",
    "fit_task": "fit",
    "FitSettings": "fit",
    "quiet_lightning": "fit",
    "RunFolder": "run_folder",
    "RunFolderError": "run_folder",
    "RunState": "run_folder",
    "is_primary_process": "run_folder",
    "check_config": "checks",
    "mask_scenes": "checks",
    "write_bundle": "card",
    "training_curve": "curve",
    "SegmenterTask": "segmenter",
}

__all__ = sorted(_HOMES)

__getattr__ = lazy_exports(__name__, _HOMES)
