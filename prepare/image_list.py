"""`python -m prepare image-list`: the unlabeled pretraining image set, one absolute path a line.

Built from ROOT/<subdir> folders (required) plus optional extra folders (skipped when absent,
e.g. coco_mini/val2017_unannotated on a clone without the shared data). Folders are read flat,
not recursively, as in the COCO layout.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from core.errors import UserError
from core.io import write_text

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})


def _images_in(folder: Path) -> list[str]:
    # abspath, not resolve: keep the dataset-layout path even when the file is a symlink.
    return [os.path.abspath(p) for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]


def build_image_list(root: Path, subdirs: list[str], extra_dirs: list[Path], out: Path) -> list[str]:
    """Write the sorted image paths of ROOT/<subdir> and the existing extra folders to `out`; return them."""
    folders = [root / subdir for subdir in subdirs]
    missing = [str(folder) for folder in folders if not folder.is_dir()]
    if missing:
        raise UserError(f"image folder(s) not found: {', '.join(missing)}. Build the dataset first or fix --root.")
    folders += [folder for folder in extra_dirs if folder.is_dir()]
    paths = sorted({path for folder in folders for path in _images_in(folder)})
    if not paths:
        raise UserError(
            f"no *.jpg/*.jpeg/*.png image in {', '.join(map(str, folders))}; point --root/--subdirs at image folders."
        )
    write_text(out, "".join(f"{path}\n" for path in paths))
    return paths


def read_image_list(path: str | os.PathLike[str]) -> list[str]:
    """The image paths of a list written by `python -m prepare image-list`."""
    try:
        paths = [line for line in Path(path).read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        raise UserError(f"image list not found: {path}. Build it with `python -m prepare image-list`.") from None
    if not paths:
        raise UserError(f"image list {path} is empty. Rebuild it with `python -m prepare image-list`.")
    return paths


def _run(args: argparse.Namespace) -> None:
    paths = build_image_list(args.root, args.subdirs, args.extra_dir, args.out)
    print(f"{len(paths)} images listed in {args.out}")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("image-list", help="list the unlabeled pretraining images", description=__doc__)
    parser.add_argument("--root", type=Path, required=True, help="dataset root, e.g. the COCO root")
    parser.add_argument("--subdirs", nargs="+", required=True, help="image folders under --root, e.g. train2017")
    parser.add_argument("--extra-dir", type=Path, action="append", default=[],
                        help="another image folder, used only if it exists (repeatable)")
    parser.add_argument("--out", type=Path, required=True, help="list file to write")
    parser.set_defaults(func=_run)
