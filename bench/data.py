"""The benches' data sets (NWPU VHR-10, iSAID samples, SpaceNet tile) and proposal scoring.

Everything is read with the library's importers (``import_coco``, ``import_isaid``) and scored
with ``jmlnet_geo.evaluate.score_scenes``; this module only says where the files are. Two views:
:class:`Dataset` (every scene with its boxes and truth: the proposal benches) and :class:`Part`
(a train / validation split as files: the benches that train, ``accuracy`` and ``audit``).
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
from shapely.geometry import box as shapely_box

from bench.report import SHARED
from jmlnet_geo.evaluate import TruthCache, score_scenes, scores, split_images
from jmlnet_geo.io.importers import import_coco
from jmlnet_geo.io.isaid import import_isaid, isaid_images
from jmlnet_geo.io.raster import Scene, open_scene, open_scenes
from jmlnet_geo.io.vector import SceneBoxes, boxes_for_scenes, read_boxes
from jmlnet_geo.proposals.compose import SceneSummary, pixel_boxes, proposal_path, write_proposals
from jmlnet_geo.proposals.options import ProposalOptions


@dataclass
class Dataset:
    """Scenes with their true boxes, class names and true masks (``truth(scene)``)."""

    name: str
    scene_boxes: list[SceneBoxes]
    class_names: tuple[str, ...]
    truth: Callable[[Scene], np.ndarray]

    @property
    def boxes(self) -> int:
        return sum(len(sb) for sb in self.scene_boxes)

    def head(self, n: int) -> Dataset:
        """The first ``n`` scenes (in sorted file order)."""
        return replace(self, scene_boxes=self.scene_boxes[:n])


def nwpu_layers(data: Path, work: Path) -> tuple[Path, Path]:
    """NWPU VHR-10 train imported once (``import_coco``): (box layer, truth polygon layer)."""
    folder = data / "nwpu_vhr10_train"
    boxes, truth = work / "nwpu_boxes.gpkg", work / "nwpu_truth.gpkg"
    if not boxes.exists() or not truth.exists():
        import_coco(folder / "NWPU_instances_train.json", folder / "imgs", boxes, truth=truth)
    return boxes, truth


def load_nwpu(data: Path, work: Path) -> Dataset:
    """Every NWPU VHR-10 train image with its COCO boxes; truth: the COCO polygons."""
    boxes, truth = nwpu_layers(data, work)
    layer = read_boxes(boxes)
    scenes = open_scenes(sorted((data / "nwpu_vhr10_train" / "imgs").glob("*.jpg")))
    names = layer.classes.names
    return Dataset(
        "NWPU VHR-10 train",
        boxes_for_scenes(layer, scenes),
        names,
        TruthCache(truth, "class", names),
    )


def isaid_layers(data: Path, work: Path) -> tuple[Path, Path, Path]:
    """The iSAID samples imported once (``import_isaid``): (box layer: the tight box of each
    instance id, truth polygon layer, folder of ``NAME.tif`` class rasters of the semantic map)."""
    boxes, truth, rasters = (
        work / n for n in ("isaid_boxes.gpkg", "isaid_masks.gpkg", "isaid_truth")
    )
    if not boxes.exists() or not truth.exists():
        import_isaid(data / "isaid_devkit_samples", boxes, truth=truth, truth_rasters=rasters)
    return boxes, truth, rasters


def isaid_split(data: Path) -> tuple[list[Path], list[Path]]:
    """The devkit's split of the iSAID samples: (train images: P0005, val images: P0003-4)."""
    images = isaid_images(data / "isaid_devkit_samples")
    return [p for p in images if p.parent.parent.name == "train"], [
        p for p in images if p.parent.parent.name == "val"
    ]


def layer_subset(layer: Path, images: Sequence[str | Path], out: Path) -> Path:
    """The rows of ``layer`` on ``images`` (its ``image`` column: file names) written to ``out``."""
    frame = gpd.read_file(layer)
    names = {Path(i).name for i in images}
    frame[frame["image"].isin(names)].reset_index(drop=True).to_file(out, driver="GPKG")
    return out


def layer_classes(layer: Path) -> tuple[str, ...]:
    """The sorted class names of a box layer's ``class`` column."""
    return tuple(sorted(gpd.read_file(layer)["class"].unique()))


