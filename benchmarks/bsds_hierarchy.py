"""Benchmark: structured edges and OWT-UCM hierarchies on BSDS500 test, scored with the BSDS protocol.

    .venv/bin/python benchmarks/bsds_hierarchy.py [--model results/prepare/edges/model.yml.gz]
        [--images 200] [--nthresh 99] [--spectral-weights 0 0.5] [--workers 2]

For each spectral weight: ODS / OIS / AP of the NMS edge map and of the UCM, and seconds per image
of each step on one core; the ratio of our ODS to the published gPb-owt-ucm ODS (0.726) and SE's
(~0.74) is printed beside them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.images import load_rgb  # noqa: E402
from prepare.bsds_eval import evaluate_dir  # noqa: E402
from prepare.bsds_predict import predict  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BSDS = REPO.parent / "shared" / "datasets" / "bsds500" / "BSDS500"
PUBLISHED_ODS = {"edges": ("SE", 0.74), "ucm": ("gPb-owt-ucm", 0.726)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO / "results" / "prepare" / "edges" / "model.yml.gz")
    parser.add_argument("--bsds-root", type=Path, default=BSDS)
    parser.add_argument("--images", type=int, default=200, help="first N test images by name")
    parser.add_argument("--nthresh", type=int, default=99)
    parser.add_argument("--spectral-weights", type=float, nargs="+", default=[0.0, 0.5])
    parser.add_argument("--workers", type=int, default=2, help="processes for the evaluation only")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    paths = sorted((args.bsds_root / "data" / "images" / "test").glob("*.jpg"))[: args.images]
    gt_dir = args.bsds_root / "data" / "groundTruth" / "test"
    print(f"model {args.model}, {len(paths)} BSDS500 test images, {args.nthresh} thresholds")
    for weight in args.spectral_weights:
        with tempfile.TemporaryDirectory() as tmp:
            folders = {"edges": Path(tmp) / "edges", "ucm": Path(tmp) / "ucm"}
            for folder in folders.values():
                folder.mkdir()
            seconds = {"edges": [], "ucm": []}
            for path in paths:
                thin, ucm, edge_s, ucm_s = predict(args.model, np.asarray(load_rgb(path)), weight)
                np.save(folders["edges"] / f"{path.stem}.npy", thin)
                np.save(folders["ucm"] / f"{path.stem}.npy", ucm)
                seconds["edges"].append(edge_s)
                seconds["ucm"].append(edge_s + ucm_s)
            for kind, folder in folders.items():
                scores = evaluate_dir(folder, gt_dir, args.nthresh, workers=args.workers)
                name, published = PUBLISHED_ODS[kind]
                print(
                    f"spectral {weight:.2f} {kind:5s}: ODS {scores.ods_f:.3f} OIS {scores.ois_f:.3f} AP {scores.ap:.3f}"
                    f" | {np.mean(seconds[kind]):.2f} s/img | ODS / {name} {published}: {scores.ods_f / published:.2f}"
                )


if __name__ == "__main__":
    main()
