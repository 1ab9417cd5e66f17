"""Work on a Dask cluster: ``--cluster tcp://host:8786`` (a running scheduler) or ``local:N``.

Imported only when a command is given ``--cluster`` (``import jmlnet_geo`` never imports dask).
Work is split by scene: one task per scene (per-box work inside a scene runs as in a local run,
in the worker), or per row block of a huge scene (:mod:`jmlnet_geo.cluster_predict`). Every task
opens its rasters itself and writes its outputs through the atomic writers of
:mod:`jmlnet_geo.io.write` (a temporary name, renamed when complete), so a worker that dies
leaves no file under a final name; Dask runs its task again on another worker (``retries`` for
errors, the scheduler's ``allowed-failures`` for dead workers).

Workers see the scenes and the output folder under the same absolute paths as the client (one
machine, or a shared file system). Each worker sets its torch / OpenCV threads to its share of
its machine's cores (cores / tasks running at once on that machine) and keeps the bundle or
detector it loaded (:func:`cached_predictor`, :func:`cached_detector`), so it loads each once.

:func:`run_tasks` feeds a ``progress(done, total)`` callback from completed tasks and collects
the errors: a failing scene does not stop the others; the errors, each naming its scene, are
raised together at the end as one :class:`ClusterError`. The warnings a task raises on its worker
(a scene without georeferencing, a rounded window, DetCAM's fallback) are recorded there and
raised again in this process, so the user sees them as in a local run.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import os
import re
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jmlnet_geo.children import tune_malloc
from jmlnet_geo.errors import JmlGeoError, OptionError
from jmlnet_geo.io.vector import SceneBoxes
from jmlnet_geo.vocabulary import Progress

#: Times a task that raised is run again (a worker that died is handled by the scheduler).
RETRIES = 1
#: Test hook: ``<stem>`` makes the first attempt of that scene's task write part of an output
#: under a temporary name and kill its worker (``os._exit``); the retry then completes.
KILL_ENV = "JMLGEO_TEST_KILL_SCENE"
#: Torch threads of every worker, instead of its share of the cores (set where workers start).
THREADS_ENV = "JMLGEO_WORKER_THREADS"
#: Dask settings of the workers a ``local:N`` cluster starts: no statistical profiler (it
#: samples the running task's stack every 10 ms) and no GIL monitor; the system monitor every
#: 2 s instead of 0.5 s. Workers of a remote cluster take theirs from their own configuration
#: (README, "Scaling out").
QUIET_WORKERS = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.system-monitor.gil.enabled": False,
    "distributed.admin.system-monitor.interval": "2s",
}


class ClusterError(JmlGeoError, RuntimeError):
    """Tasks failed on the cluster (each named), or the cluster cannot be reached or started."""


@dataclass(frozen=True)
class ClusterSpec:
    """A parsed ``--cluster``: a scheduler ``address`` (tcp://...) or ``local`` worker count."""

    address: str | None = None
    local_workers: int | None = None


def parse_cluster(text: str) -> ClusterSpec:
    """``tcp://host:port`` (also tls://, ws://...) or ``local:N`` (N >= 1 worker processes).

    Raises:
        OptionError: Anything else.
    """
    if text.startswith("local:"):
        count = text.removeprefix("local:")
        if count.isdigit() and int(count) >= 1:
            return ClusterSpec(local_workers=int(count))
    elif "://" in text and text.split("://", 1)[1]:
        return ClusterSpec(address=text)
    raise OptionError(
        f"--cluster {text}: give a scheduler address (tcp://host:8786) or local:N (N worker "
        "processes on this machine, e.g. local:4)"
    )


@contextlib.contextmanager
def cluster_client(text: str) -> Iterator[Any]:
    """A ``distributed.Client`` for ``--cluster text``; a local cluster lives for the block.

    ``local:N`` starts N worker processes of one thread each (no dashboard, quiet logs,
    :data:`QUIET_WORKERS`).

    Raises:
        OptionError: A bad ``text``.
        ClusterError: dask[distributed] is not installed, or the scheduler cannot be reached.
    """
    spec = parse_cluster(text)
    try:
        import distributed
    except ImportError:
        raise ClusterError(
            "--cluster needs Dask distributed: pip install 'jmlnet-geo[distributed]'"
        ) from None
    with contextlib.ExitStack() as stack:
        if spec.local_workers is not None:
            import dask

            stack.enter_context(dask.config.set(QUIET_WORKERS))
            cluster = stack.enter_context(
                distributed.LocalCluster(
                    n_workers=spec.local_workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    silence_logs=50,  # logging.CRITICAL: task errors come back with the futures
                )
            )
            client = stack.enter_context(distributed.Client(cluster))
        else:
            try:
                client = stack.enter_context(distributed.Client(spec.address, timeout="20s"))
            except (OSError, TimeoutError) as err:
                raise ClusterError(
                    f"--cluster {text}: cannot reach the Dask scheduler ({err}); start one with "
                    "`dask scheduler` and workers with `dask worker ADDRESS`"
                ) from None
        yield client


def thread_plan(client: Any) -> dict[str, int]:
    """Tasks running at once per worker host: ``{host: sum of the workers' threads}``."""
    from urllib.parse import urlparse

    hosts: dict[str, int] = {}
    for address, info in client.scheduler_info(n_workers=-1)["workers"].items():
        host = urlparse(address).hostname or address
        hosts[host] = hosts.get(host, 0) + int(info.get("nthreads", 1))
    return hosts


@dataclass(frozen=True)
class Task:
    """One unit of work: ``fn(*args)`` on a worker, called ``name`` in progress and errors.

    ``weight`` counts toward the progress total (boxes of a scene, 1 per scene or block).
    ``cost`` estimates its work (boxes, pixels): costlier tasks start first, so that a run does
    not end with one worker busy on a long task and the others idle (equal costs: in order).
    """

    name: str
    fn: Callable[..., Any]
    args: tuple = ()
    weight: int = 1
    cost: int = 0


def run_tasks(
    client: Any,
    tasks: Sequence[Task],
    progress: Progress | None = None,
    on_result: Callable[[int, Any], None] | None = None,
    retries: int = RETRIES,
) -> list[Any]:
    """Run every task; results in task order. Failures are raised together at the end.

    Args:
        client: A ``distributed.Client``.
        tasks: The tasks.
        progress: ``progress(weight done, weight in all)`` as tasks complete.
        on_result: Called ``on_result(index, result)`` in this process as each task completes
            (e.g. to write a block); an exception there stops the run.
        retries: Reruns of a task that raised.

    Raises:
        ClusterError: One or more tasks failed; the message names each task and its error.
    """
    from distributed import as_completed

    hosts = thread_plan(client)
    run = uuid.uuid4().hex[:8]
    # costliest first, in submission (the first tasks start as they arrive) and in priority
    order = sorted(range(len(tasks)), key=lambda i: -tasks[i].cost)
    futures = [
        client.submit(
            run_on_worker,
            hosts,
            tasks[i].fn,
            *tasks[i].args,
            key=f"jmlgeo-{run}-{i}-{tasks[i].name}",
            retries=retries,
            pure=False,
            priority=tasks[i].cost,  # Dask runs higher priorities first
        )  # fmt: skip
        for i in order
    ]
    index = {f.key: i for f, i in zip(futures, order, strict=True)}
    total, done = sum(t.weight for t in tasks), 0
    if progress:
        progress(0, total)
    results: list[Any] = [None] * len(tasks)
    errors: list[str] = []
    try:
        for future in as_completed(futures):
            i = index[future.key]
            if future.status == "error":
                text = _one_line(future.exception())
                errors.append(text if tasks[i].name in text else f"{tasks[i].name}: {text}")
            else:
                results[i], caught = future.result()
                for category, message in caught:  # the worker's warnings, shown here
                    warnings.warn(message, category, stacklevel=2)
                if on_result:
                    on_result(i, results[i])
            future.release()
            done += tasks[i].weight
            if progress:
                progress(done, total)
    except BaseException:
        client.cancel(futures)
        raise
    if errors:
        raise ClusterError(
            f"{len(errors)} of {len(tasks)} tasks failed (the others were written): "
            + "; ".join(errors)
        )
    return results


def _one_line(error: BaseException | None) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    wrapped = re.fullmatch(r"\w+\((.*)\)", text)  # Dask's stand-in for an unpicklable error
    if type(error) is Exception and wrapped:
        with contextlib.suppress(ValueError, SyntaxError):
            text = str(ast.literal_eval(wrapped.group(1)))
    if type(error).__name__ == "KilledWorker":
        return "its workers died each time it ran (out of memory?); " + text
    return text


def run_on_worker(
    hosts: dict[str, int], fn: Callable[..., Any], *args: Any
) -> tuple[Any, list[tuple[type[Warning], str]]]:
    """On a worker: set the threads to this machine's share and call ``fn``.

    Returns:
        ``fn``'s result and the warnings it raised, ``[(category, message)]``, for the client
        to raise again.

    An error travels back without its chained causes: GDAL's exceptions among them do not
    unpickle, and Dask would then send only the error's repr.
    """
    share_threads(hosts)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = fn(*args)
        return result, [(w.category, str(w.message)) for w in caught]
    except Exception as err:  # re-raised below, without its context
        error = err
    error.__cause__ = error.__context__ = None
    raise error


_THREADS: list[int] = []


def share_threads(hosts: dict[str, int]) -> int:
    """Set torch and OpenCV threads to cores / tasks at once on this worker's host (once).

    :data:`THREADS_ENV` in the worker's environment, when set, gives the torch threads instead.
    """
    if _THREADS:
        return _THREADS[0]
    from urllib.parse import urlparse

    import cv2
    import torch
    from distributed import get_worker

    host = urlparse(get_worker().address).hostname or ""
    share = max(1, (os.cpu_count() or 1) // max(1, hosts.get(host, 1)))
    if os.environ.get(THREADS_ENV, "").isdigit():
        share = max(1, int(os.environ[THREADS_ENV]))
    torch.set_num_threads(share)
    cv2.setNumThreads(1)  # as in local runs' proposal workers
    tune_malloc()  # Dask's MALLOC_TRIM_THRESHOLD_ made GrabCut 25-30 % slower per box
    _THREADS.append(share)
    return share


def kill_hook(stem: str, out_dir: str | os.PathLike[str], final: str | os.PathLike[str]) -> None:
    """Test hook (:data:`KILL_ENV`): on the first attempt for ``stem``, die mid-write.

    The first attempt (marked by a file in ``out_dir``) starts ``final`` through
    :func:`jmlnet_geo.io.write.atomic_output`, writes some bytes to the temporary name and
    ends the worker process without cleaning up, as a crash or an OOM kill would.
    """
    if os.environ.get(KILL_ENV) != stem:
        return
    marker = Path(out_dir) / f".{stem}.killed-once"
    if marker.exists():
        return
    from jmlnet_geo.io.write import atomic_output

    marker.touch()
    with atomic_output(final) as tmp:
        with open(tmp, "wb") as f:
            f.write(b"II*\0partial")
        os._exit(1)


# --- proposals ---------------------------------------------------------------------------------


def scene_map(client: Any) -> Callable[..., list]:
    """A :data:`jmlnet_geo.proposals.stage.SceneMap` running one task per scene on ``client``."""

    def run(write: Callable, scene_boxes: Sequence[SceneBoxes], progress: Progress) -> list:
        tasks = [
            Task(Path(sb.scene.path).name, write_scene, (write, sb), max(1, len(sb)), len(sb))
            for sb in scene_boxes
        ]
        return [summaries[0] for summaries in run_tasks(client, tasks, progress)]

    return run


def write_scene(write: Callable, sb: SceneBoxes) -> list:
    """On a worker: the proposals writer on one scene (stale partials of dead runs removed)."""
    from jmlnet_geo.io.write import remove_stale_partials

    out = write.keywords["out_dir"]
    stem = Path(sb.scene.path).stem
    remove_stale_partials(out, stem)
    methods = write.keywords["methods"]
    kill_hook(stem, out, Path(out) / f"{stem}.{methods[0]}.tif")
    if "detector_path" in write.keywords:  # the detector's writer: its model loaded once
        detector = write.keywords["detector_path"]
        write = functools.partial(
            write, loaded=cached_detector(detector, write.keywords.get("device", "auto"))
        )
    return write([sb])


# --- prediction: the bundle once per worker -------------------------------------------------


_PREDICTORS: dict[tuple, Any] = {}
_DETECTORS: dict[tuple, Any] = {}


def file_key(path: str | os.PathLike[str], *more: Any) -> tuple:
    """A cache key of a file: absolute path, size, modification time, and ``more``."""
    stat = os.stat(path)
    return (os.path.abspath(path), stat.st_size, stat.st_mtime_ns, *more)


def cached_detector(path: str | os.PathLike[str], device: str = "auto") -> tuple:
    """``load_detector(path, device)`` (model, card) of this process, loaded once.

    Keyed by :func:`file_key` and the device; the last one is kept.
    """
    from jmlnet_geo.detector_file import load_detector
    from jmlnet_geo.devices import resolve_device

    key = file_key(path, device)
    if key not in _DETECTORS:
        _DETECTORS.clear()
        _DETECTORS[key] = load_detector(path, resolve_device(device))
    return _DETECTORS[key]


def cached_predictor(bundle: str, device: str = "auto", amp: str = "auto") -> Any:
    """The :class:`jmlnet_geo.predict.Predictor` of ``bundle``, loaded once.

    Keyed by the bundle's absolute path, size and modification time (a rewritten bundle is
    loaded again), the device and the autocast mode; the last one is kept.
    """
    from jmlnet_geo.predict import Predictor

    key = file_key(bundle, device, amp)
    if key not in _PREDICTORS:
        _PREDICTORS.clear()
        _PREDICTORS[key] = Predictor(bundle, device, amp)
    return _PREDICTORS[key]
