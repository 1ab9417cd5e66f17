"""The words every step of the data flow shares: class ids and progress callbacks.

A light module (standard library only), so that readers, proposals, losses, training and
prediction all take these from one place (``../shared/DESIGN.md``, *Vocabulary* and *Progress*).

Class ids in every label raster (uint8): 0 is background, 1..K are the classes in the order of
the model card, 255 is ignore / nodata.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

__all__ = ["BACKGROUND", "IGNORE", "MAX_CLASSES", "Progress", "ShouldStop", "StageProgress"]

#: Class id of background: every pixel outside the boxes (Eq. 7) and predicted non-objects.
BACKGROUND = 0

#: Label value of pixels without a label (nodata, unlabelled, dropped boxes); losses skip them.
IGNORE = 255

#: The most object classes a uint8 label raster can hold besides background and ``IGNORE``.
MAX_CLASSES = 254

#: ``progress(done, total)``: called by long functions after each unit of work.
Progress = Callable[[int, int], None]

#: ``should_stop()``: polled by long functions between units of work; True cancels the work.
ShouldStop = Callable[[], bool]

#: ``stage_progress(stage, description)``: a context manager that yields the ``Progress`` of one
#: stage of a pipeline (the CLI turns it into a rich bar or JSON lines).
StageProgress = Callable[[str, str], contextlib.AbstractContextManager[Progress]]
