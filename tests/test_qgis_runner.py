"""The QGIS plugin's runner without QGIS: argument lists, progress, cancel, errors, environment.

``jmlgeo_qgis.runner`` is pure Python; the child process is ``qgis_plugin/tests/fake_jmlgeo.py``
(run by this venv's Python, writing its tiny outputs with rasterio and geopandas).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "qgis_plugin"))

from jmlgeo_qgis import executable, runner  # noqa: E402
from jmlgeo_qgis.runner import (  # noqa: E402
    CancelledError,
    EventReader,
    ExecutableNotFoundError,
    RunError,
)

FAKE = ROOT / "qgis_plugin" / "tests" / "fake_jmlgeo.py"
SCENE = ROOT / "sample_data" / "scene.tif"
posix_only = pytest.mark.skipif(os.name == "nt", reason="process groups and signals are POSIX")


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    """``<tmp>/bin/jmlgeo``: the fake command, started by this Python."""
    exe = tmp_path / "bin" / "jmlgeo"
    exe.parent.mkdir()
    exe.write_text(f"#!{sys.executable}\n" + FAKE.read_text(encoding="utf-8"), encoding="utf-8")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return exe


def fake_env(tmp_path: Path, **values: str) -> dict[str, str]:
    env = dict(os.environ, FAKE_JMLGEO_RECORD=str(tmp_path / "record.json"))
    env.update({f"FAKE_JMLGEO_{k.upper()}": v for k, v in values.items()})
    return env


def recorded(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "record.json").read_text(encoding="utf-8"))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())


# --- argument lists -------------------------------------------------------------------------


def test_predict_args_are_a_plain_list_with_json_progress(tmp_path):
    args = runner.predict_args(
        tmp_path / "model.safetensors",
        [tmp_path / "a.tif", tmp_path / "b c.tif"],
        tmp_path / "out",
        polygons=True,
        window=256,
        overlap=64,
        batch_size=4,
        device="cpu",
        min_area=10.5,
        simplify=0.5,
    )
    assert args == [
        "predict",
        str(tmp_path / "model.safetensors"),
        str(tmp_path / "a.tif"),
        str(tmp_path / "b c.tif"),
        "--out",
        str(tmp_path / "out"),
        "--polygons",
        "--window",
        "256",
        "--overlap",
        "64",
        "--batch-size",
        "4",
        "--device",
        "cpu",
        "--min-area",
        "10.5",
        "--simplify",
        "0.5",
        "--progress",
        "json",
    ]


def test_predict_args_leave_out_unset_options_and_make_paths_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = runner.predict_args("m.safetensors", ["-odd name.tif"], "out")
    assert args == [
        "predict",
        str(tmp_path / "m.safetensors"),
        str(tmp_path / "-odd name.tif"),  # absolute: never mistaken for an option
        "--out",
        str(tmp_path / "out"),
        "--progress",
        "json",
    ]
    probs = runner.predict_args("m", ["s.tif"], "o", probabilities=True, polygons=False)
    assert "--probabilities" in probs and "--polygons" not in probs


def test_train_args(tmp_path):
    args = runner.train_args(
        [tmp_path / "s1.tif", tmp_path / "s2.tif"],
        tmp_path / "boxes.gpkg",
        tmp_path / "run",
        class_field="kind",
        preset="fast",
        proposals=["grabcut", "crf"],
        loss="bmm",
        stage1_steps=1,
        stage2_steps=2,
        batch_size=2,
        tile_size=64,
        device="cpu",
        workers=1,
        loader_workers=0,
        force=True,
    )
    assert args == [
        "train",
        str(tmp_path / "s1.tif"),
        str(tmp_path / "s2.tif"),
        "--boxes",
        str(tmp_path / "boxes.gpkg"),
        "--class-field",
        "kind",
        "--out",
        str(tmp_path / "run"),
        "--preset",
        "fast",
        "--proposals",
        "grabcut,crf",
        "--loss",
        "bmm",
        "--stage1-steps",
        "1",
        "--stage2-steps",
        "2",
        "--batch-size",
        "2",
        "--tile-size",
        "64",
        "--device",
        "cpu",
        "--workers",
        "1",
        "--loader-workers",
        "0",
        "--force",
        "--progress",
        "json",
    ]


def test_proposals_and_evaluate_args(tmp_path):
    assert runner.proposals_args([tmp_path / "s.tif"], tmp_path / "b.gpkg", tmp_path / "p") == [
        "proposals",
        str(tmp_path / "s.tif"),
        "--boxes",
        str(tmp_path / "b.gpkg"),
        "--class-field",
        "class",
        "--out",
        str(tmp_path / "p"),
        "--methods",
        "box,crf,grabcut",
        "--progress",
        "json",
    ]
    assert runner.proposals_args(
        ["/s.tif"], "/b.gpkg", "/p", methods=["grabcut"], workers=2, preview=True
    )[-7:] == ["--methods", "grabcut", "--workers", "2", "--preview", "--progress", "json"]
    # evaluate prints a table and takes no --progress
    assert runner.evaluate_args(tmp_path / "c.tif", tmp_path / "t.gpkg", tmp_path / "r.json") == [
        "evaluate",
        str(tmp_path / "c.tif"),
        "--truth",
        str(tmp_path / "t.gpkg"),
        "--class-field",
        "class",
        "--out",
        str(tmp_path / "r.json"),
    ]


EVERY_OPTION = {
    "predict": lambda: runner.predict_args(
        "/m.safetensors", ["/a.tif", "/b.tif"], "/out", polygons=True, probabilities=True,
        window=64, overlap=8, batch_size=2, tta="flips", device="cpu", min_area=1.5, simplify=0.5,
    ),
    "train": lambda: runner.train_args(
        ["/a.tif"], "/b.gpkg", "/run", class_field="kind", preset="fast", classes=["x", "y"],
        proposals=["grabcut", "crf"], loss="bmm", stage1_steps=1, stage2_steps=1, batch_size=2,
        tile_size=64, device="cpu", workers=1, loader_workers=0, resume=True, force=True,
    ),
    "proposals": lambda: runner.proposals_args(
        ["/a.tif"], "/b.gpkg", "/p", methods=["box"], class_field="kind", classes=["x"],
        workers=1, preview=True,
    ),
    "evaluate": lambda: runner.evaluate_args("/c.tif", "/t.gpkg", "/r.json", class_field="kind"),
    "audit": lambda: runner.audit_args(
        ["/a.tif"], "/b.gpkg", "/a.gpkg", class_field="kind", model="/m.safetensors", run="/run",
        proposals=["grabcut", "crf"], min_pixels=4, min_score=0.6, device="cpu", workers=1,
    ),
}  # fmt: skip


def test_audit_args():
    assert runner.audit_args(["/s.tif"], "/b.gpkg", "/a.gpkg") == [
        "audit", "/s.tif", "--boxes", "/b.gpkg", "--class-field", "class", "--out", "/a.gpkg",
        "--progress", "json",
    ]  # fmt: skip
    every = runner.audit_args(["/s.tif"], "/b.gpkg", "/a.gpkg", model="/m.safetensors",
                              run="/r", proposals=["crf"], min_score=0.6)  # fmt: skip
    assert every[8:] == ["--model", "/m.safetensors", "--run", "/r", "--proposals", "crf",
                         "--min-score", "0.6", "--progress", "json"]  # fmt: skip


@pytest.mark.parametrize("command", sorted(EVERY_OPTION))
def test_argument_lists_are_accepted_by_the_real_cli(command):
    """The real ``jmlgeo`` parses every option the plugin can pass (``--help`` stops it there)."""
    from jmlnet_geo.cli.main import app
    from typer.testing import CliRunner

    args = EVERY_OPTION[command]()
    assert args[0] == command
    result = CliRunner().invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    bogus = CliRunner().invoke(app, [*args, "--no-such-option", "--help"])
    assert bogus.exit_code == 2  # (the check above would catch an unknown option)


def test_parse_scores():
    lines = ["| class | IoU |", "mIoU 61.25  pixel accuracy 93.10"]
    assert runner.parse_scores(lines) == (61.25, 93.10)
    assert runner.parse_scores(["nothing here"]) is None


# --- progress parsing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"event": "done"}\n', {"event": "done"}),
        ('  {"event": "message", "text": "hi"}  ', {"event": "message", "text": "hi"}),
        ('{"event": "progress", "done": 1, "tot', None),  # cut off
        ("plain text", None),
        ('["event", "done"]', None),  # not an object
        ('{"kind": "classes"}', None),  # no event
        ('{"event": 3}', None),
        ("", None),
    ],
)
def test_parse_line(line, expected):
    assert runner.parse_line(line) == expected


@pytest.mark.parametrize(
    ("event", "fraction"),
    [
        ({"fraction": 0.25}, 0.25),
        ({"done": 3, "total": 4}, 0.75),
        ({"fraction": 1.7}, 1.0),
        ({"fraction": -1}, 0.0),
        ({"done": 3, "total": 0}, None),
        ({"fraction": "half"}, None),
        ({"fraction": True}, None),
        ({"fraction": float("nan")}, None),
        ({}, None),
    ],
)
def test_event_fraction(event, fraction):
    assert runner.event_fraction(event) == fraction


def test_event_reader_maps_events_to_callbacks():
    progress, logs, outputs = [], [], []
    reader = EventReader(
        lambda f, s: progress.append((f, s)),
        lambda t, lvl: logs.append((lvl, t)),
        lambda k, p: outputs.append((k, p)),
    )
    for line in [
        '{"event": "stage", "stage": "proposals", "total": 4}',
        '{"event": "progress", "stage": "proposals", "done": 2, "total": 4, "fraction": 0.5}',
        '{"event": "message", "text": "wrote a.tif"}',
        '{"event": "output", "kind": "proposal", "path": "/o/a.box.tif"}',
        "| a | table |",
        '{"event": "done"}',
    ]:
        reader.stdout_line(line + "\n")
    reader.stderr_line("warning: 3 boxes dropped\n")
    reader.stderr_line("\n")
    assert progress == [(0.0, "proposals"), (0.5, "proposals"), (1.0, "proposals")]
    assert outputs == [("proposal", "/o/a.box.tif")]
    assert ("info", "wrote a.tif") in logs and ("console", "| a | table |") in logs
    assert ("warning", "3 boxes dropped") in logs
    assert reader.result.done and reader.result.text == ["| a | table |"]
    assert reader.result.path("proposal") == "/o/a.box.tif" and reader.result.path("x") is None


def test_failure_without_an_error_line_reports_the_stderr_tail():
    reader = EventReader()
    for i in range(30):
        reader.stderr_line(f"line {i}\n")
    err = reader.failure(2)
    assert str(err).startswith("jmlgeo failed with exit code 2:\nline 15\n")
    assert str(err).endswith("line 29") and err.returncode == 2
    assert "SIGKILL" in str(EventReader().failure(-9))


# --- running the fake command ---------------------------------------------------------------


def test_run_predict_reports_progress_logs_and_outputs(fake, tmp_path):
    progress, logs, outputs = [], [], []
    args = runner.predict_args(tmp_path / "m.safetensors", [SCENE], tmp_path / "out", polygons=True)
    result = runner.run(
        fake,
        args,
        on_progress=lambda f, s: progress.append((f, s)),
        on_log=lambda t, lvl: logs.append((lvl, t)),
        on_output=lambda k, p: outputs.append((k, p)),
        environ=fake_env(tmp_path),
    )
    assert result.returncode == 0 and result.done
    assert [k for k, _ in outputs] == ["classes", "style", "polygons"]
    classes = Path(result.path("classes"))
    assert classes == tmp_path / "out" / "scene.classes.tif" and classes.is_file()
    assert Path(result.path("polygons")).is_file() and Path(result.path("style")).is_file()
    fractions = [f for f, _ in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert {s for _, s in progress} == {"predict scene.tif"}
    assert any(lvl == "info" and "predicted with m.safetensors" in t for lvl, t in logs)
    assert recorded(tmp_path)["argv"] == args  # no shell: the list arrives as it was built


def test_run_tolerates_partial_garbled_and_unknown_lines(fake, tmp_path):
    progress, logs = [], []
    result = runner.run(
        fake,
        ["predict"],
        on_progress=lambda f, s: progress.append((f, s)),
        on_log=lambda t, lvl: logs.append((lvl, t)),
        environ=fake_env(tmp_path, mode="garbled"),
    )
    # The stage line arrived in two writes and is still one event; the unterminated last line
    # (done) counts; broken JSON, non-objects and bad bytes become plain text.
    assert progress == [(0.0, "predict"), (0.5, "predict"), (1.0, "predict")]
    assert result.done
    assert result.outputs == [runner.Output("classes", "/tmp/x.classes.tif")]
    assert result.text[0] == '{"event": "progress", "stage": "predict", "done": 1, "tot'
    assert result.text[1] == "plain text \ufffd\ufffd not utf-8"
    assert result.text[2] == '["event", "not an object"]'
    assert len(result.text) == 3
    assert all(lvl in {"info", "console"} for lvl, _ in logs)


def test_run_raises_the_cli_error_message_verbatim(fake, tmp_path):
    message = "boxes.gpkg: no column 'kind'; the columns are: class, id (use --class-field)"
    logs = []
    with pytest.raises(RunError) as caught:
        runner.run(
            fake,
            ["train"],
            on_log=lambda t, lvl: logs.append((lvl, t)),
            environ=fake_env(tmp_path, mode="error", error=message),
        )
    assert str(caught.value) == message
    assert caught.value.returncode == 1
    assert not isinstance(caught.value, (CancelledError, ExecutableNotFoundError))
    assert ("warning", "a warning before the error") in logs and ("error", message) in logs


def test_run_reports_a_crash_with_its_traceback(fake, tmp_path):
    with pytest.raises(RunError) as caught:
        runner.run(fake, ["predict"], environ=fake_env(tmp_path, mode="crash"))
    assert str(caught.value).startswith("jmlgeo failed with exit code 1:")
    assert "RuntimeError: an unexpected failure" in str(caught.value)


def test_run_evaluate_keeps_the_table_as_text(fake, tmp_path):
    args = runner.evaluate_args(SCENE, SCENE, tmp_path / "r.json")
    result = runner.run(fake, args, environ=fake_env(tmp_path))
    assert runner.parse_scores(result.text) == (70.0, 91.5)
    assert (tmp_path / "r.json").is_file()


@posix_only
@pytest.mark.parametrize("ignore_term", [False, True], ids=["terminate", "kill-after-grace"])
def test_cancel_stops_the_child_and_its_workers(fake, tmp_path, ignore_term):
    record = tmp_path / "record.json"

    def started() -> bool:
        return record.exists() and "pids" in json.loads(record.read_text())

    env = fake_env(tmp_path, mode="hang", ignore_term="1" if ignore_term else "0")
    progress = []
    start = time.monotonic()
    with pytest.raises(CancelledError) as caught:
        runner.run(
            fake,
            ["train"],
            on_progress=lambda f, s: progress.append(f),
            is_canceled=started,
            environ=env,
            grace=0.5,
            poll_interval=0.05,
        )
    elapsed = time.monotonic() - start
    assert "cancelled" in str(caught.value)
    pids = recorded(tmp_path)["pids"]
    deadline = time.monotonic() + 5
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in pids), "the command or its worker survived the cancel"
    assert elapsed < 15
    if ignore_term:
        assert caught.value.returncode == -signal.SIGKILL
    else:
        assert caught.value.returncode == -signal.SIGTERM


@posix_only
def test_run_returns_when_the_command_exits_though_an_orphan_holds_its_pipes(fake, tmp_path):
    start = time.monotonic()
    result = runner.run(fake, ["predict"], environ=fake_env(tmp_path, mode="daemon"), grace=0.5)
    orphan = recorded(tmp_path)["pids"][1]
    try:
        assert result.done and time.monotonic() - start < 10
        assert alive(orphan)
    finally:
        os.kill(orphan, signal.SIGKILL)


def test_run_with_a_missing_executable_says_so(tmp_path):
    with pytest.raises(ExecutableNotFoundError, match="cannot start .*nope"):
        runner.run(tmp_path / "nope", ["predict"])


# --- environment and executable -------------------------------------------------------------


def test_clean_environment_drops_what_qgis_sets():
    leaked = {
        "PYTHONPATH": "/usr/share/qgis/python",
        "PYTHONHOME": "/opt/qgis",
        "PROJ_LIB": "/opt/qgis/proj",
        "PROJ_DATA": "/opt/qgis/proj",
        "GDAL_DATA": "/opt/qgis/gdal",
        "GDAL_DRIVER_PATH": "/opt/qgis/gdalplugins",
        "QGIS_PREFIX_PATH": "/usr",
        "QGIS_CUSTOM_CONFIG_PATH": "/x",
        "LD_LIBRARY_PATH": "/opt/qgis/lib",
    }
    kept = {"PATH": "/usr/bin", "HOME": "/home/u", "CUDA_VISIBLE_DEVICES": "0", "LANG": "C.UTF-8"}
    env = runner.clean_environment({**leaked, **kept})
    assert not set(leaked) & set(env)
    assert {k: env[k] for k in kept} == kept
    assert env["PYTHONUNBUFFERED"] == "1" and env["PYTHONIOENCODING"] == "utf-8"


def test_the_child_gets_the_clean_environment(fake, tmp_path):
    env = fake_env(tmp_path)
    env.update(
        PYTHONPATH="/usr/share/qgis/python", PROJ_LIB="/nowhere", QGIS_PREFIX_PATH="/usr", KEEP="1"
    )
    runner.run(fake, runner.evaluate_args(SCENE, SCENE), environ=env)
    child = recorded(tmp_path)["env"]
    assert "PYTHONPATH" not in child and "PROJ_LIB" not in child
    assert "QGIS_PREFIX_PATH" not in child and child["KEEP"] == "1"


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_find_executable_order(tmp_path):
    setting = _executable(tmp_path / "chosen" / "jmlgeo")
    variable = _executable(tmp_path / "variable" / "bin" / "jmlgeo")
    on_path = _executable(tmp_path / "path" / "jmlgeo")
    home_venv = _executable(tmp_path / "home" / "jmlgeo" / ".venv" / "bin" / "jmlgeo")
    home = tmp_path / "home"
    full = {"PATH": str(on_path.parent), "JMLGEO_EXECUTABLE": str(variable.parent.parent)}
    assert runner.find_executable(str(setting), environ=full, home=home) == str(setting)
    assert runner.find_executable("  ", environ=full, home=home) == str(variable)  # a venv
    assert runner.find_executable(None, environ={"PATH": full["PATH"]}, home=home) == str(on_path)
    assert runner.find_executable(None, environ={"PATH": ""}, home=home) == str(home_venv)


def test_find_executable_with_a_venv_folder_as_setting(tmp_path):
    exe = _executable(tmp_path / "venv" / "bin" / "jmlgeo")
    assert runner.find_executable(str(tmp_path / "venv"), environ={}, places=[]) == str(exe)


def test_find_executable_explains_a_wrong_setting(tmp_path):
    with pytest.raises(ExecutableNotFoundError, match="plugin setting .* names .*missing"):
        runner.find_executable(str(tmp_path / "missing"), environ={"PATH": ""}, places=[])
    not_executable = tmp_path / "jmlgeo"
    not_executable.write_text("")
    with pytest.raises(ExecutableNotFoundError, match="not a jmlgeo executable"):
        runner.find_executable(str(not_executable), environ={"PATH": ""}, places=[])


def test_find_executable_not_found_message(tmp_path):
    # (the default places include this checkout's .venv, so list the places explicitly)
    with pytest.raises(ExecutableNotFoundError) as caught:
        runner.find_executable(None, environ={"PATH": str(tmp_path)}, places=[tmp_path / "v"])
    message = str(caught.value)
    assert message.startswith("jmlgeo was not found: install jmlnet-geo")
    assert "Processing > Providers > JMLNet" in message and "JMLGEO_EXECUTABLE" in message
    assert str(tmp_path / "v") in message


def test_candidate_dirs_cover_common_venvs(tmp_path):
    dirs = runner.candidate_dirs(tmp_path)
    for expected in [".venv/bin", "jmlgeo/.venv/bin", ".local/bin"]:
        assert tmp_path / expected in dirs
    assert ROOT / ".venv" / "bin" in dirs  # the plugin used from this checkout


# --- issue 21: runs folder, executable check, deduplicated lines, tables, presets -----------

from jmlgeo_qgis import presets, runs  # noqa: E402


def test_a_run_gets_its_own_folder_in_the_runs_folder_and_resume_finds_it(tmp_path):
    base = tmp_path / "runs"
    first = runs.resolve_run_folder(None, base, "train", ["/d/scene.tif"], when=0)
    assert base.is_dir() and first.parent == base  # created on first use
    assert first.name.startswith("train-scene-") and not first.exists()
    first.mkdir()
    again = runs.resolve_run_folder("TEMPORARY_OUTPUT", base, "train", ["/d/scene.tif"], when=0)
    assert again != first and again.name == first.name + "-2"  # never the same folder twice
    assert runs.resolve_run_folder(base, base, "train", ["/x/scene.tif"], resume=True) == first
    two = runs.resolve_run_folder(None, base, "train", ["/d/a.tif", "/d/b.tif"], resume=True)
    assert two.name.startswith("train-a+1-")  # other scenes: nothing to resume, a new folder
    (base / "train-scene-b-20240101-000000").mkdir()  # another scene's name, not this one's
    assert runs.latest_run_folder(base, "train", ["scene.tif"]) == first
    chosen = tmp_path / "mine"
    assert runs.resolve_run_folder(str(chosen), base, "train", ["s.tif"], resume=True) == chosen
    assert runs.bundle_name("/r/train-scene-1/model.safetensors") == "train-scene-1"
    assert runs.bundle_name("/r/roads.safetensors") == "roads"


def test_check_executable_wants_our_name(tmp_path, fake):
    assert executable.check_executable(fake, environ=fake_env(tmp_path)) == "jmlgeo 0.0.0+fake"
    python = tmp_path / "bin" / "python3"
    python.symlink_to(sys.executable)
    with pytest.raises(ExecutableNotFoundError) as caught:
        executable.check_executable(python)
    message = str(caught.value)
    assert message.startswith(f"{python} is not the jmlgeo command: `python3 --version` answered")
    assert "Python interpreter" in message and f"Pick {fake} instead" in message
    other = _executable(tmp_path / "other" / "tool")
    with pytest.raises(ExecutableNotFoundError, match="answered 'nothing'.*bin/ .*venv"):
        executable.check_executable(other)


def test_line_filter_drops_repeats():
    lines = runner.LineFilter()
    shown = [
        text
        for text, level in [
            ("predict scene.tif", "info"),  # the progress text
            ("predict scene.tif…", "info"),  # the stage line that follows it
            ("no georeferencing", "warning"),
            ("wrote a", "info"),
            ("wrote a", "info"),
            ("no georeferencing", "warning"),  # shown already: a warning is said once
            ("wrote b", "info"),
        ]
        if lines.fresh(text, level)
    ]
    assert shown == ["predict scene.tif", "no georeferencing", "wrote a", "wrote b"]
    assert lines.dropped == 3


def test_stage_progress_comes_before_its_log_line():
    calls = []
    reader = EventReader(lambda f, s: calls.append("progress"), lambda t, lvl: calls.append(t))
    reader.stdout_line('{"event": "stage", "stage": "train", "total": 3}')
    assert calls == ["progress", "train…"]


def test_table_html():
    lines = [
        "| class | IoU |",
        "|---|---|",
        "| building | 50.00 |",
        "mIoU 70.00  pixel accuracy 91.50",
    ]
    page = runner.table_html(lines)
    assert page.startswith("<table") and "<th>class</th><th>IoU</th>" in page
    assert '<td align="left">building</td><td align="right">50.00</td>' in page
    assert page.endswith("<p>mIoU 70.00  pixel accuracy 91.50</p>") and "---" not in page
    assert runner.table_html(["| <b> |", "|-|", "| x |"]).count("&lt;b&gt;") == 1


def test_the_presets_the_dialog_shows_are_the_library_s():
    from jmlnet_geo.config import LOSS_NAMES, preset_config
    from jmlnet_geo.proposals.options import CLASSIC_METHODS, DETECTOR_METHODS

    for name, shown in presets.PRESET_DEFAULTS.items():
        segmenter = preset_config(name).segmenter
        assert {key: getattr(segmenter, key) for key in shown} == shown
    assert set(presets.LOSS_HELP) == set(LOSS_NAMES)
    assert set(presets.PROPOSALS) == {*CLASSIC_METHODS, *DETECTOR_METHODS}


def test_duration_estimate():
    fast_cpu = presets.estimate_seconds("fast", 60, "cpu")
    assert 4 * 60 < fast_cpu < 20 * 60  # the sample: about 10 min on 2 cores (README)
    assert presets.estimate_seconds("fast", 60, "cuda") < fast_cpu / 5
    assert presets.estimate_seconds("paper", 60, "cpu") > 24 * 3600
    assert presets.estimate_seconds("fast", 60, "cpu", stage1_steps=1, stage2_steps=1) < 60
    assert presets.format_duration(30) == "under a minute"
    assert presets.format_duration(12 * 60) == "about 12 min"
    assert presets.format_duration(3 * 3600 + 20 * 60) == "about 3 h 20 min"


def test_bundle_summary_is_jmlgeo_info_of_the_bundle(tmp_path):
    """The Predict dialog's summary: what the real ``jmlgeo info`` says of the chosen bundle."""
    from jmlnet_geo.bundle import untrained_bundle

    jmlgeo = Path(sys.executable).parent / "jmlgeo"  # the venv's console script (make installs it)
    assert jmlgeo.exists(), jmlgeo
    bundle = tmp_path / "model.safetensors"
    norm = {"mean": [100.0, 100.0, 100.0], "std": [30.0, 30.0, 30.0]}
    untrained_bundle(bundle, ["tank"], [[200, 10, 10]], norm, tile_size=64)
    summary = executable.bundle_summary(jmlgeo, bundle)
    assert "model.safetensors" in summary and "tank" in summary
    assert "supervision" in summary and "stages" in summary
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a bundle")
    refused = executable.bundle_summary(jmlgeo, broken)
    assert "broken.safetensors" in refused and len(refused.splitlines()) == 1


def test_the_plugins_choice_lists_are_the_librarys():
    """The plugin cannot import jmlnet_geo (QGIS's own Python); its lists must not drift."""
    import ast

    from jmlnet_geo.predict_windows import TTA_MODES

    tree = ast.parse((ROOT / "qgis_plugin" / "jmlgeo_qgis" / "parameters.py").read_text())
    lists = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and isinstance(node.value, ast.List)
    }
    assert lists["TTA_MODES"] == list(TTA_MODES)
