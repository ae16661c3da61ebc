"""DAVIS region similarity J and boundary accuracy F (Perazzi et al., CVPR 2016), as the official
davis2017-evaluation computes them (davisvideochallenge/davis2017-evaluation @ 30b698a6,
`davis2017/metrics.py`: `db_eval_iou`, `f_measure`, `_seg2bmap`):

- J = |M ∩ G| / |M ∪ G| over non-void pixels, and 1 when the union is empty.
- boundaries: a pixel is on the boundary of a binary mask when it differs from its east, south or
  south-east neighbour (only the neighbours inside the image count; `_seg2bmap`).
- F: boundary pixels of one mask within `bound_pix` of a boundary pixel of the other are matched, with
  bound_pix = ceil(0.008 * image diagonal), by dilation with a disk of that radius (integer offsets
  within that Euclidean distance, as `skimage.morphology.disk`); precision = matched prediction boundary /
  prediction boundary, recall = matched truth boundary / truth boundary; empty boundaries follow the
  official cases (both empty: P = R = 1; only the prediction empty: P = 1, R = 0; only the truth
  empty: P = 0, R = 1); F = 2PR / (P + R), or 0 when P + R = 0.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

BOUND_TH = 0.008  # davis2017-evaluation `f_measure(..., bound_th=0.008)`: a fraction of the image diagonal


def _binary(mask: np.ndarray, void: np.ndarray | None) -> np.ndarray:
    mask = np.asarray(mask).astype(bool)
    if mask.ndim != 2:
        raise ValueError(f"masks must be 2-D, got shape {mask.shape}")
    return mask if void is None else mask & ~np.asarray(void, dtype=bool)


def region_similarity(truth: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None) -> float:
    """J: intersection over union of two binary masks [H, W], ignoring `void` pixels; 1 for two empty masks."""
    if np.shape(truth) != np.shape(pred):
        raise ValueError(f"mask shapes differ: {np.shape(truth)} vs {np.shape(pred)}")
    truth, pred = _binary(truth, void), _binary(pred, void)
    union = np.count_nonzero(truth | pred)
    return 1.0 if union == 0 else np.count_nonzero(truth & pred) / union


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """The 1-pixel boundary of a binary mask: pixels unlike their east, south or south-east neighbour."""
    mask = np.asarray(mask, dtype=bool)
    edge = np.zeros_like(mask)
    edge[:, :-1] |= mask[:, :-1] != mask[:, 1:]
    edge[:-1, :] |= mask[:-1, :] != mask[1:, :]
    edge[:-1, :-1] |= mask[:-1, :-1] != mask[1:, 1:]
    return edge


def boundary_radius(shape: tuple[int, ...], bound_th: float = BOUND_TH) -> float:
    """The match tolerance in pixels: `bound_th` itself when >= 1, else ceil(bound_th * diagonal)."""
    return float(bound_th) if bound_th >= 1 else float(math.ceil(bound_th * math.hypot(*shape[:2])))


def _disk(radius: float) -> np.ndarray:
    """The structuring element of all integer offsets within Euclidean distance `radius` (uint8)."""
    r = int(radius)
    y, x = np.ogrid[-r:r + 1, -r:r + 1]
    return (x * x + y * y <= radius * radius).astype(np.uint8)


def _matched(edge: np.ndarray, other: np.ndarray, radius: float) -> int:
    """How many pixels of `edge` lie within Euclidean distance `radius` of a pixel of `other`."""
    near = cv2.dilate(other.astype(np.uint8), _disk(radius))  # pixels outside the image never dilate in
    return int(np.count_nonzero(edge & (near > 0)))


def boundary_f(truth: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None,
               bound_th: float = BOUND_TH) -> float:
    """F: the boundary F-measure of binary masks [H, W] (official tolerance and empty-boundary cases)."""
    if np.shape(truth) != np.shape(pred):
        raise ValueError(f"mask shapes differ: {np.shape(truth)} vs {np.shape(pred)}")
    truth_edge = boundary_map(_binary(truth, void))
    pred_edge = boundary_map(_binary(pred, void))
    n_truth, n_pred = np.count_nonzero(truth_edge), np.count_nonzero(pred_edge)
    if n_truth == 0 or n_pred == 0:
        precision = 1.0 if n_pred == 0 else 0.0
        recall = 1.0 if n_truth == 0 else 0.0
    else:
        radius = boundary_radius(np.shape(truth), bound_th)
        precision = _matched(pred_edge, truth_edge, radius) / n_pred
        recall = _matched(truth_edge, pred_edge, radius) / n_truth
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
