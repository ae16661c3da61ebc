"""The segmentation datasets: where each expects its files, checks of a root, and mmseg dataset configs.

- "voc": mmseg's `PascalVOCDataset` on `<data-root>/VOC2012` (data-root is a VOCdevkit folder, as the
  detection protocols take it): train = ImageSets/Segmentation/train.txt, plus SBD's aug.txt with
  SegmentationClassAug (mmseg's pascal_voc12_aug.py ConcatDataset) when `train_aug`; test = val.txt.
- "cityscapes": mmseg's `CityscapesDataset` on `<data-root>` in the official layout
  (configs/_base_/datasets/cityscapes.py): leftImg8bit/{train,val}/<city>/*_leftImg8bit.png with
  gtFine/{train,val}/<city>/*_gtFine_labelTrainIds.png (cityscapesscripts' createTrainIdLabelImgs,
  run by mmseg's tools/dataset_converters/cityscapes.py; `python -m prepare cityscapes` builds a small one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.errors import UserError
from finetune.common import abbreviate
from prepare.layouts import (
    CITYSCAPES_IMG_DIR,
    CITYSCAPES_SEG_DIR,
    VOC_AUG_SEG_DIR,
    VOC_AUG_SPLIT,
    VOC_IMG_DIR,
    VOC_SEG_DIR,
    VOC_TRAIN_SPLIT,
    VOC_VAL_SPLIT,
)

NUM_CLASSES = {"voc": 21, "cityscapes": 19}  # VOC: background + 20 classes; 255 is void/ignore in both

CITYSCAPES_IMG_SUFFIX = "_leftImg8bit.png"  # mmseg CityscapesDataset's fixed suffixes
CITYSCAPES_SEG_SUFFIX = "_gtFine_labelTrainIds.png"
_CITYSCAPES_FIX = (
    "build a small one with `python -m prepare cityscapes`, or for the real dataset write the labelTrainIds "
    "files with mmseg's tools/dataset_converters/cityscapes.py (cityscapesscripts), or fix --data-root"
)


def check_root(dataset: str, data_root: Path, train_aug: bool = False) -> Path:
    """The folder the mmseg dataset reads (VOC2012 or the Cityscapes root); UserError listing what is missing."""
    return check_voc2012(data_root, train_aug) if dataset == "voc" else check_cityscapes(data_root)


def check_voc2012(voc_root: Path, train_aug: bool = False) -> Path:
    """The VOC2012 folder of the VOCdevkit `voc_root`; UserError listing what is missing."""
    voc2012 = voc_root / "VOC2012"
    expected = [voc2012 / VOC_IMG_DIR, voc2012 / VOC_SEG_DIR, voc2012 / VOC_TRAIN_SPLIT, voc2012 / VOC_VAL_SPLIT]
    if train_aug:
        expected += [voc2012 / VOC_AUG_SEG_DIR, voc2012 / VOC_AUG_SPLIT]
    if missing := [str(path) for path in expected if not path.exists()]:
        raise UserError(
            f"{voc_root} is not a VOCdevkit folder with the VOC2012 segmentation layout: missing {', '.join(missing)} "
            f"(expected {', '.join(map(str, expected))}); build it with `python -m prepare voc` or fix --data-root."
        )
    splits = [(VOC_TRAIN_SPLIT, VOC_SEG_DIR), (VOC_VAL_SPLIT, VOC_SEG_DIR)]
    if train_aug:
        splits.append((VOC_AUG_SPLIT, VOC_AUG_SEG_DIR))
    for split, seg_dir in splits:
        ids = (voc2012 / split).read_text().split()
        if not ids:
            raise UserError(f"{voc2012 / split} lists no images; rebuild the VOC root with `python -m prepare voc`.")
        absent = [
            str(path)
            for image_id in ids
            for path in (voc2012 / VOC_IMG_DIR / f"{image_id}.jpg", voc2012 / seg_dir / f"{image_id}.png")
            if not path.is_file()
        ]
        if absent:
            raise UserError(
                f"{voc2012 / split} lists images whose files are missing: {abbreviate(absent)}; "
                "rebuild the VOC root with `python -m prepare voc`."
            )
    return voc2012


def cityscapes_label(image: Path, image_dir: Path, label_dir: Path) -> Path:
    """The labelTrainIds file of a leftImg8bit image, as mmseg's CityscapesDataset pairs them."""
    relative = str(image.relative_to(image_dir))
    return label_dir / (relative[: -len(CITYSCAPES_IMG_SUFFIX)] + CITYSCAPES_SEG_SUFFIX)


