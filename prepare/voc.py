"""`python -m prepare voc`: PASCAL VOC 2007/2012 folders converted from a COCO-2017 root.

Keeps the COCO images with at least one non-crowd instance of the 20 VOC classes (COCO names
mapped as in prepare.taxonomy); the VOC image id is the COCO file stem. Layout of OUT (a VOCdevkit):

    VOC2007/JPEGImages/<id>.jpg (symlinks), Annotations/<id>.xml,
            ImageSets/Main/{trainval,train,val,test}.txt and <class>_<split>.txt
    VOC2012/JPEGImages, Annotations, SegmentationClass/<id>.png,
            ImageSets/Main/{trainval,train,val}.txt and <class>_<split>.txt,
            ImageSets/Segmentation/{train,val,trainval}.txt
    manifest.json   (written last: the Snakemake output)

Splits, with no image in two of {trainval07, trainval12, test07}: COCO train2017 images sorted by
id, even positions -> VOC2007 trainval, odd -> VOC2012 trainval (so trainval07+12 is all of COCO
train); COCO val2017 -> VOC2007 test. train/val of a trainval set: its even/odd positions.
Segmentation (VOC2012): train = all COCO train images, val = all COCO val images; VOC2012
JPEGImages/Annotations therefore hold both.

Boxes: COCO [x, y, w, h] is continuous (pixel i spans [i, i+1)); VOC stores 1-based inclusive
pixel indices. xmin = round(x) + 1, ymin = round(y) + 1, xmax = round(x + w), ymax = round(y + h),
with round = half up, clamped to [1, width] / [1, height] and xmax >= xmin. Detectron2's VOC loader
subtracts 1 from xmin/ymin, so it reads back [round(x), round(y), round(x + w), round(y + h)].
Crowd instances become objects with difficult = 1 (VOC's "ignore in evaluation").

SegmentationClass PNGs are 'P' mode with the official VOC colour map: value = class index 1..20,
0 background (including non-VOC COCO objects), 255 void = crowd regions. Instances are painted
largest area first, so small objects stay on top. Not produced: SegmentationObject (instance
PNGs) and the 5-pixel void border VOC draws around each object.
"""

from __future__ import annotations

import argparse
import math
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from core.errors import UserError
from core.io import atomic_path, write_json, write_text
from core.provenance import git_commit
from prepare.layouts import (
    COCO_SPLITS,
    MANIFEST,
    check_layout,
    coco_annotation_file,
    coco_layout,
    link,
    list_summary,
    load_coco_json,
    start_build,
)
from prepare.taxonomy import COCO_CATEGORIES, VOC_CLASSES, VOC_NAME_BY_COCO_ID

VOID = 255
_MIN_SET_SIZE = 2


def voc_palette() -> list[int]:
    """The official VOC colour map (VOCdevkit's labelcolormap): index bits spread over R, G, B, high bit first."""
    palette: list[int] = []
    for index in range(256):
        rgb = [0, 0, 0]
        for bit in range(8):
            for channel in range(3):
                rgb[channel] |= ((index >> (3 * bit + channel)) & 1) << (7 - bit)
        palette += rgb
    return palette


@dataclass(frozen=True)
class _Image:
    id: str  # COCO file stem
    path: Path  # the COCO image
    source: str  # "<split>/<file_name>", recorded in the XML
    width: int
    height: int
    objects: tuple[dict[str, Any], ...]  # its VOC-class COCO annotations, crowd ones included


