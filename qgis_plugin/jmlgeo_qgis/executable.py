"""Finding the ``jmlgeo`` executable: the plugin setting, ``$JMLGEO_EXECUTABLE``, PATH, venvs."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import ExecutableNotFoundError

#: The command's name; on Windows its launcher is ``jmlgeo.exe``.
EXECUTABLE_NAME = "jmlgeo"

#: An environment variable that names the executable (after the plugin setting, before PATH).
EXECUTABLE_VARIABLE = "JMLGEO_EXECUTABLE"

#: Where the plugin setting lives, for messages.
SETTING_HINT = "Settings > Options > Processing > Providers > JMLNet (jmlgeo) > jmlgeo executable"


def _names() -> tuple[str, ...]:
    if os.name == "nt":
        return (EXECUTABLE_NAME + ".exe", EXECUTABLE_NAME + ".cmd", EXECUTABLE_NAME)
    return (EXECUTABLE_NAME,)


def _bin_dirs(venv: Path) -> tuple[Path, ...]:
    return (venv / "Scripts", venv / "bin") if os.name == "nt" else (venv / "bin",)


def candidate_dirs(home: str | os.PathLike[str] | None = None) -> list[Path]:
    """Folders searched after PATH: common virtual environments and user install places.

    ``~/.venv``, ``~/jmlgeo/.venv``, ``~/jmlnet_geo/.venv``, ``~/jmlnet-geo/.venv``,
    ``~/.local/bin`` (pip --user, pipx), and the ``.venv`` of the repository this plugin lives in
    (when it is used from a checkout, e.g. through a symbolic link).
    """
    base = Path(home) if home is not None else Path.home()
    venvs = [base / ".venv", base / "jmlgeo" / ".venv"]
    venvs += [base / "jmlnet_geo" / ".venv", base / "jmlnet-geo" / ".venv"]
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").is_file():
        venvs.append(repo / ".venv")
    dirs = [d for v in venvs for d in _bin_dirs(v)]
    dirs.append(base / ".local" / "bin")
    return dirs


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _executable_in(path: Path) -> Path | None:
    """``path`` itself when it is an executable file; for a folder, a jmlgeo in it or its venv."""
    if _is_executable(path):
        return path
    if path.is_dir():
        for folder in (path, *_bin_dirs(path)):
            for name in _names():
                if _is_executable(folder / name):
                    return folder / name
    return None


def find_executable(
    configured: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    home: str | os.PathLike[str] | None = None,
    places: Sequence[str | os.PathLike[str]] | None = None,
) -> str:
    """The ``jmlgeo`` to run: the setting, else ``$JMLGEO_EXECUTABLE``, PATH, common venvs.

    Args:
        configured: The plugin setting: the executable, or a venv / folder that holds it. Empty
            or None means auto-detect.
        environ: Environment to read PATH and ``JMLGEO_EXECUTABLE`` from (default: os.environ).
        home: Home folder for the common places (default: the user's).
        places: Folders to search after PATH (default: :func:`candidate_dirs` of ``home``).

    Raises:
        ExecutableNotFoundError: With a message that says where it looked and what to do.
    """
    environ = os.environ if environ is None else environ
    chosen = (("setting", configured), (EXECUTABLE_VARIABLE, environ.get(EXECUTABLE_VARIABLE)))
    for source, value in chosen:
        if value is None or not str(value).strip():
            continue
        path = Path(os.path.expanduser(str(value).strip()))
        found = _executable_in(path)
        if found is None:
            where = f"The plugin setting ({SETTING_HINT})" if source == "setting" else source
            raise ExecutableNotFoundError(
                f"{where} names {path}, which is not a jmlgeo executable (or a venv holding one);"
                " point it at .../.venv/bin/jmlgeo, or leave it empty to auto-detect."
            )
        return str(found)
    for name in _names():
        on_path = shutil.which(name, path=environ.get("PATH", os.defpath))
        if on_path:
            return on_path
    places = candidate_dirs(home) if places is None else [Path(p) for p in places]
    for folder in places:
        found = _executable_in(folder)
        if found is not None:
            return str(found)
    looked = ", ".join(str(p) for p in places)
    raise ExecutableNotFoundError(
        "jmlgeo was not found: install jmlnet-geo (in its repository `make demo` creates "
        f".venv/bin/jmlgeo), then set its path in {SETTING_HINT} or in ${EXECUTABLE_VARIABLE}. "
        f"Looked on PATH and in: {looked}."
    )


#: ``--version`` answers are cached by (path, modification time): a check costs one process.
_CHECKED: dict[tuple[str, float], str] = {}


def check_executable(
    path: str | os.PathLike[str],
    *,
    environ: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> str:
    """The version ``path --version`` prints (``jmlgeo 0.1.0``); an error when it is not jmlgeo.

    A wrong setting (the venv's ``python``, another program) otherwise fails later with a
    cryptic message ("can't open file '.../predict'").

    Raises:
        ExecutableNotFoundError: Saying what the file is and what to pick instead.
    """
    path = os.fspath(path)
    try:
        key = (path, os.stat(path).st_mtime)
    except OSError:
        key = (path, 0.0)
    if key in _CHECKED:
        return _CHECKED[key]
    _, out, err = _ask([path, "--version"], environ, timeout)
    answer = out or err
    first = answer.splitlines()[0].strip() if answer else "nothing"
    if first.startswith(EXECUTABLE_NAME + " "):
        _CHECKED[key] = first
        return first
    raise ExecutableNotFoundError(_not_jmlgeo(Path(path), first))


def _not_jmlgeo(path: Path, answer: str) -> str:
    name = path.name.lower()
    what = f"{path} is not the jmlgeo command: `{path.name} --version` answered '{answer[:200]}'."
    sibling = next((path.parent / n for n in _names() if _is_executable(path.parent / n)), None)
    if name.startswith(("python", "py.exe", "pythonw")):
        what += " It is a Python interpreter."
    if sibling is not None and sibling != path:
        hint = f" Pick {sibling} instead"
    else:
        hint = " Pick the jmlgeo in the bin/ (Windows: Scripts) folder of jmlnet-geo's venv"
    return f"{what}{hint} in {SETTING_HINT}, or leave the setting empty to auto-detect."


def bundle_summary(
    path: str | os.PathLike[str],
    bundle: str | os.PathLike[str],
    *,
    environ: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> str:
    """What ``jmlgeo info BUNDLE`` prints (classes, bands, supervision, stages, validation).

    The Predict dialog shows it in its log before predicting, so the user sees what the chosen
    model was trained on. An unreadable bundle gives ``jmlgeo info``'s one-line error instead.
    """
    code, out, err = _ask([os.fspath(path), "info", os.fspath(bundle)], environ, timeout)
    return out if code == 0 else err


def _ask(
    args: list[str], environ: Mapping[str, str] | None, timeout: float
) -> tuple[int | None, str, str]:
    """Run ``args`` in the plugin's clean environment: (exit code or None, stdout, stderr)."""
    import subprocess

    from .process import clean_environment

    try:
        done = subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            env=clean_environment(environ),
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return None, "", f"{' '.join(args)}: no answer ({err})"
    out, err = (
        data.decode("utf-8", errors="replace").strip() for data in (done.stdout, done.stderr)
    )
    return done.returncode, out, err
