"""`python -m prepare image-list`: the unlabeled pretraining image set, one absolute path a line.

Built from ROOT/<subdir> folders (required; a subdir may be a glob such as `train/*/images`, the
Tiny-ImageNet layout) plus optional extra folders (skipped when absent, e.g.
coco_mini/val2017_unannotated on a clone without the shared data). Folders are read flat, not
recursively, as in the COCO layout. `--only-ids FILE` keeps the images whose name without suffix is
listed there (a selection the prepare stage made, e.g. OpenImage-MINI's image ids); `--max-images N`
keeps N evenly spaced images of the sorted list (every class of a class-per-folder layout stays
represented). `--union LIST...` writes the images of other lists instead, each once (an image set's
`union`, e.g. PASCAL train_aug + COCO train).
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


def _folders(root: Path, subdir: str) -> list[Path]:
    return sorted(p for p in root.glob(subdir) if p.is_dir()) if any(c in subdir for c in "*?[") else [root / subdir]


def evenly_spaced(items: list[str], count: int) -> list[str]:
    """`count` items spread evenly over `items` (all of them when there are fewer)."""
    if count >= len(items):
        return items
    return [items[i * len(items) // count] for i in range(count)]


def build_image_list(root: Path, subdirs: list[str], extra_dirs: list[Path], out: Path,
                     max_images: int | None = None, only_ids: Path | None = None) -> list[str]:
    """Write the sorted image paths of ROOT/<subdir> and the existing extra folders (only those named in
    `only_ids`, when given) to `out`; return them."""
    folders = [folder for subdir in subdirs for folder in _folders(root, subdir) if folder.is_dir()]
    missing = [str(root / subdir) for subdir in subdirs if not any(f.is_dir() for f in _folders(root, subdir))]
    if missing:
        raise UserError(f"image folder(s) not found: {', '.join(missing)}. Build the dataset first or fix --root.")
    folders += [folder for folder in extra_dirs if folder.is_dir()]
    paths = sorted({path for folder in folders for path in _images_in(folder)})
    if only_ids is not None:
        wanted = set(only_ids.read_text().split())
        paths = [path for path in paths if Path(path).stem in wanted]
        found = {Path(path).stem for path in paths}
        if found != wanted:
            missing = sorted(wanted - found)
            raise UserError(f"{len(missing)} of the {len(wanted)} images of {only_ids} are not in "
                            f"{', '.join(map(str, folders))} (e.g. {missing[0]}); point --root at the dataset the "
                            "selection was made from.")
    if max_images:
        paths = evenly_spaced(paths, max_images)
    if not paths:
        raise UserError(
            f"no *.jpg/*.jpeg/*.png image in {', '.join(map(str, folders))}; point --root/--subdirs at image folders."
        )
    write_text(out, "".join(f"{path}\n" for path in paths))
    return paths


def union_image_list(lists: list[Path], out: Path, max_images: int | None = None) -> list[str]:
    """Write the sorted images of `lists`, each once (then `max_images` evenly spaced), to `out`; return them."""
    paths = sorted({path for listed in lists for path in read_image_list(listed)})
    if max_images:
        paths = evenly_spaced(paths, max_images)
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
    if args.union:
        if args.root or args.subdirs or args.only_ids or args.extra_dir:
            raise UserError("--union joins image lists: drop --root, --subdirs, --extra-dir and --only-ids.")
        paths = union_image_list(args.union, args.out, args.max_images)
    elif args.root and args.subdirs:
        paths = build_image_list(args.root, args.subdirs, args.extra_dir, args.out, args.max_images, args.only_ids)
    else:
        raise UserError("give --root and --subdirs (image folders), or --union (image lists to join).")
    print(f"{len(paths)} images listed in {args.out}")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("image-list", help="list the unlabeled pretraining images", description=__doc__)
    parser.add_argument("--root", type=Path, help="dataset root, e.g. the COCO root")
    parser.add_argument("--subdirs", nargs="+", help="image folders under --root, e.g. train2017")
    parser.add_argument("--union", type=Path, nargs="+", help="image lists to join instead (each image once)")
    parser.add_argument("--extra-dir", type=Path, action="append", default=[],
                        help="another image folder, used only if it exists (repeatable)")
    parser.add_argument("--max-images", type=int, help="keep this many evenly spaced images")
    parser.add_argument("--only-ids", type=Path, help="keep only the images whose stem this file lists (one a line)")
    parser.add_argument("--out", type=Path, required=True, help="list file to write")
    parser.set_defaults(func=_run)
