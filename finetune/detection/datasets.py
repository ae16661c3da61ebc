"""Register the transfer datasets in Detectron2's catalogs and pick each one's evaluator.

Names carry a hash of the files they read, so one process can hold datasets of several roots
(tests) and a COCO subset never shadows the full train set.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances, register_pascal_voc
from detectron2.data.datasets.builtin_meta import _get_builtin_metadata
from detectron2.evaluation import COCOEvaluator, DatasetEvaluator, PascalVOCDetectionEvaluator

from core.errors import UserError

# (year, split) of MoCo's VOC protocol: TRAIN voc_2007_trainval + voc_2012_trainval, TEST voc_2007_test.
_VOC_TRAIN = ((2007, "trainval"), (2012, "trainval"))
_VOC_TEST = (2007, "test")
# dataset kind -> (annotation file stem, Detectron2's builtin metadata); as builtin.py registers COCO.
_COCO_KINDS = {"coco": ("instances", "coco"), "coco_keypoints": ("person_keypoints", "coco_person")}
DATASETS = ("voc", *_COCO_KINDS)
_BUILD_HINT = "(build a small one with `python -m prepare voc` / `python -m prepare coco`)"


@dataclass(frozen=True)
class Registered:
    """The catalog names of one protocol's train and test sets."""

    train: tuple[str, ...]
    test: str


def build_evaluator(dataset_name: str, tasks: tuple[str, ...], output_dir: str) -> DatasetEvaluator:
    """The dataset's own metric: PASCAL VOC AP (VOC07 metric) for VOC, COCO AP of `tasks` for COCO."""
    if MetadataCatalog.get(dataset_name).get("evaluator_type") == "coco":  # set by register_coco_instances
        # Explicit tasks: with none, a model without detections would get no segm/keypoints entry.
        # use_fast_impl=False: the C++ COCOeval of detectron2._C is absent on pure-Python installs.
        return COCOEvaluator(dataset_name, tasks, distributed=True, output_dir=output_dir, use_fast_impl=False)
    return PascalVOCDetectionEvaluator(dataset_name)


def _tag(*paths: Path) -> str:
    return hashlib.sha256("|".join(str(p.resolve()) for p in paths).encode()).hexdigest()[:8]


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise UserError(f"{path} is missing; --data-root must be {what} {_BUILD_HINT}.")
    return path


def register_voc(root: Path) -> Registered:
    """VOC07+12 trainval and VOC07 test of a VOCdevkit folder."""
    tag = _tag(root)
    names = {}
    for year, split in (*_VOC_TRAIN, _VOC_TEST):
        dirname = root / f"VOC{year}"
        _require(dirname / "ImageSets" / "Main" / f"{split}.txt", "a VOCdevkit folder with VOC2007 and VOC2012")
        name = names[year, split] = f"densebench_voc_{year}_{split}_{tag}"
        if name not in DatasetCatalog.list():
            register_pascal_voc(name, str(dirname), split, year)
    return Registered(tuple(names[key] for key in _VOC_TRAIN), names[_VOC_TEST])


def register_coco(root: Path, kind: str, train_json: Path | None = None) -> Registered:
    """COCO train2017 (or the subset `train_json`, e.g. mini-COCO 5 %) and the full val2017."""
    stem, metadata_name = _COCO_KINDS[kind]
    layout = "a COCO folder with train2017/, val2017/ and annotations/"
    files = {
        "train": (_require(train_json or root / "annotations" / f"{stem}_train2017.json", layout),
                  _require(root / "train2017", layout)),
        "val": (_require(root / "annotations" / f"{stem}_val2017.json", layout), _require(root / "val2017", layout)),
    }
    names = {}
    for split, (json_file, image_root) in files.items():
        name = names[split] = f"densebench_{kind}_{split}_{_tag(json_file, image_root)}"
        if name not in DatasetCatalog.list():
            register_coco_instances(name, _get_builtin_metadata(metadata_name), str(json_file), str(image_root))
    return Registered((names["train"],), names["val"])


def register(kind: str, root: Path, train_json: Path | None) -> Registered:
    """Register the `kind` dataset found at `root`; `train_json` replaces COCO's train annotations."""
    if kind == "voc":
        if train_json is not None:
            raise UserError("--train-json applies to COCO datasets only; drop it for VOC.")
        return register_voc(root)
    return register_coco(root, kind, train_json)
