"""--cluster: proposals and prediction on a Dask LocalCluster give the local run's files."""

from __future__ import annotations

import dataclasses
import functools
import os
import platform
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from conftest import ORIGIN, assert_one_line_error, pixel_box, write_boxes, write_scene

from jmlnet_geo.bundle import untrained_bundle
from jmlnet_geo.children import tune_malloc
from jmlnet_geo.errors import OptionError
from jmlnet_geo.io.raster import open_scenes
from jmlnet_geo.io.vector import boxes_for_scenes, read_boxes
from jmlnet_geo.predict import PredictOptions, Predictor, WindowWarning
from jmlnet_geo.proposals.stage import make_proposals

distributed = pytest.importorskip("distributed", reason="needs jmlnet-geo[distributed]")

from jmlnet_geo.cluster import (  # noqa: E402
    KILL_ENV,
    THREADS_ENV,
    Task,
    parse_cluster,
    run_tasks,
    scene_map,
)
from jmlnet_geo.cluster_predict import predict_scenes, row_blocks  # noqa: E402

pytestmark = pytest.mark.cluster
METHODS = ["box", "crf", "grabcut"]


@pytest.fixture(scope="module")
def client():
    # one torch thread on the workers, as in this process (below): oneDNN's sums may differ in
    # their last bit between thread counts, and the tests compare bytes
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            env={THREADS_ENV: "1"},
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The local runs on one torch thread, as the workers (alone, this file would get 2)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    path = tmp_path_factory.mktemp("bundle") / "model.safetensors"
    norm = {"mean": [100.0] * 3, "std": [40.0] * 3}
    untrained_bundle(path, ["car", "roof"], [[255, 0, 0], [0, 0, 255]], norm, 64, 0.5, seed=0)
    return path


def scene(path: Path, seed: int, shape=(80, 96), dx: float = 0.0) -> Path:
    """A blob on noise, uint8 RGB, at ORIGIN shifted east by ``dx`` metres."""
    rng = np.random.default_rng(seed)
    height, width = shape
    yy, xx = np.mgrid[:height, :width]
    blob = ((yy - height / 2) ** 2 + (xx - width / 2) ** 2) < (min(shape) / 4) ** 2
    data = rng.integers(20, 90, (3, height, width)).astype(np.float32)
    data[:, blob] += 120
    transform = Affine(0.5, 0, ORIGIN[0] + dx, 0, -0.5, ORIGIN[1])
    return write_scene(path, data.astype(np.uint8), transform=transform)


def three_scenes(folder: Path) -> tuple[list[Path], Path]:
    """Three scenes side by side (100 m apart) with two boxes each, and their box layer."""
    scenes = [scene(folder / f"s{i}.tif", i, dx=100.0 * i) for i in range(3)]
    shift = [(200 * i, 0) for i in range(3)]  # 100 m = 200 px at 0.5 m
    geoms = [
        g
        for dc, _ in shift
        for g in (pixel_box(24 + dc, 16, 72 + dc, 64), pixel_box(4 + dc, 4, 30 + dc, 28))
    ]
    boxes = write_boxes(folder / "boxes.gpkg", geoms, ["car", "roof"] * 3)
    return scenes, boxes


def corrupt_tiles(path: Path) -> Path:
    """Overwrite the first compressed tile of a valid tiled GeoTIFF: the header still reads."""
    with rasterio.open(path) as ds:
        offset = int(ds.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1))
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * 64)
    return path


def same_bytes(a: Path, b: Path) -> bool:
    return a.read_bytes() == b.read_bytes()