def score_bundle(bundle: Path, scenes: Sequence[Path], out: Path, truth, classes, options=None):
    """Predict ``scenes`` with a bundle into ``out`` and pool their confusion against ``truth``
    (``score_scenes``; a ``TruthCache``): the pooled report (``miou``, ``iou``)."""
    from jmlnet_geo.predict import PredictOptions, Predictor

    predictor = Predictor(bundle, "auto")
    options = options or PredictOptions(loader_workers=0)
    preds = [predictor.predict(s, out, options).classes for s in scenes]
    return score_scenes(preds, truth, class_names=classes, scenes=open_scenes(scenes)).pooled


def load_isaid(data: Path, work: Path) -> Dataset:
    """Boxes: the tight box of each instance id; truth: the semantic map as class rasters
    (:func:`isaid_layers`)."""
    layer_path, _, truth_dir = isaid_layers(data, work)
    layer = read_boxes(layer_path)
    scenes = open_scenes(isaid_images(data / "isaid_devkit_samples"))
    names = layer.classes.names
    truth = TruthCache(lambda scene: truth_dir / f"{Path(scene.path).stem}.tif", "class", names)
    return Dataset("iSAID samples", boxes_for_scenes(layer, scenes), names, truth)


def load_spacenet(data: Path, work: Path) -> Dataset:
    """Boxes: envelopes of the building polygons (``read_boxes``); truth: the polygons."""
    folder = data / "spacenet_solaris_sample"
    frame = gpd.read_file(folder / "geotiff_labels.geojson")
    buildings = gpd.GeoDataFrame({"class": ["building"] * len(frame)}, geometry=frame.geometry)
    layer_path = work / "spacenet_buildings.gpkg"
    buildings.to_file(layer_path, layer="buildings")
    layer = read_boxes(layer_path)
    scene = open_scene(folder / "sample_geotiff.tif")
    names = layer.classes.names
    truth = TruthCache(layer_path, "class", names)
    return Dataset("SpaceNet tile", boxes_for_scenes(layer, [scene]), names, truth)


@dataclass(frozen=True)
class Part:
    """A split of one data set for the benches that train: what training sees, what is scored.

    Attributes:
        name: ``nwpu``, ``isaid`` or ``spacenet`` (also the run folders' prefix).
        train_scenes: The scenes trained on.
        train_boxes: Their boxes (GPKG; ``image`` column for plain images).
        train_masks: Their true polygons (the full-mask rows).
        classes: Class names of ids 1..K.
        val_scenes: The scenes scored.
        val_truth: A polygon layer or a folder of ``<stem>.tif`` class rasters for them.
    """

    name: str
    train_scenes: tuple[Path, ...]
    train_boxes: Path
    train_masks: Path
    classes: tuple[str, ...]
    val_scenes: tuple[Path, ...]
    val_truth: Path

    def truth(self) -> TruthCache:
        """The validation scenes' truth (the layer, or each scene's own class raster)."""
        folder = self.val_truth.is_dir()
        return TruthCache(
            lambda s: self.val_truth / f"{Path(s.path).stem}.tif" if folder else self.val_truth,
            classes=self.classes,
        )


def nwpu_part(work: Path, limit: tuple[int, int] | None = None) -> Part:
    """NWPU imported and split 80/20 by image (``split_images``, stratified, seed 0; written to
    ``WORK/split.json``), its train boxes and masks written; ``limit`` (n_train, n_val) keeps
    the first images of each half."""
    work.mkdir(parents=True, exist_ok=True)
    boxes, truth = nwpu_layers(SHARED, work)
    classes = layer_classes(boxes)
    train, val = split_images(gpd.read_file(boxes).groupby("image")["class"].apply(set).to_dict())
    split = {"train": train, "val": val, "classes": list(classes)}
    (work / "split.json").write_text(json.dumps(split, indent=1))
    suffix = ""
    if limit:
        (train, val), suffix = (train[: limit[0]], val[: limit[1]]), f"_{limit[0]}"
    layers = [work / f"{name}{suffix}.gpkg" for name in ("train_boxes", "train_truth")]
    for source, out in zip((boxes, truth), layers, strict=True):
        if not out.exists():
            layer_subset(source, train, out)
    imgs = SHARED / "nwpu_vhr10_train" / "imgs"
    scenes = [tuple(imgs / name for name in names) for names in (train, val)]
    return Part("nwpu", scenes[0], *layers, classes, scenes[1], truth)


def isaid_part(work: Path) -> Part:
    """The devkit's split: P0005 (train folder) to train, P0003 and P0004 (val) to score."""
    folder = work / "isaid"
    folder.mkdir(parents=True, exist_ok=True)
    boxes, masks, rasters = isaid_layers(SHARED, folder)
    train, val = isaid_split(SHARED)
    train_boxes = layer_subset(boxes, train, folder / "train_boxes.gpkg")
    train_masks = layer_subset(masks, train, folder / "train_masks.gpkg")
    return Part("isaid", tuple(train), train_boxes, train_masks, layer_classes(boxes), tuple(val),
                rasters)  # fmt: skip


