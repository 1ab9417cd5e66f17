"""Shared helpers of the benchmark scripts: the machine, the code version, and BENCHMARKS.md.

Each benchmark script owns one section of BENCHMARKS.md (at the repository root), delimited by
``<!-- bench:NAME:start -->`` and ``<!-- bench:NAME:end -->``; :func:`update_section` rewrites
that section only, so scripts can be re-run independently and in any order. A section holds the
run's header and tables; the reading of the figures is written by hand after its end marker.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import hashlib
import math
import os
import platform
import re
import resource
import shlex
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from jmlnet_geo.io.write import atomic_output

#: The repository root (bench/ lives directly under it).
REPO = Path(__file__).resolve().parents[1]
#: The real data sets: ``../shared/data`` beside the checkout.
SHARED = REPO.parent / "shared" / "data"

_START = time.perf_counter()

#: ``Run.head``'s ``load`` note of the benches that time things.
SHARED_CORES = " (other jobs share the cores; times are wall clock)"


def machine_description() -> str:
    """One line: CPU model, cores, RAM, OS, Python and torch versions (and the GPU, if any).

    torch's version is read from the package metadata; the GPU is named only when the caller
    has already imported torch and CUDA is available.
    """
    cores, usable = os.cpu_count() or 1, len(os.sched_getaffinity(0))
    parts = [_cpu_model(), f"{cores} cores" if usable == cores else f"{usable} of {cores} usable"]
    parts.append(f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM")
    parts += [platform.platform(terse=True), f"Python {platform.python_version()}"]
    if torch_version := _package_version("torch"):
        gpu = None
        with contextlib.suppress(Exception):  # a broken CUDA setup must not stop a report
            if (torch := sys.modules.get("torch")) and torch.cuda.is_available():
                gpu = torch.cuda.get_device_name(0)
        parts += [f"torch {torch_version}", f"GPU {gpu}" if gpu else "no GPU used"]
    return ", ".join(parts)


def package_versions(names: Sequence[str]) -> str:
    """``name version`` of each installed distribution, comma-separated (absent ones skipped)."""
    found = [(n, _package_version(n)) for n in names]
    return ", ".join(f"{n} {v}" for n, v in found if v)


def code_version() -> str:
    """The checkout's commit (short hash), with a note when the working tree has changes."""
    from jmlnet_geo.model_file import code_commit  # the one the model cards record

    commit = code_commit()
    if commit is None:
        return "unknown (not a git checkout)"
    return commit[:7] + (" + uncommitted changes" if commit.endswith("+dirty") else "")


def update_section(
    name: str, markdown: str, path: str | os.PathLike[str] = "BENCHMARKS.md", after=()
) -> Path:
    """Replace the text between the section's markers, adding the section if it is absent.

    Args:
        name: Section name (letters, digits, ``_``, ``-``, ``.``).
        markdown: The section's new content (without the markers).
        path: The file; a relative path is taken from the repository root (created if missing).
        after: Sections a new section goes right after: the first of them that the file holds
            once (none: the new section is appended at the end).

    Raises:
        ValueError: A bad name, or the file holds the markers more than once or out of order.
    """
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"section name {name!r}: use letters, digits, '_', '-' or '.'")
    target = REPO / path
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    block = f"{start}\n{markdown.strip()}\n{end}"
    with _locked(target):
        text = target.read_text(encoding="utf-8") if target.exists() else "# Benchmarks\n"
        n_start, n_end = text.count(start), text.count(end)
        anchors = [a for a in (f"<!-- bench:{s}:end -->" for s in after) if text.count(a) == 1]
        if n_start == n_end == 0 and anchors:
            head, tail = text.split(anchors[0], 1)
            text = f"{head}{anchors[0]}\n\n{block}{tail}"
        elif n_start == n_end == 0:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
        elif n_start == n_end == 1 and text.index(start) < text.index(end):
            head, rest = text.split(start, 1)
            text = head + block + rest.split(end, 1)[1]
        else:
            raise ValueError(
                f"{target}: the markers of section {name!r} appear {n_start} and {n_end} times "
                "or out of order; fix the file by hand"
            )
        with atomic_output(target) as tmp:
            Path(tmp).write_text(text, encoding="utf-8")
    return target


