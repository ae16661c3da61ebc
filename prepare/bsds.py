"""`python -m prepare bsds`: BSDS500 in its official layout, for the edge model and the boundary benchmark.

    OUT/data/images/{train,val,test}/<id>.jpg
    OUT/data/groundTruth/{train,val,test}/<id>.mat   cell array `groundTruth` of structs with
                                                     `Segmentation` (uint16 labels from 1) and
                                                     `Boundaries` (uint8 0/1, seg2bdry), one per annotator
    OUT/manifest.json                                (written last: the Snakemake output)

From SOURCE_ROOT/bsds500/BSDS500 when it exists (files symlinked, every image checked to have its
ground truth); otherwise procedural images from prepare.procedural with three "annotators" who
disagree as people do: one labels every object, one misses the smallest object, one draws every
object one pixel larger. A clone without the shared data thus still trains and scores an edge model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import scipy.io

from core.errors import UserError
from core.io import atomic_path, write_json
from core.provenance import provenance
from prepare import procedural
from prepare.bsds_eval import seg_boundaries
from prepare.layouts import MANIFEST, link, list_summary, start_build

SPLITS = ("train", "val", "test")


def write_ground_truth(path: Path, segmentations: list[np.ndarray]) -> None:
    """A BSDS500 groundTruth .mat: a 1 x n cell of structs (Segmentation, Boundaries)."""
    cell = np.empty((1, len(segmentations)), dtype=object)
    for index, segmentation in enumerate(segmentations):
        boundaries = seg_boundaries(segmentation).astype(np.uint8)  # as BSDS500 drew them (seg2bdry)
        cell[0, index] = {"Segmentation": segmentation.astype(np.uint16), "Boundaries": boundaries}
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        scipy.io.savemat(handle, {"groundTruth": cell})


def _annotators(objects: list[Any], shape: tuple[int, int]) -> list[np.ndarray]:
    """Three human-like segmentations of the same objects (labels from 1, background 1)."""
    by_size = sorted(range(len(objects)), key=lambda i: objects[i].mask.sum())
    results = []
    for annotator in range(3):
        labels = np.ones(shape, dtype=np.uint16)
        for label, obj in enumerate(objects, start=2):
            if annotator == 1 and len(objects) > 1 and obj is objects[by_size[0]]:
                continue  # misses the smallest object
            mask = obj.mask
            if annotator == 2:
                mask = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            labels[mask] = label
        results.append(labels)
    return results


def _generate(out: Path, seed: int, count: int, size: int) -> None:
    for split_index, split in enumerate(SPLITS):
        for number in range(count):
            rng = np.random.default_rng((seed, 7, split_index, number))  # 7: apart from the COCO streams
            pixels, objects = procedural.render(rng, size)
            name = f"{split_index + 1}{number:05d}"
            procedural.save_jpeg(pixels, out / "data" / "images" / split / f"{name}.jpg")
            write_ground_truth(out / "data" / "groundTruth" / split / f"{name}.mat",
                               _annotators(objects, pixels.shape[:2]))


def _link_source(source: Path, out: Path) -> None:
    pairs = []
    for split in SPLITS:
        images = sorted((source / "data" / "images" / split).glob("*.jpg"))
        if not images:
            raise UserError(f"no images in {source / 'data' / 'images' / split}; expected the official BSDS500 "
                            "layout data/{images,groundTruth}/{train,val,test}.")
        for image in images:
            truth = source / "data" / "groundTruth" / split / f"{image.stem}.mat"
            if not truth.is_file():
                raise UserError(f"{truth} is missing for {image}; restore the official BSDS500 ground truth.")
            pairs.append((split, image, truth))
    start_build(out)  # only after the checks: a bad source leaves the previous build intact
    for split, image, truth in pairs:
        link(image, out / "data" / "images" / split / image.name)
        link(truth, out / "data" / "groundTruth" / split / truth.name)


def build_bsds(source_root: Path, out: Path, seed: int, procedural_count: int, procedural_size: int) -> dict[str, Any]:
    """Build OUT (see the module docstring) and return its manifest."""
    source = source_root / "bsds500" / "BSDS500"
    config: dict[str, Any] = {"source_root": str(source_root.resolve())}
    if source.exists():
        _link_source(source, out)
        config["source"] = "bsds500"
    else:
        if procedural_count < 1 or procedural_size < procedural.MIN_SIZE:
            raise UserError(f"procedural BSDS needs >= 1 image per split and size >= {procedural.MIN_SIZE}; "
                            "fix datasets.procedural.")
        print(f"{source} not found: generating procedural images in the BSDS500 layout instead.", file=sys.stderr)
        start_build(out)
        _generate(out, seed, procedural_count, procedural_size)
        config.update(source="procedural", count=procedural_count, size=procedural_size)
    manifest = {
        "dataset": "bsds500",
        "source": config["source"],
        "splits": {s: list_summary(p.name for p in (out / "data" / "images" / s).iterdir()) for s in SPLITS},
        "provenance": provenance(config, seed),
    }
    write_json(out / MANIFEST, manifest)
    return manifest


def _run(args: argparse.Namespace) -> None:
    build_bsds(args.source_root, args.out, args.seed, args.procedural_count, args.procedural_size)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bsds", help="build the BSDS500-layout dataset", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source-root", type=Path, required=True,
                        help="folder holding bsds500/BSDS500 (procedural data is generated when it is missing)")
    parser.add_argument("--out", type=Path, required=True, help="BSDS500 root to (re)build")
    parser.add_argument("--seed", type=int, default=0, help="seed of the procedural dataset")
    parser.add_argument("--procedural-count", type=int, default=6, help="procedural images per split")
    parser.add_argument("--procedural-size", type=int, default=240, help="procedural image long side (pixels)")
    parser.set_defaults(func=_run)
