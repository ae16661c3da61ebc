"""Quality of the selective-search proposal store against COCO's ground-truth boxes: recall at IoU
thresholds, average best overlap (ABO, Uijlings et al. 2013) and proposals per image; the speed
comes from the shard jobs' Snakemake benchmark files."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_iou

from core.errors import UserError
from core.io import read_json, write_json
from prepare.shards import ShardedStore

THRESHOLDS = (0.5, 0.7)


def gt_boxes(instances_json: str | Path) -> dict[str, np.ndarray]:
    """Non-crowd ground-truth boxes (x1, y1, x2, y2) per image file stem."""
    if not Path(instances_json).is_file():
        raise UserError(f"missing {instances_json}: the COCO root needs annotations/instances_<split>.json.")
    coco = read_json(instances_json)
    stems = {image["id"]: Path(image["file_name"]).stem for image in coco["images"]}
    boxes: dict[str, list[list[float]]] = {}
    for ann in coco["annotations"]:
        if not ann.get("iscrowd", 0):
            x, y, w, h = ann["bbox"]
            boxes.setdefault(stems[ann["image_id"]], []).append([x, y, x + w, y + h])
    return {stem: np.asarray(b, dtype=np.float32) for stem, b in boxes.items()}


def best_overlaps(proposals: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Each ground-truth box's highest IoU with any proposal (0 when there is none)."""
    if len(proposals) == 0:
        return np.zeros(len(truth), dtype=np.float32)
    return box_iou(torch.from_numpy(truth), torch.from_numpy(proposals)).max(dim=1).values.numpy()


def proposal_quality(index_json: str | Path, instances_json: str | Path) -> dict[str, Any]:
    """Recall@IoU, ABO and proposals per image over the store's images that have ground truth."""
    store, truth = ShardedStore(index_json), gt_boxes(instances_json)
    overlaps, counts = [], []
    for image_id in store.image_ids():
        boxes = np.asarray(store[image_id]["boxes"], dtype=np.float32).reshape(-1, 4)
        counts.append(len(boxes))
        if image_id in truth:
            overlaps.append(best_overlaps(boxes, truth[image_id]))
    if not overlaps:
        raise UserError(f"no image of {index_json} has ground truth in {instances_json}: the proposals and the "
                        "annotations must come from the same COCO split.")
    best = np.concatenate(overlaps)
    return {**{f"recall@{t:g}": float((best >= t).mean() * 100) for t in THRESHOLDS},
            "ABO": float(best.mean() * 100), "proposals_per_image": float(np.mean(counts)),
            "images": len(counts), "gt_boxes": int(len(best))}


def seconds_per_image(benchmark_tsvs: list[str], images: int) -> float:
    """Wall seconds of all shard jobs (Snakemake benchmark files) per image."""
    total = 0.0
    for path in benchmark_tsvs:
        with open(path) as f:
            total += float(next(csv.DictReader(f, delimiter="\t"))["s"])
    return total / images


def _run(args: argparse.Namespace) -> None:
    measured = proposal_quality(args.index, args.instances)
    measured["seconds_per_image"] = seconds_per_image(args.benchmarks, measured["images"])
    measured["settings"] = read_json(args.index)["settings"]
    write_json(args.out, measured)


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("proposal-quality", help="recall/ABO of the proposal store against COCO boxes")
    p.add_argument("--index", required=True, help="index.json of the proposal shards")
    p.add_argument("--instances", required=True, help="COCO instances JSON of the proposals' images")
    p.add_argument("--benchmarks", nargs="+", required=True, help="Snakemake benchmark files of the shard jobs")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_run)
