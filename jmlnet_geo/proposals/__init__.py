"""Proposals: pixel pseudo labels made from boxes, one scene-aligned class raster per method.

:func:`make_proposals` (:mod:`jmlnet_geo.proposals.stage`) makes any set of them; the modules
below do one method or step each (``box``, ``grabcut``, ``crf``, ``detcam``, ``camcut``,
``crop``, ``compose`` for the classic methods, ``detector_proposals`` for DetCAM/CAMCut,
``preview``). Public names are listed in ``__all__`` and imported on first use, so importing the
package imports neither torch nor cv2.
"""

from __future__ import annotations

from jmlnet_geo.lazy import lazy_exports

_HOMES = {
    "make_proposals": "stage",
    "check_request": "stage",
    "ProposalCache": "stage",
    "ProposalsResult": "stage",
    "DetectorProposalOptions": "stage",
    "CLASSIC_METHODS": "options",
    "DETECTOR_METHODS": "options",
    "ProposalOptions": "options",
    "SceneSummary": "compose",
    "MethodSummary": "compose",
    "write_proposals": "compose",
    "proposal_path": "compose",
    "summary_dict": "compose",
    "write_detector_proposals": "detector_proposals",
    "heat_path": "detector_proposals",
    "DetCAMOptions": "detcam",
    "scene_detcam": "detcam",
    "CAMCutOptions": "camcut",
    "CRFOptions": "options",
    "GrabCutOptions": "options",
}

__all__ = sorted(_HOMES)

__getattr__ = lazy_exports(__name__, _HOMES)
