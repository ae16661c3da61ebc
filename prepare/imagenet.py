"""`python -m prepare imagenet`: a small ImageNet (ILSVRC2012) root built from a Tiny-ImageNet root.

    OUT/train/<wnid>/<wnid>_<n>.JPEG   (ILSVRC2012_img_train.tar, each class tar extracted to its folder)
    OUT/val/<wnid>/<file>.JPEG         (the validation images sorted into class folders, as the usual
                                        valprep.sh leaves them for torchvision's ImageFolder)
    OUT/manifest.json                  (written last: the Snakemake output)

Tiny-ImageNet's images are downsampled ImageNet images with ImageNet's wnids and train file names
(houghcl.md Sec. 4.1: "a miniature of ImageNet"), so linking them into ImageNet's folders lets the
ImageNet-pretrained experiments (LC-loss, HoughCL's ImageNet rows) run the same code at smoke scale.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from core.errors import UserError
from core.io import write_json
from core.provenance import provenance
from prepare.layouts import MANIFEST, link, list_summary, start_build

# ILSVRC2012's two folders the image sets read (README "Datasets"; prepare.roots.EXPECTED_LAYOUT).
SPLITS = ("train", "val")


def build_imagenet(tinyimagenet_root: Path, out: Path) -> dict[str, Any]:
    """Build OUT (see the module docstring) from the Tiny-ImageNet layout at `tinyimagenet_root`."""
    wnids_file = tinyimagenet_root / "wnids.txt"
    annotations = tinyimagenet_root / "val" / "val_annotations.txt"
    if not wnids_file.is_file() or not annotations.is_file():
        raise UserError(f"{tinyimagenet_root} is not a Tiny-ImageNet root (wnids.txt, val/val_annotations.txt); "
                        "build it first with `python -m prepare tinyimagenet`.")
    wnids = wnids_file.read_text().split()
    train = {wnid: sorted((tinyimagenet_root / "train" / wnid / "images").glob("*.JPEG")) for wnid in wnids}
    val_rows = [row.split("\t")[:2] for row in annotations.read_text().splitlines() if row.strip()]
    start_build(out)
    for wnid, images in train.items():
        for image in images:
            link(image, out / "train" / wnid / image.name)
    for name, wnid in val_rows:
        link(tinyimagenet_root / "val" / "images" / name, out / "val" / wnid / name)
    manifest = {
        "dataset": "imagenet",
        "source": "tinyimagenet",
        "classes": len(wnids),
        "splits": {split: list_summary(p.name for p in (out / split).glob("*/*.JPEG")) for split in SPLITS},
        "provenance": provenance({"tinyimagenet_root": str(tinyimagenet_root.resolve())}, 0),
    }
    write_json(out / MANIFEST, manifest)
    return manifest


def _run(args: argparse.Namespace) -> None:
    manifest = build_imagenet(args.tinyimagenet_root, args.out)
    print(f"ImageNet layout: {manifest['splits']['train']['images']} train and {manifest['splits']['val']['images']} "
          f"val images of {manifest['classes']} classes in {args.out}")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("imagenet", help="build an ImageNet-layout root from Tiny-ImageNet",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tinyimagenet-root", type=Path, required=True, help="a Tiny-ImageNet root (its layout)")
    parser.add_argument("--out", type=Path, required=True, help="ImageNet root to (re)build")
    parser.set_defaults(func=_run)