def _load_split(coco_root: Path, split: str) -> list[_Image]:
    """The split's images with a non-crowd VOC-class instance, sorted by COCO image id."""
    json_path = coco_root / coco_annotation_file("instances", split)
    data = load_coco_json(json_path)
    # The mapping relies on the official COCO ids: refuse a file that numbers categories differently.
    names = {cat["id"]: cat["name"] for cat in data["categories"]}
    official = {cat["id"]: cat["name"] for cat in COCO_CATEGORIES}
    wrong = [f"{cid}={names.get(cid)!r}" for cid in VOC_NAME_BY_COCO_ID if names.get(cid) != official[cid]]
    if wrong:
        raise UserError(f"{json_path} does not use the official COCO category ids ({', '.join(wrong)}); "
                        "use the official COCO-2017 annotation files.")
    objects: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ann in data["annotations"]:
        if ann["category_id"] in VOC_NAME_BY_COCO_ID:
            objects[ann["image_id"]].append(ann)
    images = []
    for record in sorted(data["images"], key=lambda r: r["id"]):
        anns = objects.get(record["id"], [])
        if all(ann["iscrowd"] for ann in anns):
            continue
        path = coco_root / split / record["file_name"]
        if not path.is_file():
            raise UserError(f"{path}, listed in {json_path}, is missing; rebuild the COCO root.")
        images.append(_Image(path.stem, path, f"{split}/{record['file_name']}", record["width"], record["height"],
                             tuple(anns)))
    return images


def _round_half_up(value: float) -> int:
    return math.floor(value + 0.5)


def voc_box(bbox: list[float], width: int, height: int) -> tuple[int, int, int, int]:
    """COCO [x, y, w, h] -> VOC (xmin, ymin, xmax, ymax), 1-based inclusive (rule in the module docstring)."""
    x, y, w, h = bbox
    xmin = min(max(_round_half_up(x) + 1, 1), width)
    ymin = min(max(_round_half_up(y) + 1, 1), height)
    return xmin, ymin, min(max(_round_half_up(x + w), xmin), width), min(max(_round_half_up(y + h), ymin), height)


def _voc_name(ann: dict[str, Any]) -> str:
    return VOC_NAME_BY_COCO_ID[ann["category_id"]]


def _annotation_xml(image: _Image, folder: str, segmented: bool) -> ET.ElementTree:
    def add(parent: ET.Element, tag: str, text: object = None) -> ET.Element:
        element = ET.SubElement(parent, tag)
        if text is not None:
            element.text = str(text)
        return element

    root = ET.Element("annotation")
    add(root, "folder", folder)
    add(root, "filename", f"{image.id}.jpg")
    source = add(root, "source")
    add(source, "database", "COCO 2017")
    add(source, "annotation", "COCO 2017 instances, converted to VOC by densebench")
    add(source, "image", image.source)
    size = add(root, "size")
    for tag, value in (("width", image.width), ("height", image.height), ("depth", 3)):
        add(size, tag, value)
    add(root, "segmented", int(segmented))
    for ann in image.objects:
        obj = add(root, "object")
        add(obj, "name", _voc_name(ann))
        add(obj, "pose", "Unspecified")
        add(obj, "truncated", 0)
        add(obj, "difficult", int(bool(ann["iscrowd"])))
        box = add(obj, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), voc_box(ann["bbox"], image.width, image.height),
                              strict=True):
            add(box, tag, value)
    ET.indent(root, space="\t")
    return ET.ElementTree(root)


def instance_mask(ann: dict[str, Any], height: int, width: int) -> np.ndarray:
    """Decode a COCO segmentation (polygons, uncompressed or compressed RLE) to an HxW bool mask."""
    segm = ann["segmentation"]
    if isinstance(segm, list):
        polygons = [p for p in segm if len(p) >= 6]  # pieces under 3 points are dropped, as Detectron2 does
        if not polygons:
            return np.zeros((height, width), bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segm["counts"], list):  # uncompressed RLE: COCO's crowd regions
        rle = mask_utils.frPyObjects(segm, height, width)
    else:
        rle = segm
    return mask_utils.decode(rle).astype(bool)


def _class_map(image: _Image) -> np.ndarray:
    label = np.zeros((image.height, image.width), np.uint8)
    for ann in sorted(image.objects, key=lambda a: a["area"], reverse=True):
        value = VOID if ann["iscrowd"] else VOC_CLASSES.index(_voc_name(ann)) + 1
        label[instance_mask(ann, image.height, image.width)] = value
    return label


def _class_label(image: _Image, voc_name: str) -> int:
    """VOC per-class list flag: 1 present, 0 only as difficult (crowd), -1 absent."""
    crowd_flags = [ann["iscrowd"] for ann in image.objects if _voc_name(ann) == voc_name]
    if not crowd_flags:
        return -1
    return 0 if all(crowd_flags) else 1


