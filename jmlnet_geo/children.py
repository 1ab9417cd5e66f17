"""Worker processes die with their parent, whatever kills it (``kill -9`` included).

A pool's workers are children of the process that started them; when that process is killed
with SIGKILL it runs no clean-up, and its workers would go on, orphaned, until their queue read
times out (or forever). On Linux the kernel can send a signal to a process when its parent dies
(``prctl(PR_SET_PDEATHSIG)``); :func:`die_with_parent`, called first in a worker (a pool's
``initializer``, a DataLoader's ``worker_init_fn``), asks for SIGKILL. Elsewhere it does nothing
(macOS and Windows have no such call; there the pools' own watchdogs are all there is).

:func:`tune_malloc` keeps freed buffers in the heap for reuse (page faults are costly).
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


#: glibc's ``mallopt`` parameters.
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
#: Free memory at the top of the heap beyond this is handed back to the OS.
TRIM_THRESHOLD = 2**30


def tune_malloc() -> bool:
    """Keep freed buffers in this process's heap for reuse, instead of unmapping them at once.

    A forward pass allocates and frees activations of 1-50 MiB per layer; GrabCut its models and
    masks per box. glibc's defaults map each large buffer afresh and trim the heap as soon as 64
    MiB lie free at its top, so every window pays its page faults again, and each fault is costly
    in a VM (8 NWPU images, one torch thread, defaults: 2.9 M minor faults, 11-20 s of kernel
    time against 25 s of user time). Two settings: no buffer is mapped on its own
    (``M_MMAP_MAX`` 0: a 1024² window's 33-46 MiB activations lie above glibc's 32 MiB ceiling
    for the mmap threshold, so even that threshold at its ceiling left them mapped and faulted in
    afresh at every window; with no mapping at all the threshold decides nothing), and the heap
    trimmed only beyond 1 GiB free at its top (either setting also turns off glibc's dynamic
    thresholds). Measured on a 2048² scene (fast preset, window 1024, fresh processes,
    quiet machine, 2026-12-06): with the earlier settings (threshold 32 MiB, trim 256 MiB) 1.1-1.8
    M faults, 2.2-4.8 s kernel time, 6.0-7.1 s wall on 2 threads and 8.3-9.2 s on 1; with these
    0.11-0.17 M faults, 0.2-0.5 s kernel, 3.8-4.0 s and 6.8-7.1 s; peak RSS the same within the
    noise (1.41-1.65 against 1.37-1.55 GB). Dask's workers (started with
    ``MALLOC_TRIM_THRESHOLD_=65536``, which turns glibc's dynamic thresholds off) need it most:
    GrabCut ran 25-30 % slower per box there. Called by ``jmlgeo``, the proposal pool's workers
    and every Dask task's worker. Returns whether it was done (glibc only).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl has no mallopt of this kind)
        return False
    return bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) and libc.mallopt(M_MMAP_MAX, 0))
