"""`python -m prepare region-trees`: one shard of per-image region hierarchies for hierarchical grouping.

Per image: structured edges (OpenCV's detector with a model file), optionally mixed with the
spectral signal, then OWT-UCM cut so the finest level has at most 40 regions (Zhang & Maire 2020,
Sec. 4.1). A shard record holds `labels` (H, W) at the processing size, the merge tree above them
(`parents`, `altitudes`; see prepare.hierarchy.RegionTree) and `image_hw`, the original size.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from core.errors import UserError
from core.images import load_rgb
from prepare.edges.detect import edges_and_orientation, model_fingerprint
from prepare.hierarchy import cut_finest, owt_ucm
from prepare.shards import Record, add_shard_arguments, run_shard_stage
from prepare.spectral import spectral_edges


def resize_max_side(rgb: np.ndarray, max_side: int | None) -> np.ndarray:
    """A copy whose longer side is at most `max_side` (unchanged if already smaller or None)."""
    height, width = rgb.shape[:2]
    if max_side is None or max(height, width) <= max_side:
        return rgb
    scale = max_side / max(height, width)
    return cv2.resize(rgb, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)


def region_tree_record(
    edge_model: Path, rgb: np.ndarray, max_side: int | None, max_regions: int, spectral_weight: float
) -> Record:
    """The region hierarchy of one RGB uint8 image, as a shard record."""
    small = resize_max_side(rgb, max_side)
    edges, orientations = edges_and_orientation(edge_model, small)
    if spectral_weight > 0:
        # The paper feeds "a combination of both edge maps" to OWT-UCM without giving weights.
        edges = (1 - spectral_weight) * edges + spectral_weight * spectral_edges(edges)
    tree, altitudes, _ = owt_ucm(edges, orientations)
    regions = cut_finest(tree, altitudes, max_regions)
    return {
        "labels": regions.labels,
        "parents": regions.parents.astype(np.int32),
        "altitudes": regions.altitudes,
        "image_hw": np.array(rgb.shape[:2], dtype=np.int32),
    }


def _run(args: argparse.Namespace) -> None:
    cv2.setNumThreads(args.threads)
    if not 0 <= args.spectral_weight <= 1:
        raise UserError(f"--spectral-weight must be in [0, 1], got {args.spectral_weight}")
    settings = {"kind": "OWT-UCM region trees", "edge_model": model_fingerprint(args.edge_model),
                "max_regions": args.max_regions, "spectral_weight": args.spectral_weight}

    def process(path: str) -> Record:
        rgb = np.asarray(load_rgb(path))
        return region_tree_record(args.edge_model, rgb, args.max_side, args.max_regions, args.spectral_weight)

    run_shard_stage(args, settings, process, "region trees")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("region-trees", help="OWT-UCM region hierarchies of one shard", description=__doc__)
    add_shard_arguments(parser)
    parser.add_argument("--edge-model", type=Path, required=True, help="structured-edge model (.yml.gz)")
    parser.add_argument("--max-regions", type=int, default=40, help="regions at the finest level (paper: 40)")
    parser.add_argument("--spectral-weight", type=float, default=0.0, help="weight of the spectral edge signal")
    parser.set_defaults(func=_run)