def spacenet_part(work: Path) -> Part:
    """West half to train (boxes of its buildings), east half to score."""
    from rasterio.windows import Window, bounds, transform

    source = SHARED / "spacenet_solaris_sample"
    folder = work / "spacenet"
    folder.mkdir(parents=True, exist_ok=True)
    polygons = gpd.read_file(source / "geotiff_labels.geojson")
    halves = {}
    with rasterio.open(source / "sample_geotiff.tif") as src:
        polygons, half = polygons.to_crs(src.crs), src.width // 2
        for name, window in (("west", Window(0, 0, half, src.height)),
                             ("east", Window(half, 0, src.width - half, src.height))):  # fmt: skip
            path = folder / f"spacenet_{name}.tif"
            profile = {"width": window.width, "height": window.height,
                       "transform": transform(window, src.transform)}  # fmt: skip
            with rasterio.open(path, "w", **(src.profile | profile)) as dst:
                dst.write(src.read(window=window))
            clipped = polygons.clip(shapely_box(*bounds(window, src.transform)))
            clipped = clipped[~clipped.is_empty & (clipped.area > 0)].explode(index_parts=False)
            geometry = list(clipped.geometry)
            halves[name] = path, gpd.GeoDataFrame({"class": ["building"] * len(geometry)},
                                                  geometry=geometry, crs=src.crs)  # fmt: skip
    (west, train), (east, val) = halves["west"], halves["east"]
    layers = [folder / f"{n}.gpkg" for n in ("train_boxes", "train_masks", "val_truth")]
    for frame, out in zip((train.set_geometry(train.envelope), train, val), layers, strict=True):
        frame.to_file(out, driver="GPKG")
    return Part("spacenet", (west,), layers[0], layers[1], ("building",), (east,), layers[2])


@dataclass
class Score:
    """Confusion matrix (rows truth, columns proposal) and the object IoU inside each box."""

    confusion: np.ndarray
    box_ious: list[float] = field(default_factory=list)
    fallbacks: int = 0
    boxes: int = 0
    seconds: float = 0.0  # method time, summed over boxes

    @property
    def iou(self) -> np.ndarray:
        return scores(self.confusion)["iou"]

    @property
    def miou(self) -> float:
        return scores(self.confusion)["miou"]

    @property
    def object_miou(self) -> float:
        """Mean IoU over the object classes present (background left out)."""
        s = scores(self.confusion)
        present = s["present"][1:]
        return float(s["iou"][1:][present].mean()) if present.any() else math.nan

    @property
    def mean_box_iou(self) -> float:
        values = [v for v in self.box_ious if not math.isnan(v)]
        return float(np.mean(values)) if values else math.nan

    @property
    def per_box(self) -> float:
        """Method seconds per box."""
        return self.seconds / self.boxes if self.boxes else math.nan


def score_folder(
    data: Dataset,
    scene_boxes: Sequence[SceneBoxes],
    out: Path,
    method: str,
    summaries: Sequence[SceneSummary] = (),
) -> Score:
    """Score the ``method`` proposal rasters in ``out`` against the true masks; the fallbacks
    and method seconds come from the ``summaries`` of the call that wrote them."""
    result = score_scenes(
        [proposal_path(out, sb.scene, method) for sb in scene_boxes],
        data.truth,
        class_names=data.class_names,
        scenes=[sb.scene for sb in scene_boxes],
        boxes=[(pixel_boxes(sb), sb.class_ids) for sb in scene_boxes],
    )
    return Score(
        result.pooled.confusion,
        [float(v) for ious in result.box_ious for v in ious],
        sum(s.methods[method].fallbacks for s in summaries),
        sum(len(sb) for sb in scene_boxes),
        sum(s.methods[method].seconds for s in summaries),
    )


def classic_scores(
    data: Dataset,
    scene_boxes: Sequence[SceneBoxes],
    out: Path,
    methods: Sequence[str],
    workers: int,
    options: ProposalOptions | None = None,
) -> dict[str, Score]:
    """``write_proposals`` of ``methods`` into ``out`` (emptied first), each method scored."""
    shutil.rmtree(out, ignore_errors=True)
    summaries = write_proposals(
        scene_boxes, data.class_names, methods, out, options or ProposalOptions(), workers=workers
    )
    return {m: score_folder(data, scene_boxes, out, m, summaries) for m in methods}
