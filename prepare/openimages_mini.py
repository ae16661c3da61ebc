"""`python -m prepare openimages-mini`: the OpenImage-MINI subset of OpenImages (D3SSL, Sec. 5.1, Table 2).

The paper keeps an OpenImages image when (1) at least one of its objects is of a class shared with COCO
and (2) for every shared class the number of selected objects stays <= that class's count in COCO
train2017. Its selection order is not published; ours, deterministic for a seed:

    images = the distinct ImageIDs of --boxes, sorted; visited in numpy.random.default_rng(seed).permutation
    order. An image is taken iff it has >= 1 box of a shared class and adding all its shared-class boxes
    keeps every shared class's running count <= its cap; a rejected image changes nothing, so a later,
    smaller image may still fill the remaining room (greedy, one pass).

Conventions: a shared class is an OpenImages /m/ id that --mapping gives to a COCO class (75 of the 80);
its cap is the number of --coco-annotations annotations of that COCO class, crowd ones included. Every box
counts as one object, group-of boxes (IsGroupOf=1) included, as a COCO crowd annotation does. Classes not
in the mapping are uncapped, and OpenImages' hierarchy is not expanded: "Man" or "Woman" boxes are not
"Person" (/m/01g317) boxes. Table 2 statistics (stats.json, for the subset and for the COCO reference):
images; objects per image = boxes / images; categories per image = mean over images of the number of
distinct classes in the image; categories = distinct classes with >= 1 object. Means are over all images
of the set (COCO's images without annotations count as 0).

Outputs in --out-dir, each written atomically: image_ids.txt (selected ImageIDs, sorted),
instances_openimages_mini.json (COCO format; width/height and pixel "bbox" only with --images-dir, every
annotation keeps "bbox_normalized" = [x, y, w, h] as fractions of the image size; group-of boxes have
iscrowd=1; categories are the OpenImages classes present, with their /m/ id in "mid"), stats.json.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from core.errors import UserError
from core.io import atomic_path, write_json, write_text
from core.provenance import provenance
from prepare.layouts import load_coco_json
from prepare.openimages import (
    COORDINATES,
    check_box_header,
    coco_category_mids,
    read_boxes,
    read_class_descriptions,
    read_coco_mapping,
)

ORDER = "ImageIDs sorted, then visited in numpy.random.default_rng(seed).permutation order; greedy, one pass"
GROUP_OF = "each box is one object, group-of boxes (IsGroupOf=1) included"
_BOX_READ = ("ImageID", "LabelName", *COORDINATES, "IsGroupOf")


@dataclass(frozen=True)
class Selection:
    """The outcome of the greedy selection over the images of a box table."""

    selected: np.ndarray  # bool per image (image i = the i-th ImageID category)
    counts: np.ndarray  # selected objects per shared class, aligned with the caps
    without_shared_class: int  # images failing criterion (1)
    over_cap: int  # images meeting (1) but rejected by (2)


def select_images(box_images: np.ndarray, box_classes: np.ndarray, n_images: int, caps: np.ndarray, seed: int
                  ) -> Selection:
    """Greedy OpenImage-MINI selection (see the module docstring) over images 0..n_images-1.

    box_images: image index of every box; box_classes: shared-class index of every box, -1 for a class not
    shared with COCO; caps: COCO's count of each shared class.
    """
    shared = box_classes >= 0
    # Per-image sparse counts of shared classes: rows indptr[i]:indptr[i + 1] of (classes, counts) are image i's.
    keys, counts = np.unique(box_images[shared].astype(np.int64) * len(caps) + box_classes[shared],
                             return_counts=True)
    classes = keys % len(caps)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(keys // len(caps), minlength=n_images))])
    running = np.zeros(len(caps), np.int64)
    selected = np.zeros(n_images, bool)
    without_shared_class = 0
    for image in tqdm(np.random.default_rng(seed).permutation(n_images), desc="select", unit=" images",
                      unit_scale=True, dynamic_ncols=True, mininterval=1.0):
        start, end = indptr[image], indptr[image + 1]
        if start == end:
            without_shared_class += 1
            continue
        cls = classes[start:end]
        after = running[cls] + counts[start:end]
        if np.all(after <= caps[cls]):
            running[cls] = after
            selected[image] = True
    return Selection(selected, running, without_shared_class, n_images - without_shared_class - int(selected.sum()))


def table2_stats(box_images: np.ndarray, box_classes: np.ndarray, n_images: int) -> dict[str, Any]:
    """Table 2's statistics of a set of `n_images` images holding boxes (image index, class index)."""
    pairs = np.unique(box_images.astype(np.int64) * (int(box_classes.max(initial=0)) + 1) + box_classes)
    return {
        "images": n_images,
        "objects": len(box_images),
        "objects_per_image": len(box_images) / n_images,
        "categories_per_image": len(pairs) / n_images,
        "categories": len(np.unique(box_classes)),
    }


