"""`python -m prepare proposals`: selective-search boxes per image, filtered as SoCo does, in shards.

D3SSL (Sec. 4) takes its noisy object boxes from selective search (Uijlings et al., IJCV 2013)
following SoCo. The search is OpenCV's (`cv2.ximgproc.segmentation`), fast mode by default. SoCo's
released pipeline (hologerry/SoCo selective_search/filters.py) keeps boxes with w >= 32 and h >= 32
and filters them with "ratio3size0308" (1/3 <= w/h <= 3 and 0.3 <= sqrt(wh)/sqrt(WH) <= 0.8); its
"post" step gives an image left without any box the ratio-only filter ("ratio3"), then the size-only
one ("none": w, h >= 32 still). An image with no box after all three keeps none: pretraining then
uses the whole image as its one proposal, as SoCo's dataset does. Each image records which filter
it got.

Boxes are (x1, y1, x2, y2) in pixels of the original image, float32, x2 - x1 the pixel count.
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np

from core.errors import UserError
from core.images import load_rgb
from prepare.shards import Record, add_shard_arguments, run_shard_stage

# Fallback order of SoCo's "ratio3size0308post"; the index is what a shard stores per image.
FILTERS = ("ratio3size0308", "ratio3", "none")
MODES = ("fast", "quality")


def search_scale(height: int, width: int, max_side: int | None) -> float:
    """The factor selective search resizes an image by: its longer side at most `max_side` (search time
    grows faster than linearly with pixels)."""
    return 1.0 if max_side is None or max(height, width) <= max_side else max_side / max(height, width)


def selective_search(rgb: np.ndarray, mode: str = "fast", max_side: int | None = None) -> np.ndarray:
    """Selective-search boxes (x1, y1, x2, y2) of an RGB uint8 image, in its own pixel coordinates;
    the search runs on a copy resized by `search_scale`, and boxes are scaled back."""
    if mode not in MODES:
        raise UserError(f"unknown selective-search mode '{mode}'; use one of {', '.join(MODES)}")
    height, width = rgb.shape[:2]
    scale = search_scale(height, width, max_side)
    if scale != 1.0:
        rgb = cv2.resize(rgb, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
    search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    search.setBaseImage(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if mode == "fast":
        search.switchToSelectiveSearchFast()
    else:
        search.switchToSelectiveSearchQuality()
    rects = np.asarray(search.process(), dtype=np.float32).reshape(-1, 4)
    boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1) / scale
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    return boxes


def filter_boxes(
    boxes: np.ndarray,
    image_hw: tuple[int, int],
    pixel: float = 1.0,
    min_side: float = 32,
    max_ratio: float = 3.0,
    size_range: tuple[float, float] = (0.3, 0.8),
) -> tuple[np.ndarray, int]:
    """SoCo's "ratio3size0308post" filter; returns the kept boxes (possibly none) and the index in FILTERS used.

    SoCo measures a box as max - min of its pixel indices, one pixel less than the pixel count x2 - x1 that
    OpenCV's rectangles give: `pixel` is one searched pixel in the image's pixels (1 / `search_scale`).
    """
    widths, heights = boxes[:, 2] - boxes[:, 0] - pixel, boxes[:, 3] - boxes[:, 1] - pixel
    big = (widths >= min_side) & (heights >= min_side)
    aspect = widths / np.maximum(heights, 1e-6)
    ratio_ok = big & (aspect >= 1 / max_ratio) & (aspect <= max_ratio)
    relative_size = np.sqrt(widths.clip(0) * heights.clip(0)) / np.sqrt(image_hw[0] * image_hw[1])
    size_ok = ratio_ok & (relative_size >= size_range[0]) & (relative_size <= size_range[1])
    for used, keep in enumerate((size_ok, ratio_ok, big)):
        if keep.any():
            return boxes[keep], used
    return boxes[:0], len(FILTERS) - 1


def proposals_for(path: str, mode: str, max_side: int | None) -> Record:
    """The filtered proposals of one image file, as a shard record."""
    rgb = np.asarray(load_rgb(path))
    height, width = rgb.shape[:2]
    pixel = 1 / search_scale(height, width, max_side)
    boxes, used = filter_boxes(selective_search(rgb, mode, max_side), (height, width), pixel)
    return {"boxes": boxes.astype(np.float32), "filter": np.array(used, dtype=np.uint8)}


def _run(args: argparse.Namespace) -> None:
    cv2.setNumThreads(args.threads)
    settings = {"kind": "selective-search proposals", "mode": args.mode, "filters": list(FILTERS),
                "box_format": "x1y1x2y2 pixels"}
    run_shard_stage(args, settings, lambda path: proposals_for(path, args.mode, args.max_side), "proposals")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("proposals", help="selective-search proposals of one shard", description=__doc__)
    add_shard_arguments(parser)
    parser.add_argument("--mode", choices=MODES, default="fast", help="OpenCV selective-search strategy")
    parser.set_defaults(func=_run)
