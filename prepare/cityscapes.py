"""`python -m prepare cityscapes`: a small set in the official Cityscapes layout, from a COCO-2017 root.

Real COCO photos and instance masks stand in for street scenes, so the Cityscapes protocols run
end to end without the (licensed, 11 GB) dataset. Layout of OUT, read unchanged by mmseg's
`CityscapesDataset` (suffixes `_leftImg8bit.png` / `_gtFine_labelTrainIds.png`):

    leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png       the COCO photo as RGB PNG
    gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png   8-bit trainIds, 255 ignore
                              <city>_<seq>_<frame>_gtFine_labelIds.png        8-bit label ids, 0 'unlabeled'
                              <city>_<seq>_<frame>_gtFine_instanceIds.png     16-bit, see below
    manifest.json   (written last: the Snakemake output)

Cities and names: COCO train2017 -> train, val2017 -> val. Each split's kept images, by COCO id,
are dealt in turn to its cities (train: TRAIN_CITIES, val: VAL_CITIES); <seq> is the image's
position within its city and <frame> its COCO image id, both 6 digits as in Cityscapes
(e.g. cocotraina_000003_000139), so every file traces back to its COCO image.

Classes (COCO -> Cityscapes trainId / label id of cityscapesscripts' helpers/labels.py): see CLASS_MAP.
COCO annotates no road, building, sky..., so every other pixel, background and other COCO classes
alike, is 255 ignore (label id 0 'unlabeled'), not a class. A COCO person is always 'person': riders
(trainId 12) cannot be told apart. Crowd regions keep their class, as Cityscapes' "group" polygons
(e.g. 'cargroup') do, without an instance id. Instances are painted largest first, so small objects
stay on top. An image is kept when at least one pixel has a mapped class.

instanceIds follow Cityscapes' json2instanceImg: for classes with instances (person ... bicycle),
label id * 1000 + the instance's index within its class in the image (from 0); elsewhere the label id.

Not produced: _gtFine_polygons.json (COCO crowd masks are RLE, and cityscapesscripts would re-render
the label images from lossy polygons), _gtFine_color.png, rightImg8bit and the test split.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core.errors import UserError
from core.io import atomic_path, write_json
from core.provenance import git_commit
from prepare.layouts import (
    MANIFEST,
    check_layout,
    coco_annotation_file,
    coco_layout,
    list_summary,
    load_coco_json,
    start_build,
)
from prepare.taxonomy import COCO_ID_BY_NAME
from prepare.voc import instance_mask

# COCO category name -> (Cityscapes trainId, Cityscapes label id).
CLASS_MAP: dict[str, tuple[int, int]] = {
    "person": (11, 24),
    "bicycle": (18, 33),
    "car": (13, 26),
    "motorcycle": (17, 32),
    "bus": (15, 28),
    "train": (16, 31),
    "truck": (14, 27),
    "traffic light": (6, 19),
    "stop sign": (7, 20),  # Cityscapes 'traffic sign'
}
# Label ids with hasInstances=True in cityscapesscripts (person, rider, car, truck, bus, caravan,
# trailer, train, motorcycle, bicycle).
INSTANCE_LABEL_IDS = frozenset(range(24, 34))
IGNORE = 255  # trainId of every unlabelled pixel
UNLABELED = 0  # label id of 'unlabeled'
TRAIN_CITIES = ("cocotraina", "cocotrainb")
VAL_CITIES = ("cocoval",)
# split -> (COCO split, cities)
SPLITS: dict[str, tuple[str, tuple[str, ...]]] = {"train": ("train2017", TRAIN_CITIES), "val": ("val2017", VAL_CITIES)}
_MAX_ID = 999_999  # <frame> has 6 digits


def label_maps(anns: list[dict[str, Any]], names: dict[int, str], height: int, width: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labelTrainIds uint8, labelIds uint8, instanceIds uint16) of one image's mapped COCO annotations."""
    train_ids = np.full((height, width), IGNORE, np.uint8)
    label_ids = np.full((height, width), UNLABELED, np.uint8)
    instance_ids = np.full((height, width), UNLABELED, np.uint16)
    counts: dict[int, int] = defaultdict(int)
    for ann in sorted(anns, key=lambda a: a["area"], reverse=True):
        train_id, label_id = CLASS_MAP[names[ann["category_id"]]]
        mask = instance_mask(ann, height, width)
        train_ids[mask] = train_id
        label_ids[mask] = label_id
        if label_id in INSTANCE_LABEL_IDS and not ann["iscrowd"]:
            instance_ids[mask] = label_id * 1000 + counts[label_id]
            counts[label_id] += 1
        else:  # a class without instances, or a crowd ("group") region
            instance_ids[mask] = label_id
    return train_ids, label_ids, instance_ids


