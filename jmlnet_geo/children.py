"""Worker processes die with their parent, whatever kills it (``kill -9`` included).

A pool's workers are children of the process that started them; when that process is killed
with SIGKILL it runs no clean-up, and its workers would go on, orphaned, until their queue read
times out (or forever). On Linux the kernel can send a signal to a process when its parent dies
(``prctl(PR_SET_PDEATHSIG)``); :func:`die_with_parent`, called first in a worker (a pool's
``initializer``, a DataLoader's ``worker_init_fn``), asks for SIGKILL. Elsewhere it does nothing
(macOS and Windows have no such call; there the pools' own watchdogs are all there is).

:func:`undo_malloc_trim` gives a Dask worker glibc's heap reuse back (Dask turns it off).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

#: ``PR_SET_PDEATHSIG`` of ``<linux/prctl.h>``.
PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int | None = None) -> bool:
    """Have the kernel SIGKILL this process when its parent dies (Linux; elsewhere a no-op).

    Args:
        parent: Process id of the parent that started this worker. When the parent is already
            gone before the call (this process was re-parented), the worker exits at once: the
            signal would never come.

    Returns:
        Whether the parent-death signal is set.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        done = libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
    if parent is not None and os.getppid() != parent:
        os._exit(1)  # the parent died before prctl: nobody would ever read our results
    return done


def loader_worker_init(parent: int, worker_id: int) -> None:
    """DataLoader ``worker_init_fn`` of the training loaders: dies with ``parent``, then seeds.

    Lightning adds its own seeding ``worker_init_fn`` only to loaders that have none; this one
    calls it (when ``seed_everything(workers=True)`` asked for it), so the workers' random
    streams are those Lightning would have given them.
    """
    die_with_parent(parent)
    if int(os.environ.get("PL_SEED_WORKERS", "0")):
        from lightning.fabric.utilities.seed import pl_worker_init_function

        pl_worker_init_function(worker_id)


#: glibc's ``mallopt`` parameters, and the values its dynamic thresholds grow to on 64 bits.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_MAX = 32 * 2**20


def undo_malloc_trim() -> bool:
    """Give this process glibc's heap behaviour again when Dask set ``MALLOC_TRIM_THRESHOLD_``.

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536`` (to hand memory back to the
    OS between tasks that keep data). With it set, glibc drops its dynamic mmap threshold: every
    buffer over 128 KiB is a fresh mmap, zero-filled page by page, and freed back at once. Our
    tasks allocate and free such buffers per box and per window (GrabCut's models and masks,
    window tensors): measured, GrabCut on 20 NWPU images took 25-30 % longer on a ``local:1``
    worker than in this process, and as long once the variable was gone. Setting the mmap
    threshold to its dynamic maximum and the trim threshold to twice that brings the heap's reuse
    back; memory is still given back above 64 MiB of free heap. Returns whether it was done (only
    on glibc, only when the variable is set).
    """
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl has no mallopt of this kind)
        return False
    return bool(
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)
        and libc.mallopt(M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD_MAX)
    )