def check_cityscapes(root: Path) -> Path:
    """`root` itself, after checking that train and val each hold images, all with their labelTrainIds."""
    expected = [root / folder / split for folder in (CITYSCAPES_IMG_DIR, CITYSCAPES_SEG_DIR)
                for split in ("train", "val")]
    if missing := [str(path) for path in expected if not path.is_dir()]:
        raise UserError(
            f"{root} is not a Cityscapes folder: missing {', '.join(missing)} (expected "
            f"leftImg8bit/{{train,val}}/<city>/*{CITYSCAPES_IMG_SUFFIX} and "
            f"gtFine/{{train,val}}/<city>/*{CITYSCAPES_SEG_SUFFIX}); {_CITYSCAPES_FIX}."
        )
    for split in ("train", "val"):
        image_dir, label_dir = root / CITYSCAPES_IMG_DIR / split, root / CITYSCAPES_SEG_DIR / split
        images = sorted(image_dir.rglob(f"*{CITYSCAPES_IMG_SUFFIX}"))
        if not images:
            raise UserError(f"{image_dir} holds no *{CITYSCAPES_IMG_SUFFIX} images; {_CITYSCAPES_FIX}.")
        labels = [cityscapes_label(image, image_dir, label_dir) for image in images]
        if absent := [str(label) for label in labels if not label.is_file()]:
            raise UserError(
                f"{len(absent)} {split} images have no label file: {abbreviate(absent)}; {_CITYSCAPES_FIX}."
            )
    return root


def _voc(voc2012: Path, split: str, seg_dir: str, pipeline: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(
        type="PascalVOCDataset",
        data_root=str(voc2012),
        data_prefix=dict(img_path=VOC_IMG_DIR, seg_map_path=seg_dir),
        ann_file=split,
        pipeline=pipeline,
    )


def _cityscapes(root: Path, split: str, pipeline: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(
        type="CityscapesDataset",
        data_root=str(root),
        data_prefix=dict(img_path=f"{CITYSCAPES_IMG_DIR}/{split}", seg_map_path=f"{CITYSCAPES_SEG_DIR}/{split}"),
        pipeline=pipeline,
    )


def train_dataset(dataset: str, data_dir: Path, train_aug: bool, pipeline: list[dict[str, Any]]) -> dict[str, Any]:
    """The mmseg training dataset config; `data_dir` is what `check_root` returned."""
    if dataset == "cityscapes":
        return _cityscapes(data_dir, "train", pipeline)
    train = _voc(data_dir, VOC_TRAIN_SPLIT, VOC_SEG_DIR, pipeline)
    if not train_aug:
        return train
    # mmseg's pascal_voc12_aug.py: ConcatDataset of train.txt and SBD's aug.txt.
    return dict(type="ConcatDataset", datasets=[train, _voc(data_dir, VOC_AUG_SPLIT, VOC_AUG_SEG_DIR, pipeline)])


def eval_dataset(dataset: str, data_dir: Path, pipeline: list[dict[str, Any]], images: int | None = None
                 ) -> dict[str, Any]:
    """The mmseg evaluation dataset config (VOC val.txt, Cityscapes val); `images` keeps its first N."""
    config = _cityscapes(data_dir, "val", pipeline) if dataset == "cityscapes" else _voc(
        data_dir, VOC_VAL_SPLIT, VOC_SEG_DIR, pipeline)
    return config if images is None else {**config, "indices": images}