def _coco_reference(path: Path, mapping: pd.DataFrame) -> tuple[dict[str, Any], dict[str, int]]:
    """COCO's Table 2 statistics and each shared class's cap (mid -> number of COCO annotations)."""
    data = load_coco_json(path)
    if not data["images"]:
        raise UserError(f"{path} lists no image; pass COCO's instances_train2017.json.")
    anns = pd.DataFrame(data["annotations"], columns=["image_id", "category_id"])
    image_index = {image["id"]: i for i, image in enumerate(data["images"])}
    stats = table2_stats(anns["image_id"].map(image_index).to_numpy(), anns["category_id"].to_numpy(),
                         len(data["images"]))
    per_category = anns["category_id"].value_counts()
    mids = coco_category_mids(mapping, data["categories"])
    if not mids:
        raise UserError("the COCO<->OpenImages mapping gives no COCO class an /m/ id; pass the joined mapping CSV.")
    return stats, {mid: int(per_category.get(cat_id, 0)) for cat_id, mid in mids.items()}


def _image_sizes(images_dir: Path, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Width and height of each <ImageID>.jpg, read from the file header."""
    sizes = np.zeros((2, len(ids)), np.int64)
    for i, iid in enumerate(tqdm(ids, desc="image sizes", unit=" images", dynamic_ncols=True, mininterval=1.0)):
        path = images_dir / f"{iid}.jpg"
        try:
            with Image.open(path) as image:
                sizes[:, i] = image.size
        except FileNotFoundError:
            raise UserError(f"{path} not found: --images-dir must hold every selected <ImageID>.jpg.") from None
        except (UnidentifiedImageError, OSError) as err:
            raise UserError(f"corrupt image: {path} ({err}); replace it or drop --images-dir.") from None
    return sizes[0], sizes[1]


def _coco_json(boxes: pd.DataFrame, ids: list[str], classes: pd.DataFrame, shared_names: dict[str, str],
               images_dir: Path | None, seed: int) -> dict[str, Any]:
    """The selected boxes (`boxes`, grouped by image) in COCO format; image and category ids count from 1 in
    sorted ImageID / LabelName order."""
    labels = sorted(boxes["LabelName"].unique())
    names = classes.drop_duplicates("LabelName").set_index("LabelName")["DisplayName"]
    unknown = sorted(set(labels) - set(names.index))
    if unknown:
        raise UserError(f"box labels {', '.join(unknown[:5])} are missing from the class descriptions; pass the "
                        "class-descriptions-boxable.csv of the same OpenImages release.")
    image_of = pd.Series(np.arange(len(ids)), index=ids)[boxes["ImageID"].to_numpy()].to_numpy()
    label_of = pd.Series(np.arange(len(labels)), index=labels)[boxes["LabelName"].to_numpy()].to_numpy()
    x, y = boxes["XMin"].to_numpy(), boxes["YMin"].to_numpy()
    w, h = boxes["XMax"].to_numpy() - x, boxes["YMax"].to_numpy() - y
    columns = ((image_of + 1).tolist(), (label_of + 1).tolist(), boxes["IsGroupOf"].tolist(),
               np.stack([x, y, w, h], axis=1).tolist())  # Python numbers in bulk: fast for 1M+ boxes
    annotations = [{"id": i, "image_id": img, "category_id": lab, "iscrowd": crowd, "bbox_normalized": box}
                   for i, (img, lab, crowd, box) in enumerate(zip(*columns, strict=True), start=1)]
    images = [{"id": i + 1, "file_name": f"{iid}.jpg"} for i, iid in enumerate(ids)]
    note = "no --images-dir: width/height and pixel bbox omitted; bbox_normalized is [x, y, w, h] / image size"
    if images_dir is not None:
        widths, heights = _image_sizes(images_dir, ids)
        for image, width, height in zip(images, widths, heights, strict=True):
            image.update(width=int(width), height=int(height))
        pixels = np.round(np.stack([x * widths[image_of], y * heights[image_of], w * widths[image_of],
                                    h * heights[image_of]], axis=1), 2)
        areas = np.round(pixels[:, 2] * pixels[:, 3], 2)
        for ann, box, area in zip(annotations, pixels.tolist(), areas.tolist(), strict=True):
            ann.update(bbox=box, area=area)
        note = "bbox in pixels from the image sizes; bbox_normalized is [x, y, w, h] / image size"
    categories = [{"id": i + 1, "name": names[mid], "mid": mid, "coco_name": shared_names.get(mid)}
                  for i, mid in enumerate(labels)]
    info = {"description": "OpenImage-MINI (D3SSL Sec. 5.1) built by `python -m prepare openimages-mini`",
            "selection_order": ORDER, "seed": seed, "note": note}
    return {"info": info, "licenses": [], "images": images, "annotations": annotations, "categories": categories}


def build_openimages_mini(boxes_csv: Path, classes_csv: Path, mapping_csv: Path, coco_annotations: Path,
                          seed: int, out_dir: Path, images_dir: Path | None = None) -> dict[str, Any]:
    """Select OpenImage-MINI from `boxes_csv`, write the three outputs to `out_dir`, return stats.json's content."""
    check_box_header(boxes_csv, _BOX_READ)
    classes = read_class_descriptions(classes_csv)
    mapping = read_coco_mapping(mapping_csv)
    coco_stats, caps = _coco_reference(coco_annotations, mapping)
    boxes = read_boxes(boxes_csv, _BOX_READ)
    if boxes.empty:
        raise UserError(f"{boxes_csv} holds no box; pass OpenImages' train-annotations-bbox.csv.")
    shared = list(caps)  # mapping (COCO id) order
    label_to_shared = pd.Series(np.arange(len(shared)), index=shared).reindex(
        boxes["LabelName"].cat.categories, fill_value=-1).to_numpy()
    box_images = boxes["ImageID"].cat.codes.to_numpy()
    box_classes = label_to_shared[boxes["LabelName"].cat.codes.to_numpy()]
    n_images = len(boxes["ImageID"].cat.categories)
    selection = select_images(box_images, box_classes, n_images, np.array([caps[mid] for mid in shared]), seed)
    if not selection.selected.any():
        raise UserError(f"no image of {boxes_csv} has a box of a COCO class within COCO's counts; check that "
                        f"{mapping_csv}'s /m/ ids appear in the boxes' LabelName column.")
    keep = selection.selected[box_images]
    kept = boxes[keep].sort_values("ImageID", kind="stable")  # categories are sorted: annotations by image
    ids = list(boxes["ImageID"].cat.categories[selection.selected])
    subset_stats = table2_stats(box_images[keep], boxes["LabelName"].cat.codes.to_numpy()[keep], len(ids))
    coco_names = dict(zip(mapping["oid_label_mid"], mapping["coco_name"], strict=True))
    stats = {
        "openimage_mini": subset_stats,
        "coco": {**coco_stats, "annotations": str(coco_annotations)},
        "selection": {
            "order": ORDER, "seed": seed, "objects": GROUP_OF,
            "candidate_images": len(selection.selected),
            "rejected_without_coco_class": selection.without_shared_class,
            "rejected_over_cap": selection.over_cap,
        },
        "shared_classes": [{"mid": mid, "coco_name": coco_names[mid], "selected": int(count), "cap": caps[mid]}
                           for mid, count in zip(shared, selection.counts, strict=True)],
        "inputs": {"boxes": str(boxes_csv), "classes": str(classes_csv), "mapping": str(mapping_csv),
                   "images_dir": str(images_dir) if images_dir else None},
        "provenance": provenance({"boxes": str(boxes_csv), "coco_annotations": str(coco_annotations)}, seed),
    }
    write_text(out_dir / "image_ids.txt", "".join(f"{iid}\n" for iid in ids))
    instances = _coco_json(kept, ids, classes, coco_names, images_dir, seed)
    with atomic_path(out_dir / "instances_openimages_mini.json") as tmp:  # compact, as COCO's own files
        tmp.write_text(json.dumps(instances, separators=(",", ":")))
    write_json(out_dir / "stats.json", stats)
    return stats


def _run(args: argparse.Namespace) -> None:
    stats = build_openimages_mini(args.boxes, args.classes, args.mapping, args.coco_annotations, args.seed,
                                  args.out_dir, args.images_dir)
    for name in ("openimage_mini", "coco"):
        row = stats[name]
        print(f"{name}: {row['images']} images, {row['objects_per_image']:.2f} obj/img, "
              f"{row['categories_per_image']:.2f} cat/img, {row['categories']} categories")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("openimages-mini", help="select OpenImage-MINI (COCO-capped OpenImages subset)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--boxes", type=Path, required=True, help="OpenImages train-annotations-bbox.csv")
    parser.add_argument("--classes", type=Path, required=True, help="OpenImages class-descriptions-boxable.csv")
    parser.add_argument("--mapping", type=Path, required=True, help="coco80_to_openimages_joined.csv")
    parser.add_argument("--coco-annotations", type=Path, required=True,
                        help="COCO instances_train2017.json: the per-class caps and the reference statistics")
    parser.add_argument("--seed", type=int, default=0, help="seed of the image visiting order")
    parser.add_argument("--out-dir", type=Path, required=True, help="folder for the three outputs")
    parser.add_argument("--images-dir", type=Path, default=None,
                        help="folder of <ImageID>.jpg: adds width/height and pixel boxes to the COCO JSON")
    parser.set_defaults(func=_run)
