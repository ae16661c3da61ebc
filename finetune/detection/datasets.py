"""Register the transfer datasets in Detectron2's catalogs and pick each one's evaluator.

Names carry a hash of the files they read, so one process can hold datasets of several roots
(tests) and a COCO subset never shadows the full train set. `eval_images` N evaluates on the first N
test images (a smoke run's time): the subset's image list (VOC) or annotation file (COCO) is written to
the run's work dir, so the dataset's own evaluator scores exactly those images.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_voc_instances, register_coco_instances, register_pascal_voc
from detectron2.data.datasets.builtin_meta import _get_builtin_metadata
from detectron2.evaluation import COCOEvaluator, DatasetEvaluator, PascalVOCDetectionEvaluator

from core.errors import UserError
from core.io import write_json, write_text
from prepare.layouts import COCO_ANNOTATION_KINDS, VOC_DETECTION_TEST, VOC_DETECTION_TRAIN, load_coco_json

# dataset kind -> (annotation file stem, Detectron2's builtin metadata); as builtin.py registers COCO.
_COCO_KINDS = {name: (kind, {"coco": "coco", "coco_keypoints": "coco_person"}[name])
               for name, kind in COCO_ANNOTATION_KINDS.items()}
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
    return _VOCEvaluator(dataset_name)


class _VOCEvaluator(PascalVOCDetectionEvaluator):
    """VOC07 AP over the dataset's image list: its split file, or a subset's own (metadata `image_set_file`)."""

    def __init__(self, dataset_name: str) -> None:
        super().__init__(dataset_name)
        self._image_set_path = MetadataCatalog.get(dataset_name).get("image_set_file", self._image_set_path)


def _tag(*paths: Path) -> str:
    return hashlib.sha256("|".join(str(p.resolve()) for p in paths).encode()).hexdigest()[:8]


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise UserError(f"{path} is missing; --data-root must be {what} {_BUILD_HINT}.")
    return path


def register_voc(root: Path, eval_images: int | None = None, work_dir: Path | None = None) -> Registered:
    """VOC07+12 trainval and VOC07 test of a VOCdevkit folder (its first `eval_images`, listed in `work_dir`)."""
    tag = _tag(root)
    names = {}
    for year, split in (*VOC_DETECTION_TRAIN, VOC_DETECTION_TEST):
        dirname = root / f"VOC{year}"
        _require(dirname / "ImageSets" / "Main" / f"{split}.txt", "a VOCdevkit folder with VOC2007 and VOC2012")
        name = names[year, split] = f"densebench_voc_{year}_{split}_{tag}"
        if name not in DatasetCatalog.list():
            register_pascal_voc(name, str(dirname), split, year)
    test = names[VOC_DETECTION_TEST]
    if eval_images is not None:
        year, split = VOC_DETECTION_TEST
        dirname = root / f"VOC{year}"
        ids = (dirname / "ImageSets" / "Main" / f"{split}.txt").read_text().split()[:eval_images]
        image_set = _subset_dir(work_dir) / f"voc_{year}_{split}_first{eval_images}.txt"
        write_text(image_set, "\n".join(ids) + "\n")
        test = f"densebench_voc_{year}_{split}_first{eval_images}_{_tag(root, image_set)}"
        if test not in DatasetCatalog.list():
            classes = MetadataCatalog.get(names[VOC_DETECTION_TEST]).thing_classes
            DatasetCatalog.register(test, lambda: load_voc_instances(str(dirname), split, classes)[:eval_images])
            MetadataCatalog.get(test).set(thing_classes=classes, dirname=str(dirname), year=year, split=split,
                                          image_set_file=str(image_set))
    return Registered(tuple(names[key] for key in VOC_DETECTION_TRAIN), test)


def _subset_dir(work_dir: Path | None) -> Path:
    if work_dir is None:
        raise ValueError("eval_images needs a work_dir for the subset's files")
    work_dir.mkdir(parents=True, exist_ok=True)
    return work_dir


def _first_images(json_file: Path, count: int, out: Path) -> Path:
    """A COCO annotation file of the first `count` images of `json_file` (by id) and their annotations."""
    data = load_coco_json(json_file)
    images = sorted(data["images"], key=lambda image: image["id"])[:count]
    kept = {image["id"] for image in images}
    annotations = [ann for ann in data["annotations"] if ann["image_id"] in kept]
    write_json(out, {**data, "images": images, "annotations": annotations})
    return out


def register_coco(root: Path, kind: str, train_json: Path | None = None, eval_images: int | None = None,
                  work_dir: Path | None = None) -> Registered:
    """COCO train2017 (or the subset `train_json`, e.g. mini-COCO 5 %) and val2017 (its first `eval_images`,
    written to `work_dir`)."""
    stem, metadata_name = _COCO_KINDS[kind]
    layout = "a COCO folder with train2017/, val2017/ and annotations/"
    files = {
        "train": (_require(train_json or root / "annotations" / f"{stem}_train2017.json", layout),
                  _require(root / "train2017", layout)),
        "val": (_require(root / "annotations" / f"{stem}_val2017.json", layout), _require(root / "val2017", layout)),
    }
    if eval_images is not None:
        subset = _subset_dir(work_dir) / f"{stem}_val2017_first{eval_images}.json"
        files["val"] = (_first_images(files["val"][0], eval_images, subset), files["val"][1])
    names = {}
    for split, (json_file, image_root) in files.items():
        name = names[split] = f"densebench_{kind}_{split}_{_tag(json_file, image_root)}"
        if name not in DatasetCatalog.list():
            register_coco_instances(name, _get_builtin_metadata(metadata_name), str(json_file), str(image_root))
    return Registered((names["train"],), names["val"])


def register(kind: str, root: Path, train_json: Path | None, eval_images: int | None = None,
             work_dir: Path | None = None) -> Registered:
    """Register the `kind` dataset found at `root`; `train_json` replaces COCO's train annotations; with
    `eval_images`, the test set is its first N images (files of the subset in `work_dir`)."""
    if kind == "voc":
        if train_json is not None:
            raise UserError("--train-json applies to COCO datasets only; drop it for VOC.")
        return register_voc(root, eval_images, work_dir)
    return register_coco(root, kind, train_json, eval_images, work_dir)