def test_cluster_addresses_are_parsed_or_refused(jmlgeo):
    for command in (["proposals", "x.tif", "--boxes", "b.gpkg"], ["predict", "m.st", "x.tif"]):
        refused = jmlgeo(*command, "--out", "o", "--cluster", "10.0.0.1:8786")
        assert_one_line_error(refused, "--cluster 10.0.0.1:8786", "tcp://host:8786")
    assert parse_cluster("tcp://10.0.0.1:8786").address == "tcp://10.0.0.1:8786"
    assert parse_cluster("local:3").local_workers == 3
    for bad in ("local:0", "local:x", "10.0.0.1:8786", "tcp://"):
        with pytest.raises(OptionError, match="local:N"):
            parse_cluster(bad)


def test_proposals_on_a_cluster_are_the_local_bytes(tmp_path, client):
    scenes, boxes = three_scenes(tmp_path)
    layer = read_boxes(boxes)
    scene_boxes = boxes_for_scenes(layer, open_scenes(scenes))
    assert [len(sb) for sb in scene_boxes] == [2, 2, 2]
    local = make_proposals(scene_boxes, layer.classes.names, METHODS, "local", workers=1)
    seen = []
    remote = make_proposals(
        scene_boxes,
        layer.classes.names,
        METHODS,
        "remote",
        scene_map=scene_map(client),
        stage_progress=lambda name, unit: _recording(seen),
    )
    for a, b in zip(local.summaries, remote.summaries, strict=True):
        assert a.scene == b.scene and a.boxes == b.boxes
        for method in METHODS:
            assert (
                Path(b.methods[method].path) == Path("remote") / Path(a.methods[method].path).name
            )
            assert same_bytes(Path(a.methods[method].path), Path(b.methods[method].path)), method
    assert seen[0] == (0, 6) and seen[-1] == (6, 6)  # boxes, fed from finished scenes


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_workers_keep_freed_buffers_for_reuse(client):
    # Dask starts workers with MALLOC_TRIM_THRESHOLD_ set (GrabCut measured 25-30 % slower
    # there); the threshold calls of every worker's tasks are accepted by glibc
    assert set(client.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_").values()) == {"65536"}
    assert list(client.run(tune_malloc).values()) == [True, True]


def test_local_cluster_workers_run_without_the_profiler():
    from jmlnet_geo.cluster import QUIET_WORKERS, cluster_client

    def settings():
        import dask

        return {key: dask.config.get(key) for key in QUIET_WORKERS}

    with cluster_client("local:1") as client:
        assert list(client.run(settings).values()) == [QUIET_WORKERS]
    assert settings() != QUIET_WORKERS  # this process's configuration is left as it was


def test_costlier_tasks_start_first(client):
    # the run should not end with one worker on a long task while the other idles
    def started(cost):  # by value to the workers (a local function)
        import time

        begin = time.monotonic()  # one clock for every process of this machine
        time.sleep(0.4)
        return begin

    costs = [1, 5, 3, 4, 2]
    tasks = [Task(f"t{c}", started, (c,), cost=c) for c in costs]
    begins = run_tasks(client, tasks)
    order = [c for _, c in sorted(zip(begins, costs, strict=True))]
    assert set(order[:2]) == {5, 4} and set(order[2:4]) == {3, 2} and order[4] == 1


def test_warnings_raised_on_a_worker_reach_the_client(tmp_path, client):
    scenes, boxes = three_scenes(tmp_path)
    scene_boxes = boxes_for_scenes(read_boxes(boxes), open_scenes(scenes))

    def warn(scene_boxes, out_dir, methods):  # by value to the workers (a local function)
        import warnings

        name = Path(scene_boxes[0].scene.path).name
        warnings.warn(f"{name}: raised on a worker", UserWarning, stacklevel=1)
        return [name]

    write = functools.partial(warn, out_dir=os.fspath(tmp_path), methods=["box"])
    with pytest.warns(UserWarning) as caught:
        names = scene_map(client)(write, scene_boxes, lambda done, total: None)
    assert names == ["s0.tif", "s1.tif", "s2.tif"]
    assert sorted(str(w.message) for w in caught) == [
        f"s{i}.tif: raised on a worker" for i in range(3)
    ]


def test_predictions_on_a_cluster_are_the_local_bytes(tmp_path, client, bundle):
    scenes = [scene(tmp_path / f"p{i}.tif", 10 + i, shape=(90 + 7 * i, 100)) for i in range(3)]
    options = PredictOptions(window=64, overlap=16, probabilities=True)
    predictor = Predictor(bundle)
    local = [predictor.predict(s, tmp_path / "local", options) for s in scenes]
    rounded = dataclasses.replace(options, window=72)  # rounded to 64 on the workers, shown here
    with pytest.warns(WindowWarning, match="--window 72"):
        remote = predict_scenes(client, bundle, scenes, tmp_path / "remote", rounded)
    for a, b in zip(local, remote, strict=True):
        assert same_bytes(a.classes, b.classes) and same_bytes(a.probabilities, b.probabilities)
        assert same_bytes(a.style, b.style)
        assert b.windows == a.windows > 1


@pytest.mark.parametrize("panel", [None, 48])  # 48: windows of 64 reach into 2 or 3 panels
def test_a_huge_scene_split_into_row_blocks_is_the_local_cog(tmp_path, client, bundle, panel):
    path = scene(tmp_path / "huge.tif", 3, shape=(300, 130))
    options = PredictOptions(window=64, overlap=16, batch_size=3, probabilities=True, panel=panel)
    predictor = Predictor(bundle)
    local = predictor.predict(path, tmp_path / "local", options)
    split = 300 * 130 // 4
    blocks = row_blocks(
        open_scenes([path])[0], predictor.plan(open_scenes([path])[0], options), split
    )
    assert len(blocks) == 4 and blocks[0][0] == 0 and blocks[-1][1] == 300
    (remote,) = predict_scenes(
        client, bundle, [path], tmp_path / "remote", options, split_pixels=split
    )
    for a, b in ((local.classes, remote.classes), (local.probabilities, remote.probabilities)):
        with rasterio.open(a) as x, rasterio.open(b) as y:
            assert x.profile == y.profile
            np.testing.assert_array_equal(x.read(), y.read())
        assert same_bytes(a, b)  # the COG writer is deterministic: identical pixels, same file
    assert sorted(os.listdir(tmp_path / "remote")) == sorted(os.listdir(tmp_path / "local"))


def test_a_worker_killed_mid_write_leaves_no_final_file_and_the_task_reruns(tmp_path, client):
    scenes, boxes = three_scenes(tmp_path)
    layer = read_boxes(boxes)
    scene_boxes = boxes_for_scenes(layer, open_scenes(scenes))
    local = make_proposals(scene_boxes, layer.classes.names, ["box"], "local", workers=1)
    client.run(lambda: os.environ.update({KILL_ENV: "s1"}))  # the next attempt on s1 dies mid-write
    try:
        remote = make_proposals(
            scene_boxes, layer.classes.names, ["box"], "remote", scene_map=scene_map(client)
        )
    finally:
        client.run(lambda: os.environ.pop(KILL_ENV, None))
    assert (Path("remote") / ".s1.killed-once").exists()  # the hook did kill a worker
    for a, b in zip(local.summaries, remote.summaries, strict=True):
        assert same_bytes(Path(a.methods["box"].path), Path(b.methods["box"].path))
    names = os.listdir("remote")
    finals = [n for n in names if not n.startswith(".")]
    assert sorted(finals) == ["s0.box.tif", "s1.box.tif", "s2.box.tif"]
    # the dead worker's temporary file was never final; the retry removes it once the process
    # is gone (a worker that is not yet reaped can leave it, hidden, for the next run)
    hidden = [n for n in names if n.startswith(".") and n != ".s1.killed-once"]
    assert all(re.fullmatch(r"\.s1\.box\.jmlgeo-\d+-.*\.partial\.tif", n) for n in hidden), hidden


def test_cli_a_corrupt_scene_is_named_and_the_others_are_written(jmlgeo, tmp_path, client, bundle):
    # through a running scheduler's tcp:// address (the module's LocalCluster)
    scenes = [scene(tmp_path / f"c{i}.tif", i, shape=(96, 96)) for i in range(3)]
    with rasterio.open(scenes[1]) as ds:  # rewrite as a tiled, compressed GeoTIFF, then break it
        profile = ds.profile | {"tiled": True, "blockxsize": 32, "blockysize": 32}
        data = ds.read()
    with rasterio.open(scenes[1], "w", **(profile | {"compress": "deflate"})) as ds:
        ds.write(data)
    corrupt_tiles(scenes[1])
    result = jmlgeo(
        "predict", bundle, *scenes, "--out", tmp_path / "out", "--cluster", client.scheduler.address,
        "--window", "64", "--progress", "json",
    )  # fmt: skip
    print(assert_one_line_error(result, "1 of 3", "c1.tif"))
    assert '"event": "progress"' in result.out
    written = sorted(n for n in os.listdir(tmp_path / "out") if n.endswith(".tif"))
    assert written == ["c0.classes.tif", "c2.classes.tif"]


def _recording(seen):
    import contextlib

    @contextlib.contextmanager
    def stage():
        yield lambda done, total, **info: seen.append((done, total))

    return stage()


def test_train_runs_its_proposal_stages_on_the_cluster(tmp_path, client):
    from jmlnet_geo.config import override, override_detector, preset_config
    from jmlnet_geo.proposals.stage import DetectorProposalOptions
    from jmlnet_geo.train.pipeline import TrainInputs, train

    scenes, boxes = three_scenes(tmp_path)
    config = override(
        preset_config("fast"), proposals=("grabcut", "detcam"), stage1_proposal="grabcut",
        stage1_steps=1, stage2_steps=1, tile_size=64, batch_size=2, loader_workers=0,
    )  # fmt: skip
    config = override_detector(config, steps=1, tile_size=64, batch_size=2)
    config = dataclasses.replace(config, device="cpu")
    inputs = TrainInputs(scenes=tuple(scenes), boxes=boxes)
    result = train(inputs, config, "run", scene_map=scene_map(client))
    assert result.bundle.exists()
    layer = read_boxes(boxes)
    scene_boxes = boxes_for_scenes(layer, open_scenes(scenes))
    make_proposals(
        scene_boxes, layer.classes.names, ["grabcut", "detcam"], "local", workers=1,
        detector=Path("run/detector/detector.safetensors"),
        detector_options=DetectorProposalOptions(device="cpu"),
    )  # fmt: skip
    for stem in ("s0", "s1", "s2"):
        for method in ("grabcut", "detcam"):
            name = f"{stem}.{method}.tif"
            assert same_bytes(Path("local") / name, Path("run/proposals") / name), name


def test_cli_proposals_on_a_local_cluster_match_the_local_run(jmlgeo, tmp_path):
    import json

    scenes, boxes = three_scenes(tmp_path)
    args = ["proposals", *scenes, "--boxes", boxes, "--methods", "box", "--progress", "json"]
    local = jmlgeo(*args, "--out", "local")
    remote = jmlgeo(*args, "--out", "remote", "--cluster", "local:2")
    assert local.code == 0 and remote.code == 0, remote.err
    assert '"stage": "proposals (box)", "done": 6, "total": 6' in remote.out
    for name in ("s0.box.tif", "s1.box.tif", "s2.box.tif"):
        assert same_bytes(Path("local") / name, Path("remote") / name)
        assert f'"path": "{tmp_path / "remote" / name}"' in remote.out  # an output event

    def record(folder):
        found = json.loads((Path(folder) / "proposals.json").read_text())
        for s in found["scenes"]:
            for m in s["methods"].values():
                m.pop("seconds")
                m["path"] = Path(m["path"]).name
        return found

    assert record("local") == record("remote")