@contextlib.contextmanager
def work_folder(path: Path | None, prefix: str) -> Iterator[Path]:
    """``path`` (created, kept for reuse), or a temporary folder deleted at the end."""
    work = path or Path(tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    log(f"work folder {work}")
    try:
        yield work
    finally:
        if path is None:
            shutil.rmtree(work, ignore_errors=True)


def elapsed() -> float:
    """Seconds since the benchmark started (since this module was imported)."""
    return time.perf_counter() - _START


def log(message: str) -> None:
    """Progress on stderr (seconds since the start), so that stdout holds the tables only."""
    print(f"[{elapsed():7.1f} s] {message}", file=sys.stderr, flush=True)


def load_text() -> str:
    """The 1- and 5-minute load averages, for the record of a run."""
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (1 min), {five:.2f} (5 min)"


def command_line() -> str:
    """How this script was run, from the repository root: ``python bench/x.py --args``."""
    script = Path(sys.argv[0]).resolve()
    first = os.fspath(script.relative_to(REPO)) if script.is_relative_to(REPO) else sys.argv[0]
    return shlex.join(["python", first, *sys.argv[1:]])


@dataclass
class Results:
    """Markdown blocks, in order."""

    blocks: list[str] = field(default_factory=list)

    def add(self, markdown: str) -> None:
        """Keep a block for BENCHMARKS.md and print it."""
        self.blocks.append(markdown)
        print(markdown, flush=True)


def pct(value: float) -> str:
    """A fraction as a percentage with one decimal (``n/a`` for NaN)."""
    return "n/a" if math.isnan(value) else f"{100 * value:.1f}"


def ms(seconds: float, digits: int = 1) -> str:
    """Seconds as milliseconds with ``digits`` decimals (``n/a`` for NaN)."""
    return "n/a" if math.isnan(seconds) else f"{1000 * seconds:.{digits}f}"


def share(part: int, whole: int) -> str:
    """``part (P %)`` of ``whole``."""
    return f"{part} ({100 * part / whole:.0f} %)" if whole else str(part)


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished (joined) child processes."""
    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@dataclass
class Run:
    """What a section says about its run: taken when the run starts, the load also at the end."""

    command: str = field(default_factory=command_line)
    machine: str = field(default_factory=machine_description)
    code: str = field(default_factory=code_version)
    load_start: str = field(default_factory=load_text)
    started: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    start: float = field(default_factory=time.perf_counter)

    @property
    def minutes(self) -> float:
        """Minutes since the run started."""
        return (time.perf_counter() - self.start) / 60

    def head(self, packages: str, date: str, *more: str, load: str = "") -> str:
        """The Markdown list of command, machine, load, packages and date (``date`` follows
        the date), then the lines ``more``; ``load`` follows the load averages."""
        return "\n".join(
            [
                f"- Command: `{self.command}` (from the repository root)",
                f"- Machine: {self.machine}",
                f"- Load average: {self.load_start} at the start, {load_text()} at the end{load}",
                f"- Packages: {packages}; code {self.code}",
                f"- Date: {self.started:%Y-%m-%d %H:%M} UTC; {date}",
                *more,
            ]
        )


def bench_parser(description: str, parts: Sequence[str], work: str) -> argparse.ArgumentParser:
    """A bench's parser with the options every bench has: ``--work``, ``--quick``, ``--parts``
    (comma-separated, checked against ``parts``, default all), ``--no-update`` and ``--output``."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    add = parser.add_argument
    add("--work", type=Path, help=work)
    add("--quick", action="store_true", help="A few minutes: a smoke run.")
    add("--parts", type=parts_type(parts), default=tuple(parts),
        help=f"Comma-separated parts to run, of {', '.join(parts)}.")  # fmt: skip
    add("--no-update", action="store_true", help="Print the tables only.")
    add("--output", default="BENCHMARKS.md", help="Markdown file to update.")
    return parser


def parts_type(parts: Sequence[str]) -> Callable[[str], tuple[str, ...]]:
    """An argparse type: a comma-separated list of ``parts`` (each once, in the order given)."""

    def parse(text: str) -> tuple[str, ...]:
        chosen = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
        if not chosen or set(chosen) - set(parts):
            raise argparse.ArgumentTypeError(
                f"parts {text!r}: give a comma-separated list of {', '.join(parts)}"
            )
        return chosen

    return parse


def quiet_warnings() -> None:
    """Silence what the dev data warn on every image (plain images, dropped boxes, no CRS)."""
    from rasterio.errors import NotGeoreferencedWarning

    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
    for message in (".*no georeferencing.*", ".*dropped .* box.*", ".*'crs' was not provided.*"):
        warnings.filterwarnings("ignore", message=message)


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@contextlib.contextmanager
def _locked(target: Path) -> Iterator[None]:
    """Hold an exclusive lock for ``target`` (benchmarks run side by side may update it)."""
    digest = hashlib.sha1(os.fsencode(target.resolve())).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"jmlgeo-bench-{digest}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
