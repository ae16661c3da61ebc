"""Benchmark: selective-search proposals on real COCO images: OpenCV fast and quality modes, and SoCo's search.

    .venv/bin/python benchmarks/proposals.py [--images 20] [--max-side 500]

SoCo's own search (its selective_search/ folder, a copy of AlpacaDB's pure-Python `selectivesearch`,
run by generate_imagenet_ss_proposals.py with scale 300, sigma 0.9, min_size 100) is the `selectivesearch`
package with those values. Every mode searches the same copy resized to `--max-side`. For each, on one
core: seconds per image, proposals per second, boxes per image (raw and after SoCo's filter), and the
recall of COCO ground-truth objects (fraction with a proposal at IoU >= 0.5 / 0.7), with all boxes and
with the filtered ones. The speed ratios against SoCo's search are measured in the same run, also at SoCo's
recall@0.5: OpenCV fast's ranked boxes cut to the fewest that reach it, and OpenCV fast at the smallest of
`--smaller-sides` whose recall reaches it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import selectivesearch
from pycocotools import mask as mask_utils

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.images import load_rgb  # noqa: E402
from prepare.proposals import filter_boxes, search_scale, selective_search  # noqa: E402

COCO = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "coco_mini"
# SoCo's selective_search/generate_imagenet_ss_proposals.py.
SOCO_SEARCH = {"scale": 300, "sigma": 0.9, "min_size": 100}
MODES = ("fast", "quality", "soco")


def soco_search(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """SoCo's search on the `max_side` copy, as boxes (x1, y1, x2, y2) in `rgb`'s pixels, x2 - x1 counting
    pixels as OpenCV's do (SoCo's rect holds max - min)."""
    height, width = rgb.shape[:2]
    scale = search_scale(height, width, max_side)
    if scale != 1.0:
        rgb = cv2.resize(rgb, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
    with warnings.catch_warnings():  # skimage's note on LBP of a float image: SoCo's code does the same
        warnings.simplefilter("ignore", UserWarning)
        _, regions = selectivesearch.selective_search(rgb, **SOCO_SEARCH)
    rects = np.array([region["rect"] for region in regions], np.float64).reshape(-1, 4)
    return np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:] + 1], axis=1) / scale


def ground_truth(annotations: Path) -> dict[str, np.ndarray]:
    """COCO boxes (x1, y1, x2, y2) per image file, crowd boxes excluded as in COCO recall."""
    data = json.loads(annotations.read_text())
    files = {image["id"]: image["file_name"] for image in data["images"]}
    boxes: dict[str, list[list[float]]] = {}
    for ann in data["annotations"]:
        if not ann.get("iscrowd", 0):
            x, y, w, h = ann["bbox"]
            boxes.setdefault(files[ann["image_id"]], []).append([x, y, x + w, y + h])
    return {name: np.array(b, np.float64) for name, b in boxes.items()}


def iou_matrix(truth: np.ndarray, proposals: np.ndarray) -> np.ndarray:
    """IoU of every proposal with every ground-truth box [proposals, objects] (pycocotools' IoU, xywh boxes)."""
    if len(proposals) == 0:
        return np.zeros((0, len(truth)))
    to_xywh = lambda b: np.column_stack([b[:, :2], b[:, 2:] - b[:, :2]])  # noqa: E731
    return np.asarray(mask_utils.iou(to_xywh(proposals.astype(np.float64)), to_xywh(truth), [0] * len(truth)))


def best_iou(truth: np.ndarray, proposals: np.ndarray) -> np.ndarray:
    """Each ground-truth box's best IoU over the proposals."""
    ious = iou_matrix(truth, proposals)
    return ious.max(axis=0) if len(ious) else np.zeros(len(truth))


def cumulative_recall(ious: list[np.ndarray], counts: int, threshold: float) -> float:
    """Recall at IoU >= `threshold` of each image's first `counts` proposals (OpenCV's ranked order)."""
    hits = [(iou[: min(counts, len(iou))].max(axis=0) if len(iou) else np.zeros(iou.shape[1])) >= threshold
            for iou in ious]
    return float(np.mean(np.concatenate(hits)))


def search(names: list[str], truth: dict[str, np.ndarray], mode: str, max_side: int) -> dict:
    """One mode at one search size on the images: time, counts and per-image IoU matrices (proposal x object)."""
    raw_counts, kept_counts, raw_iou, kept_iou, ious = [], [], [], [], []
    elapsed = 0.0
    for name in names:
        rgb = np.asarray(load_rgb(COCO / "val2017" / name))
        start = time.perf_counter()
        boxes = soco_search(rgb, max_side) if mode == "soco" else selective_search(rgb, mode, max_side)
        kept, _ = filter_boxes(boxes, rgb.shape[:2], 1 / search_scale(*rgb.shape[:2], max_side))
        elapsed += time.perf_counter() - start
        raw_counts.append(len(boxes))
        kept_counts.append(len(kept))
        ious.append(iou_matrix(truth[name], boxes))
        raw_iou.append(best_iou(truth[name], boxes))
        kept_iou.append(best_iou(truth[name], kept))
    raw, kept = np.concatenate(raw_iou), np.concatenate(kept_iou)
    return {"seconds": elapsed / len(names), "rate": sum(raw_counts) / elapsed, "boxes": np.mean(raw_counts),
            "kept": np.mean(kept_counts), "recall": (np.mean(raw >= 0.5), np.mean(raw >= 0.7)),
            "kept_recall": (np.mean(kept >= 0.5), np.mean(kept >= 0.7)), "ious": ious, "objects": len(raw)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20, help="annotated COCO-mini val2017 images to use")
    parser.add_argument("--max-side", type=int, default=500, help="search on copies resized to this longer side")
    parser.add_argument("--smaller-sides", type=int, nargs="*", default=[150, 200, 250, 300, 400],
                        help="OpenCV fast at these search sizes too, for the comparison at SoCo's recall")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    truth = ground_truth(COCO / "annotations" / "instances_val2017.json")
    names = sorted(truth)[: args.images]
    results = {}
    for mode in MODES:
        results[mode] = found = search(names, truth, mode, args.max_side)
        print(
            f"{mode:8s} {found['seconds']:.3f} s/img/core, {found['rate']:.0f} proposals/s | boxes/img raw "
            f"{found['boxes']:.0f}, filtered {found['kept']:.0f} | "
            f"recall@0.5 raw {found['recall'][0]:.3f} filtered {found['kept_recall'][0]:.3f} | "
            f"recall@0.7 raw {found['recall'][1]:.3f} filtered {found['kept_recall'][1]:.3f} | "
            f"{found['objects']} objects in {len(names)} images"
        )
    fast, soco = results["fast"], results["soco"]
    quality_ratio = results["quality"]["seconds"] / fast["seconds"]
    print(f"quality / fast time ratio: {quality_ratio:.2f}x (max side {args.max_side})")
    for mode in ("fast", "quality"):
        found = results[mode]
        print(f"{mode} vs SoCo's search: {found['rate'] / soco['rate']:.2f}x the proposals/s, "
              f"{soco['seconds'] / found['seconds']:.2f}x the images/s; recall@0.5/0.7 {found['recall'][0]:.3f}/"
              f"{found['recall'][1]:.3f} vs {soco['recall'][0]:.3f}/{soco['recall'][1]:.3f}")

    # At SoCo's recall@0.5: (a) fast's ranked boxes cut to the fewest that reach it; (b) fast on a smaller copy.
    target = soco["recall"][0]
    most = max(len(iou) for iou in fast["ious"])
    counts = next((k for k in range(1, most + 1) if cumulative_recall(fast["ious"], k, 0.5) >= target), most)
    cut_rate = sum(min(counts, len(iou)) for iou in fast["ious"]) / (fast["seconds"] * len(names))
    print(f"at SoCo's recall@0.5 {target:.3f}: fast's first {counts} boxes per image give "
          f"{cumulative_recall(fast['ious'], counts, 0.5):.3f}, {cut_rate:.0f} proposals/s = "
          f"{cut_rate / soco['rate']:.2f}x SoCo's, {soco['seconds'] / fast['seconds']:.2f}x its images/s")
    for side in sorted(args.smaller_sides):
        found = search(names, truth, "fast", side)
        reached = found["recall"][0] >= target
        print(f"fast at {side} px: {found['seconds']:.3f} s/img/core, {found['rate']:.0f} proposals/s, "
              f"{found['boxes']:.0f} boxes/img, recall@0.5/0.7 {found['recall'][0]:.3f}/{found['recall'][1]:.3f}"
              + (f" -> at SoCo's recall: {found['rate'] / soco['rate']:.2f}x its proposals/s, "
                 f"{soco['seconds'] / found['seconds']:.2f}x its images/s" if reached else ""))
        if reached:  # the smallest search size that reaches SoCo's recall
            break


if __name__ == "__main__":
    main()
