"""`python -m prepare tinyimagenet`: the single-object pretraining set, in the Tiny-ImageNet layout.

    OUT/wnids.txt, OUT/words.txt
    OUT/train/<wnid>/images/<wnid>_<n>.JPEG, OUT/train/<wnid>/<wnid>_boxes.txt
    OUT/val/images/val_<n>.JPEG, OUT/val/val_annotations.txt
    OUT/manifest.json   (written last: the Snakemake output)

From SOURCE_ROOT/tiny_imagenet10/tiny-imagenet-200 when it exists (the classes that have train
folders, 10 there, symlinked; wnids.txt and the validation rows restricted to them); otherwise
object-centred 64 x 64 crops of procedural scenes (prepare.procedural), one class per object kind,
so a clone without the shared data still runs the single-object sweeps.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from core.errors import UserError
from core.io import write_json, write_text
from core.provenance import provenance
from prepare import procedural
from prepare.layouts import MANIFEST, link, list_summary, start_build

SIZE = 64  # Tiny-ImageNet's image size


def _link_source(source: Path, out: Path) -> None:
    wnids = [w for w in (source / "wnids.txt").read_text().split() if (source / "train" / w).is_dir()]
    subset = source / "val" / "val_annotations_subset10.txt"
    val_rows = [row.split("\t") for row in (subset if subset.is_file() else source / "val" / "val_annotations.txt")
                .read_text().splitlines() if row.strip()]
    val_rows = [row for row in val_rows if row[1] in wnids]
    train = {wnid: sorted((source / "train" / wnid / "images").glob("*.JPEG")) for wnid in wnids}
    empty = [wnid for wnid, images in train.items() if not images]
    if not wnids or empty or not val_rows:
        raise UserError(f"{source} is not a complete Tiny-ImageNet root (no images for {empty or 'train or val'}); "
                        "expected "
                        "wnids.txt, train/<wnid>/images/*.JPEG, val/images, val/val_annotations.txt.")
    start_build(out)
    link(source / "words.txt", out / "words.txt")
    write_text(out / "wnids.txt", "".join(f"{wnid}\n" for wnid in wnids))
    for wnid, images in train.items():
        link(source / "train" / wnid / f"{wnid}_boxes.txt", out / "train" / wnid / f"{wnid}_boxes.txt")
        for image in images:
            link(image, out / "train" / wnid / "images" / image.name)
    for row in val_rows:
        link(source / "val" / "images" / row[0], out / "val" / "images" / row[0])
    write_text(out / "val" / "val_annotations.txt", "".join("\t".join(row) + "\n" for row in val_rows))


def _object_crop(rng: np.random.Generator) -> tuple[np.ndarray, str, tuple[int, int, int, int]]:
    """A 64 x 64 crop centred on a procedural scene's largest object, its class and its box in the crop."""
    pixels, objects = procedural.render(rng, 2 * SIZE)
    obj = max(objects, key=lambda o: o.visible.sum())
    ys, xs = np.nonzero(obj.visible)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    side = max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    left = int(np.clip(cx - side // 2, 0, max(0, pixels.shape[1] - side)))
    top = int(np.clip(cy - side // 2, 0, max(0, pixels.shape[0] - side)))
    crop = pixels[top : top + side, left : left + side]
    scale = SIZE / max(crop.shape[:2])
    crop = cv2.resize(crop, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    box = (int((x0 - left) * scale), int((y0 - top) * scale), int((x1 - left) * scale) - 1,
           int((y1 - top) * scale) - 1)
    return crop, obj.kind.name, box


def _generate(out: Path, seed: int, train_count: int, val_count: int) -> None:
    start_build(out)
    wnid_of = {kind.name: f"p{index:08d}" for index, kind in enumerate(procedural.KINDS)}
    boxes: dict[str, list[str]] = {wnid: [] for wnid in wnid_of.values()}
    for number in range(train_count):
        crop, name, box = _object_crop(np.random.default_rng((seed, 11, 0, number)))  # 11: apart from other streams
        wnid = wnid_of[name]
        file = f"{wnid}_{number}.JPEG"
        procedural.save_jpeg(crop, out / "train" / wnid / "images" / file)
        boxes[wnid].append("\t".join([file, *map(str, box)]))
    for wnid, rows in boxes.items():
        write_text(out / "train" / wnid / f"{wnid}_boxes.txt", "".join(row + "\n" for row in rows))
    val_rows = []
    for number in range(val_count):
        crop, name, box = _object_crop(np.random.default_rng((seed, 11, 1, number)))
        procedural.save_jpeg(crop, out / "val" / "images" / f"val_{number}.JPEG")
        val_rows.append("\t".join([f"val_{number}.JPEG", wnid_of[name], *map(str, box)]))
    write_text(out / "val" / "val_annotations.txt", "".join(row + "\n" for row in val_rows))
    write_text(out / "wnids.txt", "".join(f"{wnid}\n" for wnid in wnid_of.values()))
    write_text(out / "words.txt", "".join(f"{wnid}\t{name}\n" for name, wnid in wnid_of.items()))


def build_tinyimagenet(source_root: Path, out: Path, seed: int, train_count: int, val_count: int) -> dict[str, Any]:
    """Build OUT (see the module docstring) and return its manifest."""
    source = source_root / "tiny_imagenet10" / "tiny-imagenet-200"
    config: dict[str, Any] = {"source_root": str(source_root.resolve())}
    if source.exists():
        _link_source(source, out)
        config["source"] = "tiny_imagenet10"
    else:
        print(f"{source} not found: generating procedural object crops in the Tiny-ImageNet layout.", file=sys.stderr)
        _generate(out, seed, train_count, val_count)
        config.update(source="procedural", train=train_count, val=val_count)
    train = [p.name for p in (out / "train").glob("*/images/*.JPEG")]
    manifest = {
        "dataset": "tinyimagenet",
        "source": config["source"],
        "classes": len((out / "wnids.txt").read_text().split()),
        "splits": {"train": list_summary(train),
                   "val": list_summary(p.name for p in (out / "val" / "images").iterdir())},
        "provenance": provenance(config, seed),
    }
    write_json(out / MANIFEST, manifest)
    return manifest


def _run(args: argparse.Namespace) -> None:
    build_tinyimagenet(args.source_root, args.out, args.seed, args.procedural_train, args.procedural_val)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("tinyimagenet", help="build the Tiny-ImageNet-layout dataset", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source-root", type=Path, required=True,
                        help="folder holding tiny_imagenet10/tiny-imagenet-200 (else procedural crops are generated)")
    parser.add_argument("--out", type=Path, required=True, help="Tiny-ImageNet root to (re)build")
    parser.add_argument("--seed", type=int, default=0, help="seed of the procedural dataset")
    parser.add_argument("--procedural-train", type=int, default=48, help="procedural train images")
    parser.add_argument("--procedural-val", type=int, default=24, help="procedural val images")
    parser.set_defaults(func=_run)