def _write_image(image: _Image, year_dir: Path, segmented: bool, palette: list[int]) -> None:
    link(image.path, year_dir / "JPEGImages" / f"{image.id}.jpg")
    with atomic_path(year_dir / "Annotations" / f"{image.id}.xml") as tmp:
        _annotation_xml(image, year_dir.name, segmented).write(tmp, encoding="utf-8")  # no XML declaration, as VOC
    if segmented:
        png = Image.fromarray(_class_map(image))
        png.putpalette(palette)  # makes it a 'P' image whose pixel values are the class indices
        with atomic_path(year_dir / "SegmentationClass" / f"{image.id}.png") as tmp:
            png.save(tmp, format="PNG")


def _write_image_set(list_dir: Path, split: str, images: list[_Image], per_class: bool) -> None:
    write_text(list_dir / f"{split}.txt", "".join(f"{image.id}\n" for image in images))
    if per_class:  # official format: "<id> <flag>" with the flag right-aligned in 2 characters
        for name in VOC_CLASSES:
            lines = "".join(f"{image.id} {_class_label(image, name):2d}\n" for image in images)
            write_text(list_dir / f"{name}_{split}.txt", lines)


def build_voc(coco_root: Path, out: Path) -> dict[str, Any]:
    """Build OUT (see the module docstring) from `coco_root` and return its manifest."""
    check_layout(coco_root, coco_layout(("instances",)), "COCO root")
    train, val = (_load_split(coco_root, split) for split in COCO_SPLITS)
    ids = [image.id for image in train + val]
    if len(set(ids)) != len(ids):
        raise UserError(f"{coco_root}: train2017 and val2017 share image file names; VOC ids must be unique.")
    trainval07, trainval12 = train[0::2], train[1::2]
    # (year, ImageSets subfolder, split) -> images; the one source of the list files and the manifest.
    image_sets: dict[tuple[str, str, str], list[_Image]] = {
        ("VOC2007", "Main", "trainval"): trainval07,
        ("VOC2007", "Main", "train"): trainval07[0::2],
        ("VOC2007", "Main", "val"): trainval07[1::2],
        ("VOC2007", "Main", "test"): val,
        ("VOC2012", "Main", "trainval"): trainval12,
        ("VOC2012", "Main", "train"): trainval12[0::2],
        ("VOC2012", "Main", "val"): trainval12[1::2],
        ("VOC2012", "Segmentation", "train"): train,
        ("VOC2012", "Segmentation", "val"): val,
        ("VOC2012", "Segmentation", "trainval"): train + val,
    }
    # Detectron2's VOC loader reads a split with np.loadtxt, which cannot iterate a one-line file.
    too_small = ["/".join(key) for key, images in image_sets.items() if len(images) < _MIN_SET_SIZE]
    if too_small:
        raise UserError(
            f"VOC split(s) {', '.join(too_small)} would hold fewer than {_MIN_SET_SIZE} images: {coco_root} has "
            f"{len(train)} train2017 and {len(val)} val2017 images with a non-crowd instance of the VOC classes "
            f"({', '.join(VOC_CLASSES)}); at least 8 and 2 are needed."
        )
    start_build(out)
    palette = voc_palette()
    for year, images, segmented in (("VOC2007", trainval07 + val, False), ("VOC2012", train + val, True)):
        for image in images:
            _write_image(image, out / year, segmented, palette)
    for (year, kind, split), images in image_sets.items():
        _write_image_set(out / year / "ImageSets" / kind, split, images, per_class=kind == "Main")
    manifest = {
        "dataset": "voc",
        "coco_root": str(coco_root.resolve()),
        "splits": {"/".join(key): list_summary(image.id for image in images) for key, images in image_sets.items()},
        "commit": git_commit(),
    }
    write_json(out / MANIFEST, manifest)
    return manifest


def _run(args: argparse.Namespace) -> None:
    build_voc(args.coco_root, args.out)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("voc", help="convert a COCO-2017 root to PASCAL VOC 2007/2012",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--coco-root", type=Path, required=True, help="COCO-2017-layout root (real or procedural)")
    parser.add_argument("--out", type=Path, required=True, help="VOCdevkit folder to (re)build")
    parser.set_defaults(func=_run)
