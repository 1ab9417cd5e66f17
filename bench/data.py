"""The benches' data sets (NWPU VHR-10, iSAID samples, SpaceNet tile) and proposal scoring.

Everything is read with the library's importers (``import_coco``, ``import_isaid``) and scored
with ``jmlnet_geo.evaluate.score_scenes``; this module only says where the files are.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import geopandas as gpd
import numpy as np

from jmlnet_geo.evaluate import TruthCache, score_scenes, scores
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
