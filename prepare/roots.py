"""Checks that an external dataset root (a real COCO/VOC install) is where the config says."""

from __future__ import annotations

from pathlib import Path

from core.errors import UserError

# The official layout each pipeline stage reads, shown to the user when a root is missing.
EXPECTED_LAYOUT = {
    "coco": "train2017/*.jpg, val2017/*.jpg, annotations/{instances,person_keypoints}_{train,val}2017.json",
    "voc": "VOC2007/{JPEGImages,Annotations,ImageSets/Main}, VOC2012/{JPEGImages,Annotations,ImageSets/Main,"
    "ImageSets/Segmentation,SegmentationClass} (+ SBD's SegmentationClassAug and ImageSets/Segmentation/aug.txt "
    "when finetune.voc_segmentation.train_aug is true, as mmseg's voc_aug.py converter writes them)",
    "openimages": "train/<ImageID>.jpg, train-annotations-bbox.csv, class-descriptions-boxable.csv",
    "bsds500": "data/images/{train,val,test}/*.jpg, data/groundTruth/{train,val,test}/*.mat",
    "tinyimagenet": "wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG, val/val_annotations.txt",
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
BUILDABLE = frozenset({"coco", "voc", "openimages", "bsds500", "tinyimagenet", "cityscapes", "davis"})


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