def _mapped_ids(data: dict[str, Any], json_path: Path) -> dict[int, str]:
    """COCO category id -> name for the mapped classes, refusing files that number categories differently
    (a file may lack categories: a subset without trucks still maps the rest)."""
    names = {cat["id"]: cat["name"] for cat in data["categories"]}
    wrong = [name for name in CLASS_MAP if names.get(COCO_ID_BY_NAME[name], name) != name]
    if wrong:
        raise UserError(f"{json_path} does not use the official COCO category ids for {wrong}; "
                        "use the official COCO-2017 annotation files.")
    return {COCO_ID_BY_NAME[name]: name for name in CLASS_MAP}


def _save(array: np.ndarray | Image.Image, path: Path) -> None:
    image = array if isinstance(array, Image.Image) else Image.fromarray(array)  # uint8 -> 'L', uint16 -> 'I;16'
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def _build_split(coco_root: Path, coco_split: str, cities: tuple[str, ...], out: Path, split: str) -> list[str]:
    """Write one split; return the written <city>_<seq>_<frame> names."""
    json_path = coco_root / coco_annotation_file("instances", coco_split)
    data = load_coco_json(json_path)
    names = _mapped_ids(data, json_path)
    anns: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ann in data["annotations"]:
        if ann["category_id"] in names:
            anns[ann["image_id"]].append(ann)
    written: list[str] = []
    for record in sorted(data["images"], key=lambda r: r["id"]):
        if record["id"] not in anns:
            continue
        if record["id"] > _MAX_ID:
            raise UserError(f"{json_path}: image id {record['id']} does not fit Cityscapes' 6-digit frame number.")
        height, width = record["height"], record["width"]
        train_ids, label_ids, instance_ids = label_maps(anns[record["id"]], names, height, width)
        if (train_ids == IGNORE).all():  # e.g. only degenerate polygons
            continue
        path = coco_root / coco_split / record["file_name"]
        if not path.is_file():
            raise UserError(f"{path}, listed in {json_path}, is missing; rebuild the COCO root.")
        with Image.open(path) as photo:
            rgb = photo.convert("RGB")
        if rgb.size != (width, height):
            raise UserError(f"{path} is {rgb.size[0]}x{rgb.size[1]} but {json_path} says {width}x{height}; "
                            "restore the COCO root.")
        city = cities[len(written) % len(cities)]
        stem = f"{city}_{len(written) // len(cities):06d}_{record['id']:06d}"
        _save(rgb, out / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
        for suffix, array in (("labelTrainIds", train_ids), ("labelIds", label_ids), ("instanceIds", instance_ids)):
            _save(array, out / "gtFine" / split / city / f"{stem}_gtFine_{suffix}.png")
        written.append(stem)
    if len(written) < len(cities):
        raise UserError(
            f"{coco_root / coco_split} has {len(written)} images with a mapped class ({', '.join(CLASS_MAP)}); "
            f"the Cityscapes {split} split needs at least {len(cities)} (one per city)."
        )
    return written


def build_cityscapes(coco_root: Path, out: Path) -> dict[str, Any]:
    """Build OUT (see the module docstring) from `coco_root` and return its manifest."""
    check_layout(coco_root, coco_layout(("instances",)), "COCO root")
    start_build(out)
    splits = {split: _build_split(coco_root, coco_split, cities, out, split)
              for split, (coco_split, cities) in SPLITS.items()}
    manifest = {
        "dataset": "cityscapes",
        "coco_root": str(coco_root.resolve()),
        "class_map": {name: {"trainId": ids[0], "labelId": ids[1]} for name, ids in CLASS_MAP.items()},
        "splits": {split: list_summary(stems) for split, stems in splits.items()},
        "commit": git_commit(),
    }
    write_json(out / MANIFEST, manifest)
    return manifest


def _run(args: argparse.Namespace) -> None:
    build_cityscapes(args.coco_root, args.out)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("cityscapes", help="build a small Cityscapes-layout set from a COCO-2017 root",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--coco-root", type=Path, required=True, help="COCO-2017-layout root (real or procedural)")
    parser.add_argument("--out", type=Path, required=True, help="Cityscapes folder to (re)build")
    parser.set_defaults(func=_run)
