"""Expected dataset layouts and the build-folder helpers every builder shares.

A build folder is rebuilt from scratch on each run (so no stale file of an earlier build survives)
and its manifest.json, the Snakemake output, is written last.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from core.errors import UserError
from core.io import atomic_path, write_text

COCO_SPLITS: tuple[str, ...] = ("train2017", "val2017")
# dataset kind of a detection protocol -> its COCO annotation file stem.
COCO_ANNOTATION_KINDS = {"coco": "instances", "coco_keypoints": "person_keypoints"}
# (year, split) of MoCo's VOC detection protocol: train voc_2007_trainval + voc_2012_trainval, test voc_2007_test.
VOC_DETECTION_TRAIN: tuple[tuple[int, str], ...] = ((2007, "trainval"), (2012, "trainval"))
VOC_DETECTION_TEST: tuple[int, str] = (2007, "test")
# PASCAL VOC 2012 segmentation, relative to VOCdevkit/VOC2012 (mmseg's PascalVOCDataset reads these).
VOC_IMG_DIR = "JPEGImages"
VOC_SEG_DIR = "SegmentationClass"
VOC_TRAIN_SPLIT = "ImageSets/Segmentation/train.txt"
VOC_VAL_SPLIT = "ImageSets/Segmentation/val.txt"
# SBD's extra masks, as mmseg's voc12aug config adds them (tools/dataset_converters/voc_aug.py layout).
VOC_AUG_SEG_DIR = "SegmentationClassAug"
VOC_AUG_SPLIT = "ImageSets/Segmentation/aug.txt"
CITYSCAPES_IMG_DIR = "leftImg8bit"
CITYSCAPES_SEG_DIR = "gtFine"
MANIFEST = "manifest.json"
# Written first into every build folder: only a folder holding it may be wiped by a rebuild.
_BUILD_MARKER = ".built-by-prepare"


def coco_annotation_file(kind: str, split: str) -> str:
    """Relative path of one annotation file, e.g. ('instances', 'val2017')."""
    return f"annotations/{kind}_{split}.json"


def coco_layout(annotation_kinds: Sequence[str]) -> list[str]:
    """Relative paths of a COCO-2017 root (folders end with '/'), e.g. kinds ('instances',)."""
    files = [coco_annotation_file(kind, split) for kind in annotation_kinds for split in COCO_SPLITS]
    return files + [f"{split}/" for split in COCO_SPLITS]


def missing_paths(root: Path, expected: Sequence[str]) -> list[str]:
    """The entries of `expected` (relative paths; folders end with '/') absent under `root`."""
    return [rel for rel in expected if not ((root / rel).is_dir() if rel.endswith("/") else (root / rel).is_file())]


def check_layout(root: Path, expected: Sequence[str], what: str) -> None:
    """Raise a UserError listing the whole expected layout when any entry of it is missing."""
    missing = missing_paths(root, expected)
    if missing:
        layout = "\n  ".join(str(root / rel) for rel in expected)
        raise UserError(
            f"{what} at {root} lacks {', '.join(missing)}. Point it to a folder with this layout:\n  {layout}"
        )


def load_coco_json(path: Path) -> dict[str, Any]:
    """Read a COCO annotation file, checking the top-level keys every consumer relies on."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read COCO annotation file {path} ({err}); restore it from the dataset.") from None
    required = {"images", "annotations", "categories"}
    if not isinstance(data, dict) or not required <= data.keys():
        raise UserError(f"{path} is not a COCO annotation file (needs keys {sorted(required)}); restore it.")
    return data


def start_build(out: Path) -> None:
    """Empty `out` for a clean rebuild, refusing to wipe a folder that `python -m prepare` did not make."""
    if out.exists():
        if not out.is_dir() or (any(out.iterdir()) and not (out / _BUILD_MARKER).is_file()):
            raise UserError(
                f"{out} exists and was not made by `python -m prepare`; pass a new or empty output folder."
            )
        shutil.rmtree(out)  # symlinks inside are removed, never followed
    write_text(out / _BUILD_MARKER, "Made by `python -m prepare`; rebuilt from scratch on every run.\n")


def link(target: Path, dest: Path) -> None:
    """Make `dest` an absolute symlink to the real file behind `target`, atomically."""
    with atomic_path(dest) as tmp:
        tmp.unlink()
        tmp.symlink_to(target.resolve())


def copy_file(source: Path, dest: Path) -> None:
    with atomic_path(dest) as tmp:
        shutil.copyfile(source, tmp)


def list_summary(names: Iterable[str]) -> dict[str, Any]:
    """Count and sha256 of a sorted name list: a cheap fingerprint that changes with the split's content."""
    ordered = sorted(names)
    return {"images": len(ordered), "sha256": hashlib.sha256("\n".join(ordered).encode()).hexdigest()}
