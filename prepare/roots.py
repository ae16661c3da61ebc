"""Checks that an external dataset root (a real COCO/VOC install) is where the config says."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from core.errors import UserError
from prepare.layouts import (
    CITYSCAPES_IMG_DIR,
    CITYSCAPES_SEG_DIR,
    COCO_ANNOTATION_KINDS,
    VOC_AUG_SEG_DIR,
    VOC_AUG_SPLIT,
    VOC_DETECTION_TEST,
    VOC_DETECTION_TRAIN,
    VOC_IMG_DIR,
    VOC_SEG_DIR,
    VOC_TRAIN_SPLIT,
    VOC_VAL_SPLIT,
    coco_layout,
    missing_paths,
)

# The official layout each pipeline stage reads, shown to the user when a root is missing.
EXPECTED_LAYOUT = {
    "coco": "train2017/*.jpg, val2017/*.jpg, annotations/{instances,person_keypoints}_{train,val}2017.json "
    "(+ train2014/*.jpg for hierarchical grouping's COCO-2014 train)",
    "voc": "VOC2007/{JPEGImages,Annotations,ImageSets/Main}, VOC2012/{JPEGImages,Annotations,ImageSets/Main,"
    "ImageSets/Segmentation,SegmentationClass} (+ SBD's SegmentationClassAug and ImageSets/Segmentation/aug.txt "
    "when finetune.voc_segmentation.train_aug is true, as mmseg's voc_aug.py converter writes them)",
    "openimages": "train/<ImageID>.jpg, train-annotations-bbox.csv, class-descriptions-boxable.csv",
    "bsds500": "data/images/{train,val,test}/*.jpg, data/groundTruth/{train,val,test}/*.mat",
    "tinyimagenet": "wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG, val/val_annotations.txt",
    # ILSVRC2012_img_train.tar with each class tar extracted to its folder; val sorted into class folders
    # (the usual valprep.sh, as torchvision's ImageFolder reads it).
    "imagenet": "train/<wnid>/*.JPEG, val/<wnid>/*.JPEG (ILSVRC2012)",
    # STL-10 ships as binaries (stl10_binary/*.bin); the image sets read image files, e.g. as written
    # by the dataset's own stl10_input.py (save_images), one folder per split.
    "stl10": "train/, unlabeled/, test/ folders of STL-10 images (PNG), as named in pretrain.image_sets.stl10",
    "davis": "JPEGImages/480p/<sequence>/%05d.jpg, Annotations/480p/<sequence>/%05d.png (+ ImageSets/2017/*.txt)",
    "cityscapes": "leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png, "
    "gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png (trainIds, 255 ignore: written by "
    "mmseg's tools/dataset_converters/cityscapes.py from the official gtFine polygons)",
}
# Any other named dataset (few-shot sets of LC-loss Table 7) is a folder of class folders.
_CLASS_FOLDERS = "<class>/*.{jpg,png} class folders (torchvision ImageFolder)"
# Datasets the prepare stage can build a small copy of.
BUILDABLE = frozenset({"coco", "voc", "openimages", "bsds500", "tinyimagenet", "imagenet", "cityscapes", "davis"})


def check_dataset_root(name: str, root: str) -> None:
    """Raise a UserError naming the config key, the expected layout and the fix if `root` is missing."""
    if not Path(root).is_dir():
        build_hint = "."
        if name in BUILDABLE:
            build_hint = f"; or set `datasets.{name}.build: true` to build a small one with the prepare stage."
        raise UserError(
            f"dataset root for '{name}' not found: {root}. Set `datasets.{name}.root` in a --configfile "
            f"to a folder with the official layout: {EXPECTED_LAYOUT.get(name, _CLASS_FOLDERS)}{build_hint}"
        )


def _voc_segmentation_layout(train_aug: bool) -> list[str]:
    parts = [f"{VOC_IMG_DIR}/", f"{VOC_SEG_DIR}/", VOC_TRAIN_SPLIT, VOC_VAL_SPLIT]
    parts += [f"{VOC_AUG_SEG_DIR}/", VOC_AUG_SPLIT] if train_aug else []
    return [f"VOC2012/{part}" for part in parts]


def protocol_dataset(spec: Mapping[str, Any]) -> str:
    """The `datasets` entry a transfer protocol reads (COCO instances and keypoints share one root)."""
    if spec["task"] == "detection":
        return "voc" if spec["dataset"] == "voc" else "coco"
    if spec["task"] == "segmentation":
        return spec["dataset"]  # voc or cityscapes
    return spec["data"]


def protocol_layout(spec: Mapping[str, Any]) -> list[str]:
    """The paths (folders end with '/') a transfer protocol reads from its dataset root.

    A shallow check that can run before any job: each job still checks the files it reads.
    """
    task = spec["task"]
    if task == "detection" and spec["dataset"] == "voc":
        return [f"VOC{year}/{part}" for year, split in (*VOC_DETECTION_TRAIN, VOC_DETECTION_TEST)
                for part in ("JPEGImages/", "Annotations/", f"ImageSets/Main/{split}.txt")]
    if task == "detection":
        return coco_layout((COCO_ANNOTATION_KINDS[spec["dataset"]],))
    if task in ("segmentation", "segment_search") and protocol_dataset(spec) == "voc":
        return _voc_segmentation_layout(bool(spec.get("train_aug")))
    if task == "segmentation":  # cityscapes
        folders = (CITYSCAPES_IMG_DIR, CITYSCAPES_SEG_DIR)
        return [f"{folder}/{split}/" for folder in folders for split in ("train", "val")]
    if task == "davis":
        sequences = spec["sequences"]
        listed = [sequences] if isinstance(sequences, str) and sequences != "all" else []
        return ["JPEGImages/480p/", "Annotations/480p/", *listed]
    if spec["layout"] == "tinyimagenet":  # linear_eval and few_shot
        return ["wnids.txt", "train/", "val/images/", "val/val_annotations.txt"]
    splits = [spec["split"]] if task == "few_shot" else ["train", "test"]
    return [split.rstrip("/") + "/" for split in splits]


def check_protocol_root(protocol: str, spec: Mapping[str, Any], dataset: str, root: str) -> None:
    """Raise a UserError naming the protocol, the missing paths and the fix when `root` lacks what it reads."""
    expected = protocol_layout(spec)
    missing = missing_paths(Path(root), expected)
    if missing:
        raise UserError(
            f"finetune.protocols.{protocol} reads {', '.join(missing)} from datasets.{dataset}.root ({root}), "
            f"which lacks them. Point datasets.{dataset}.root at a root that has them (it reads: "
            f"{', '.join(expected)}), or drop the protocol from the tables you build."
        )


def check_image_set_root(name: str, spec: Mapping[str, Sequence[str]], root: str) -> None:
    """Raise a UserError when a train or held-out folder pattern of image set `name` matches no folder."""
    if spec.get("ids") and not (Path(root) / spec["ids"]).is_file():
        raise UserError(f"pretrain.image_sets.{name}.ids: {spec['ids']} is not a file under datasets.{spec['dataset']}"
                        f".root ({root}). Fix the path or the root.")
    for key in ("train", "heldout"):
        for pattern in spec.get(key, []):
            if not any(path.is_dir() for path in Path(root).glob(pattern)):
                raise UserError(
                    f"pretrain.image_sets.{name}.{key}: '{pattern}' matches no folder under "
                    f"datasets.{spec['dataset']}.root ({root}). Fix the pattern or the root."
                )
