"""`python -m prepare coco`: a small dataset in the official COCO-2017 layout.

    OUT/train2017/*.jpg, OUT/val2017/*.jpg
    OUT/annotations/{instances,person_keypoints}_{train,val}2017.json
    OUT/manifest.json   (written last: the Snakemake output)

From SOURCE_ROOT/coco_mini when it exists (images symlinked, annotation files copied, every image
checked to decode at its annotated size); otherwise a procedural dataset in the same layout
(prepare.procedural), so a clone without the shared data still runs end to end.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path
from typing import Any

from core.errors import UserError
from core.images import load_rgb
from core.io import write_json
from core.provenance import provenance
from prepare import procedural
from prepare.layouts import (
    COCO_SPLITS,
    MANIFEST,
    check_layout,
    coco_annotation_file,
    coco_layout,
    copy_file,
    link,
    list_summary,
    load_coco_json,
    start_build,
)

ANNOTATION_KINDS: tuple[str, ...] = ("instances", "person_keypoints")  # captions are not used downstream


def _validated_source(source: Path) -> dict[str, list[str]]:
    """Check the real COCO-mini and return each split's image file names; raise a UserError on any defect."""
    check_layout(source, coco_layout(ANNOTATION_KINDS), "COCO-mini source")
    decoded_sizes: dict[Path, tuple[int, int]] = {}
    file_names: dict[str, set[str]] = {split: set() for split in COCO_SPLITS}
    for split, kind in itertools.product(COCO_SPLITS, ANNOTATION_KINDS):
        rel = coco_annotation_file(kind, split)
        for record in load_coco_json(source / rel)["images"]:
            path = source / split / record["file_name"]
            if path not in decoded_sizes:
                decoded_sizes[path] = load_rgb(path).size  # full decode: catches truncated files too
            if decoded_sizes[path] != (record["width"], record["height"]):
                width, height = decoded_sizes[path]
                raise UserError(
                    f"{path} is {width}x{height} but {source / rel} says {record['width']}x{record['height']}; "
                    "replace the image or the annotation file with the official one."
                )
            file_names[split].add(record["file_name"])
    return {split: sorted(names) for split, names in file_names.items()}


def build_coco(source_root: Path, out: Path, seed: int, procedural_counts: dict[str, int], procedural_size: int
               ) -> dict[str, Any]:
    """Build OUT (see the module docstring) and return its manifest."""
    source = source_root / "coco_mini"
    config: dict[str, Any] = {"source_root": str(source_root.resolve())}
    if source.exists():
        file_names = _validated_source(source)  # before touching OUT: a bad source leaves the old build intact
        start_build(out)
        for split, kind in itertools.product(COCO_SPLITS, ANNOTATION_KINDS):
            copy_file(source / coco_annotation_file(kind, split), out / coco_annotation_file(kind, split))
        for split, names in file_names.items():
            for name in names:
                link(source / split / name, out / split / name)
        config["source"] = "coco_mini"
    else:
        print(f"{source} not found: generating a procedural dataset in the COCO layout instead.", file=sys.stderr)
        procedural.generate(out, seed, procedural_counts, procedural_size)
        config.update(source="procedural", counts=procedural_counts, size=procedural_size)
    manifest = {
        "dataset": "coco",
        "source": config["source"],
        "splits": {split: list_summary(p.name for p in (out / split).iterdir()) for split in COCO_SPLITS},
        "provenance": provenance(config, seed),
    }
    write_json(out / MANIFEST, manifest)
    return manifest


def _run(args: argparse.Namespace) -> None:
    build_coco(
        args.source_root, args.out, args.seed,
        {"train2017": args.procedural_train, "val2017": args.procedural_val}, args.procedural_size,
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("coco", help="build the COCO-2017-layout dataset", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source-root", type=Path, required=True,
                        help="folder holding coco_mini/ (procedural data is generated when coco_mini/ is missing)")
    parser.add_argument("--out", type=Path, required=True, help="COCO root to (re)build")
    parser.add_argument("--seed", type=int, default=0, help="seed of the procedural dataset")
    parser.add_argument("--procedural-train", type=int, default=48, help="procedural train2017 image count")
    parser.add_argument("--procedural-val", type=int, default=24, help="procedural val2017 image count")
    parser.add_argument("--procedural-size", type=int, default=256,
                        help=f"procedural image long side in pixels (>= {procedural.MIN_SIZE})")
    parser.set_defaults(func=_run)
