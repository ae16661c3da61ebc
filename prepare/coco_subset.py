"""`python -m prepare coco-subset`: LC-loss's mini-COCO (Table 9), a random image-level subset of a COCO split.

LC-loss fine-tunes on 5 % and 10 % of COCO train2017 ("randomly sampled" images) and evaluates on the full
val2017. Ours: round(fraction x #images) images (Python's round, half to even; at least 1), drawn without
replacement by numpy.random.default_rng(seed).choice over the images in file order, kept in their original
order with exactly their annotations; categories, info and licenses are kept whole, and info records the
fraction and the seed. The output is one COCO instances JSON, written atomically.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import UserError
from core.io import write_json
from prepare.layouts import load_coco_json


def coco_subset(data: dict[str, Any], fraction: float, seed: int) -> dict[str, Any]:
    """The subset of the COCO instances dict `data` (see the module docstring)."""
    if not 0 < fraction <= 1:
        raise UserError(f"--fraction must be in (0, 1], got {fraction}; e.g. 0.05 for LC-loss's 5 % mini-COCO.")
    images = data["images"]
    if not images:
        raise UserError("the annotation file lists no image; pass a COCO instances file such as instances_train2017.")
    count = max(1, round(fraction * len(images)))
    picked = np.sort(np.random.default_rng(seed).choice(len(images), size=count, replace=False))
    kept_images = [images[i] for i in picked]
    kept_ids = {image["id"] for image in kept_images}
    info = {**data.get("info", {}), "subset": f"random {count} of {len(images)} images", "fraction": fraction,
            "seed": seed}
    return {
        "info": info,
        "licenses": data.get("licenses", []),
        "images": kept_images,
        "annotations": [ann for ann in data["annotations"] if ann["image_id"] in kept_ids],
        "categories": data["categories"],
    }


def _run(args: argparse.Namespace) -> None:
    subset = coco_subset(load_coco_json(args.annotations), args.fraction, args.seed)
    write_json(args.out, subset)
    print(f"{len(subset['images'])} images, {len(subset['annotations'])} annotations written to {args.out}")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("coco-subset", help="random image-level subset of a COCO split (mini-COCO)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--annotations", type=Path, required=True, help="COCO instances JSON, e.g. train2017's")
    parser.add_argument("--fraction", type=float, required=True, help="share of the images to keep, in (0, 1]")
    parser.add_argument("--seed", type=int, default=0, help="seed of the image draw")
    parser.add_argument("--out", type=Path, required=True, help="instances JSON to write")
    parser.set_defaults(func=_run)
