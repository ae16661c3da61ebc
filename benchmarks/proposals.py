"""Benchmark: selective-search proposals on real COCO images, fast vs quality mode.

    .venv/bin/python benchmarks/proposals.py [--images 20] [--max-side 500]

For each mode, on one core: seconds per image, boxes per image (raw and after SoCo's filter), and
the recall of COCO ground-truth objects (fraction with a proposal at IoU >= 0.5 / 0.7), with all
boxes and with the filtered ones. The quality/fast time ratio is measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.images import load_rgb  # noqa: E402
from prepare.proposals import filter_boxes, search_scale, selective_search  # noqa: E402

COCO = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "coco_mini"


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
    seconds = {}
    for mode in ("fast", "quality"):
        raw_counts, kept_counts, raw_iou, kept_iou = [], [], [], []
        elapsed = 0.0
        for name in names:
            rgb = np.asarray(load_rgb(COCO / "val2017" / name))
            start = time.perf_counter()
            boxes = selective_search(rgb, mode, args.max_side)
            kept, _ = filter_boxes(boxes, rgb.shape[:2], 1 / search_scale(*rgb.shape[:2], args.max_side))
            elapsed += time.perf_counter() - start
            raw_counts.append(len(boxes))
            kept_counts.append(len(kept))
            raw_iou.append(best_iou(truth[name], boxes))
            kept_iou.append(best_iou(truth[name], kept))
        seconds[mode] = elapsed / len(names)
        raw, kept = np.concatenate(raw_iou), np.concatenate(kept_iou)
        print(
            f"{mode:8s} {seconds[mode]:.3f} s/img/core | boxes/img raw {np.mean(raw_counts):.0f}, "
            f"filtered {np.mean(kept_counts):.0f} | recall@0.5 raw {np.mean(raw >= 0.5):.3f} "
            f"filtered {np.mean(kept >= 0.5):.3f} | recall@0.7 raw {np.mean(raw >= 0.7):.3f} "
            f"filtered {np.mean(kept >= 0.7):.3f} | {len(raw)} objects in {len(names)} images"
        )
    print(f"quality / fast time ratio: {seconds['quality'] / seconds['fast']:.2f}x (max side {args.max_side})")


if __name__ == "__main__":
    main()
