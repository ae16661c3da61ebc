"""A numpy re-implementation of OpenCV's structured-edge inference, to check exported models.

Follows `StructuredEdgeDetectionImpl::predictEdges` (opencv_contrib, ximgproc): at patch position
(i, j) of the grid (`features.patch_grid`) the trees ((i + j) % (2 * nTreesEval) + k) % nTrees,
k < nTreesEval, are walked on the smoothed channel maps; each reached leaf adds
step = 2 * stride^2 / patchInnerSize^2 / nTreesEval to its edge pixels, at image pixel
(i * stride + bin % 16, j * stride + bin // 16); the sum is smoothed by the radius-1 triangle
filter. Sums of steps (multiples of 2^-7) and that filter (1/4, 1/2, 1/4) are exact in float32, so
this equals OpenCV's output bit for bit when the walks agree.
"""

from __future__ import annotations

import numpy as np

from prepare.edges.features import compute_feature_maps, imsmooth, lookup, patch_grid
from prepare.edges.opencv_model import OpenCVForest


def leaf_nodes(forest: OpenCVForest, rgb: np.ndarray) -> np.ndarray:
    """Global leaf index (tree * n_nodes + node) reached at every patch position: (rows, cols, nTreesEval)."""
    options = forest.options
    maps = compute_feature_maps(rgb, options)
    rows, cols = patch_grid(rgb.shape, options)
    grid_i, grid_j = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    evaluate, trees, n_nodes = options.numberOfTreesToEvaluate, options.numberOfTrees, forest.n_nodes
    childs, fids = forest.childs.reshape(-1), forest.feature_ids.reshape(-1)
    thresholds = forest.thresholds.reshape(-1)
    leaves = np.empty((rows, cols, evaluate), np.int64)
    for k in range(evaluate):
        root = (((grid_i + grid_j) % (2 * evaluate) + k) % trees).reshape(-1) * n_nodes
        node = root.copy()
        i, j = grid_i.reshape(-1), grid_j.reshape(-1)
        active = np.flatnonzero(childs[node] != 0)
        while active.size:
            current = node[active]
            value = lookup(maps, fids[current], i[active], j[active], options)
            node[active] = root[active] + childs[current] - (value < thresholds[current])
            active = active[childs[node[active]] != 0]
        leaves[..., k] = node.reshape(rows, cols)
    return leaves


def predict_edges(forest: OpenCVForest, rgb: np.ndarray) -> np.ndarray:
    """Edge map (H x W float32) of an H x W x 3 float32 RGB image in [0, 1], as OpenCV's detectEdges."""
    options = forest.options
    height, width = rgb.shape[:2]
    inner, stride = options.patchInnerSize, options.stride
    leaves = leaf_nodes(forest, rgb)
    bounds = forest.edge_boundaries
    starts, stops = bounds[leaves], bounds[leaves + 1]
    lengths = (stops - starts).reshape(-1)
    # Every (position, tree) contributes its leaf's bins: expand them with a ragged gather.
    owner = np.repeat(np.arange(lengths.size), lengths)
    offsets = np.arange(owner.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    bins = forest.edge_bins[np.repeat(starts.reshape(-1), lengths) + offsets]
    position = owner // options.numberOfTreesToEvaluate
    rows = position // leaves.shape[1] * stride + bins % inner
    cols = position % leaves.shape[1] * stride + bins // inner
    counts = np.bincount(rows * width + cols, minlength=height * width).reshape(height, width)
    step = np.float32(2.0) * np.float32(stride**2) / np.float32(inner**2) / np.float32(options.numberOfTreesToEvaluate)
    return imsmooth(counts.astype(np.float32) * step, 1)
