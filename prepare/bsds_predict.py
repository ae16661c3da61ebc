"""`python -m prepare bsds-predict`: boundary maps of BSDS500 test images for the BSDS benchmark.

Two maps per image, as float32 `.npy` files named by image id:
- `edges/`: the structured-edge map after edge NMS with edgesDetect.m's settings (how Dollár &
  Zitnick score SE);
- `ucm/`: the OWT-UCM of the same edges (plus the spectral signal when weighted), at pixel
  resolution as the BSDS benchmark reads a `ucm2` (every other sample of the doubled grid).
Seconds per image of both steps go to a timing JSON.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from core.errors import UserError
from core.images import load_rgb
from core.io import atomic_path, write_json
from prepare.edges.detect import edge_nms, edges_and_orientation, model_fingerprint
from prepare.hierarchy import owt_ucm, ucm_map
from prepare.spectral import spectral_edges


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array.astype(np.float32))


def predict(
    edge_model: Path, rgb: np.ndarray, spectral_weight: float
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(NMS edge map, UCM at pixel resolution, edge seconds, UCM seconds) of one RGB uint8 image."""
    start = time.perf_counter()
    edges, orientations = edges_and_orientation(edge_model, rgb)
    thin = edge_nms(edge_model, edges, orientations)
    edge_seconds = time.perf_counter() - start
    start = time.perf_counter()
    if spectral_weight > 0:
        edges = (1 - spectral_weight) * edges + spectral_weight * spectral_edges(edges)
    tree, altitudes, graph = owt_ucm(edges, orientations)
    ucm = ucm_map(tree, altitudes, graph, edges.shape)[2::2, 2::2]
    return thin, ucm, edge_seconds, time.perf_counter() - start


def _run(args: argparse.Namespace) -> None:
    image_dir = args.bsds_root / "data" / "images" / args.split
    paths = sorted(image_dir.glob("*.jpg"))
    if not paths:
        raise UserError(
            f"no BSDS500 images in {image_dir}. Point --bsds-root at the BSDS500 folder holding "
            "data/images/{train,val,test}/*.jpg and data/groundTruth/{train,val,test}/*.mat."
        )
    paths = paths[: args.max_images] if args.max_images else paths
    fingerprint = model_fingerprint(args.edge_model)
    edge_times, ucm_times = [], []
    for path in tqdm(paths, desc="BSDS maps"):
        rgb = np.asarray(load_rgb(path))
        thin, ucm, edge_seconds, ucm_seconds = predict(args.edge_model, rgb, args.spectral_weight)
        _save_npy(args.out_edges / f"{path.stem}.npy", thin)
        _save_npy(args.out_ucm / f"{path.stem}.npy", ucm)
        edge_times.append(edge_seconds)
        ucm_times.append(ucm_seconds)
    write_json(
        args.out_timing,
        {
            "images": len(paths),
            "split": args.split,
            "edge_model": fingerprint,
            "spectral_weight": args.spectral_weight,
            "edges_seconds_per_image": float(np.mean(edge_times)),
            "ucm_seconds_per_image": float(np.mean(ucm_times)),
        },
    )
    print(f"{len(paths)} images: edges {np.mean(edge_times):.3f} s, OWT-UCM {np.mean(ucm_times):.3f} s per image")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bsds-predict", help="edge and UCM maps of BSDS500 images", description=__doc__)
    parser.add_argument("--bsds-root", type=Path, required=True, help="BSDS500 folder holding data/")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--edge-model", type=Path, required=True, help="structured-edge model (.yml.gz)")
    parser.add_argument("--spectral-weight", type=float, default=0.0, help="weight of the spectral signal")
    parser.add_argument("--max-images", type=int, default=None, help="first N images by name (smoke)")
    parser.add_argument("--out-edges", type=Path, required=True, help="folder for the NMS edge maps")
    parser.add_argument("--out-ucm", type=Path, required=True, help="folder for the UCMs")
    parser.add_argument("--out-timing", type=Path, required=True, help="timing JSON to write")
    parser.set_defaults(func=_run)
