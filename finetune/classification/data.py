"""Labelled image sets in the two layouts the classification protocols read.

    tinyimagenet: wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG + val/val_annotations.txt
    imagefolder:  <split>/<class>/<image> (torchvision ImageFolder; STL-10 as its stl10_input.py writes
                  it: train/<class>/*.png, test/<class>/*.png; a few-shot set may be the root itself)

Images are listed in sorted order, so a subset (`limit`) and every index are the same on every run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.errors import UserError
from prepare.roots import EXPECTED_LAYOUT

LAYOUTS = ("tinyimagenet", "imagefolder")
# torchvision.datasets.folder.IMG_EXTENSIONS
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"})
IMAGEFOLDER_LAYOUT = "<split>/<class>/<image>.{png,jpg,...}, one folder per class (torchvision ImageFolder)"
# The splits linear evaluation trains and tests on, per layout (Tiny-ImageNet's test labels are not public).
TRAIN_TEST = {"tinyimagenet": ("train", "val"), "imagefolder": ("train", "test")}


@dataclass(frozen=True)
class LabelledImages:
    """Image paths with class indices into `classes`."""

    paths: tuple[Path, ...]
    labels: tuple[int, ...]
    classes: tuple[str, ...]

    def by_class(self) -> list[list[int]]:
        """The image indices of each class, in `classes` order (empty lists for absent classes)."""
        groups: list[list[int]] = [[] for _ in self.classes]
        for index, label in enumerate(self.labels):
            groups[label].append(index)
        return groups

    def limit(self, per_class: int | None) -> LabelledImages:
        """The first `per_class` images of each class (all with None)."""
        if per_class is None:
            return self
        keep = sorted(i for group in self.by_class() for i in group[:per_class])
        return LabelledImages(tuple(self.paths[i] for i in keep), tuple(self.labels[i] for i in keep), self.classes)


def _layout_error(root: Path, layout: str, problem: str) -> UserError:
    expected = EXPECTED_LAYOUT["tinyimagenet"] if layout == "tinyimagenet" else IMAGEFOLDER_LAYOUT
    return UserError(f"{root} is not a {layout} dataset root: {problem}. Expected {expected}; fix --data-root "
                     "(or --layout).")


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _tinyimagenet(root: Path, split: str) -> LabelledImages:
    wnids_file = root / "wnids.txt"
    if not wnids_file.is_file():
        raise _layout_error(root, "tinyimagenet", "no wnids.txt")
    classes = tuple(wnids_file.read_text().split())
    if split == "train":
        pairs = []
        for label, wnid in enumerate(classes):
            folder = root / "train" / wnid / "images"
            if not folder.is_dir():
                raise _layout_error(root, "tinyimagenet", f"no folder train/{wnid}/images for a class of wnids.txt")
            pairs += [(path, label) for path in _images(folder)]
    elif split == "val":
        annotations = root / "val" / "val_annotations.txt"
        if not annotations.is_file():
            raise _layout_error(root, "tinyimagenet", "no val/val_annotations.txt")
        index = {wnid: label for label, wnid in enumerate(classes)}
        rows = [line.split("\t")[:2] for line in annotations.read_text().splitlines() if line.strip()]
        if unknown := sorted({wnid for _, wnid in rows if wnid not in index}):
            raise _layout_error(root, "tinyimagenet", f"val_annotations.txt names classes {unknown[:5]} "
                                "missing from wnids.txt")
        pairs = sorted((root / "val" / "images" / name, index[wnid]) for name, wnid in rows)
    else:
        raise UserError(f"Tiny-ImageNet has the splits train and val, not {split!r}; fix the protocol's split.")
    return LabelledImages(tuple(p for p, _ in pairs), tuple(label for _, label in pairs), classes)


def _imagefolder(root: Path, split: str) -> LabelledImages:
    folder = root / split
    if not folder.is_dir():
        raise _layout_error(root, "imagefolder", f"no folder {split!r}")
    classes = tuple(sorted(d.name for d in folder.iterdir() if d.is_dir()))
    pairs = [(path, label) for label, name in enumerate(classes) for path in _images(folder / name)]
    return LabelledImages(tuple(p for p, _ in pairs), tuple(label for _, label in pairs), classes)


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise UserError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}.")


def read_split(root: Path, layout: str, split: str) -> LabelledImages:
    """The labelled images of one split ('.' for an imagefolder root that holds the class folders);
    UserError for a missing root, a foreign layout or a split without images."""
    _check_layout(layout)
    if not root.is_dir():
        raise _layout_error(root, layout, "the folder does not exist")
    images = _tinyimagenet(root, split) if layout == "tinyimagenet" else _imagefolder(root, split)
    if not images.paths:
        raise _layout_error(root, layout, f"split {split!r} holds no images")
    return images


def read_train_test(root: Path, layout: str) -> tuple[LabelledImages, LabelledImages]:
    """Linear evaluation's train and test sets, with the test labels indexing the train classes."""
    _check_layout(layout)
    train_split, test_split = TRAIN_TEST[layout]
    train = read_split(root, layout, train_split)
    test = read_split(root, layout, test_split)
    if unknown := sorted(set(test.classes) - set(train.classes)):
        raise _layout_error(root, layout, f"{test_split}/ has classes {unknown[:5]} that {train_split}/ lacks")
    if empty := [name for name, group in zip(train.classes, train.by_class(), strict=True) if not group]:
        raise _layout_error(root, layout, f"classes {empty[:5]} have no {train_split} images")
    index = {name: label for label, name in enumerate(train.classes)}
    labels = tuple(index[test.classes[label]] for label in test.labels)
    return train, LabelledImages(test.paths, labels, train.classes)
