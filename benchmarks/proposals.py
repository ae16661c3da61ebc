"""Benchmark: selective-search proposals on real COCO images: OpenCV fast and quality modes, and SoCo's search.

    .venv/bin/python benchmarks/proposals.py [--images 20] [--max-side 500]

SoCo's own search (its selective_search/ folder, a copy of AlpacaDB's pure-Python `selectivesearch`,
run by generate_imagenet_ss_proposals.py with scale 300, sigma 0.9, min_size 100) is the `selectivesearch`
package with those values. Every mode searches the same copy resized to `--max-side`. For each, on one
core: seconds per image, proposals per second, boxes per image (raw and after SoCo's filter), and the
recall of COCO ground-truth objects (fraction with a proposal at IoU >= 0.5 / 0.7), with all boxes and
with the filtered ones. The speed ratios against SoCo's search are measured in the same run.
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


def best_iou(truth: np.ndarray, proposals: np.ndarray) -> np.ndarray:
    """Each ground-truth box's best IoU over the proposals (pycocotools' IoU, xywh boxes)."""
    if len(proposals) == 0:
        return np.zeros(len(truth))
    to_xywh = lambda b: np.column_stack([b[:, :2], b[:, 2:] - b[:, :2]])  # noqa: E731
    ious = mask_utils.iou(to_xywh(proposals.astype(np.float64)), to_xywh(truth), [0] * len(truth))
    return np.asarray(ious).max(axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20, help="annotated COCO-mini val2017 images to use")
    parser.add_argument("--max-side", type=int, default=500, help="search on copies resized to this longer side")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    truth = ground_truth(COCO / "annotations" / "instances_val2017.json")
    names = sorted(truth)[: args.images]
    seconds, rates, recalls = {}, {}, {}
    for mode in MODES:
        raw_counts, kept_counts, raw_iou, kept_iou = [], [], [], []
        elapsed = 0.0
        for name in names:
            rgb = np.asarray(load_rgb(COCO / "val2017" / name))
            start = time.perf_counter()
            boxes = soco_search(rgb, args.max_side) if mode == "soco" else selective_search(rgb, mode, args.max_side)
            kept, _ = filter_boxes(boxes, rgb.shape[:2], 1 / search_scale(*rgb.shape[:2], args.max_side))
            elapsed += time.perf_counter() - start
            raw_counts.append(len(boxes))
            kept_counts.append(len(kept))
            raw_iou.append(best_iou(truth[name], boxes))
            kept_iou.append(best_iou(truth[name], kept))
        seconds[mode] = elapsed / len(names)
        rates[mode] = sum(raw_counts) / elapsed
        raw, kept = np.concatenate(raw_iou), np.concatenate(kept_iou)
        recalls[mode] = (np.mean(raw >= 0.5), np.mean(raw >= 0.7))
        print(
            f"{mode:8s} {seconds[mode]:.3f} s/img/core, {rates[mode]:.0f} proposals/s | boxes/img raw "
            f"{np.mean(raw_counts):.0f}, filtered {np.mean(kept_counts):.0f} | "
            f"recall@0.5 raw {np.mean(raw >= 0.5):.3f} filtered {np.mean(kept >= 0.5):.3f} | "
            f"recall@0.7 raw {np.mean(raw >= 0.7):.3f} filtered {np.mean(kept >= 0.7):.3f} | "
            f"{len(raw)} objects in {len(names)} images"
        )
    print(f"quality / fast time ratio: {seconds['quality'] / seconds['fast']:.2f}x (max side {args.max_side})")
    for mode in ("fast", "quality"):
        print(f"{mode} vs SoCo's search: {rates[mode] / rates['soco']:.2f}x the proposals/s, "
              f"{seconds['soco'] / seconds[mode]:.2f}x the images/s; recall@0.5/0.7 {recalls[mode][0]:.3f}/"
              f"{recalls[mode][1]:.3f} vs {recalls['soco'][0]:.3f}/{recalls['soco'][1]:.3f}")


if __name__ == "__main__":
    main()
