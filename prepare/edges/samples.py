"""Training samples for one tree: feature vectors of 32 x 32 image patches and their 16 x 16 segmentations.

Follows `trainTree` of Dollár & Zitnick's edgesTrain.m: for every image and every human annotator,
up to ceil(nPos / nImgs / nGt) positive locations (patch centre closer than patchInnerSize / 2 to one
of that annotator's boundaries) and as many negatives (elsewhere) are drawn without replacement;
a sample's label is that annotator's segmentation of the inner patch, relabelled 0..m-1. Locations
are OpenCV's inference grid (stride 2), so a sample's features are exactly what OpenCV computes at
that position. Unlike edgesTrain, positions next to the image border are allowed: OpenCV evaluates
them too, on reflect-padded channels, which these features reproduce.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import scipy.ndimage

from prepare.edges.bsds import BsdsImage, read_rgb, read_segmentations
from prepare.edges.features import compute_feature_maps, lookup, patch_grid, to_float_rgb
from prepare.edges.options import SEOptions


def relabel(patches: np.ndarray) -> np.ndarray:
    """Per patch, map labels to 0..m-1 in increasing order (as MATLAB's unique); uint8 (m <= 256 pixels)."""
    n = len(patches)
    flat = patches.reshape(n, -1).astype(np.int64)
    span = int(flat.max(initial=0)) + 1
    keys = flat + np.arange(n)[:, None] * span
    _, inverse = np.unique(keys, return_inverse=True)
    inverse = inverse.reshape(n, -1)
    return (inverse - inverse.min(axis=1, keepdims=True)).astype(np.uint8).reshape(patches.shape)


def sample_positions(annotators: Sequence[tuple[np.ndarray, np.ndarray]], options: SEOptions,
                     per_class: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patch-grid positions (i, j) and annotator index of the samples of one image.

    `per_class`: (positives, negatives) to draw per annotator at most.
    """
    shape = annotators[0][0].shape
    rows, cols = patch_grid(shape, options)
    half = options.patchInnerSize // 2
    grid_i, grid_j = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    grid_i, grid_j = grid_i.reshape(-1), grid_j.reshape(-1)
    # edgesTrain's patch centre: pixel half - 1 of the 0-based inner patch.
    centre_r, centre_c = grid_i * options.stride + half - 1, grid_j * options.stride + half - 1
    picked_i, picked_j, picked_a = [], [], []
    for index, (_, boundaries) in enumerate(annotators):
        near = scipy.ndimage.distance_transform_edt(~boundaries)[centre_r, centre_c] < half
        for candidates, count in ((np.flatnonzero(near), per_class[0]), (np.flatnonzero(~near), per_class[1])):
            chosen = rng.choice(candidates, size=min(count, candidates.size), replace=False)
            picked_i.append(grid_i[chosen])
            picked_j.append(grid_j[chosen])
            picked_a.append(np.full(chosen.size, index))
    return np.concatenate(picked_i), np.concatenate(picked_j), np.concatenate(picked_a)


def label_patches(annotators: Sequence[tuple[np.ndarray, np.ndarray]], i: np.ndarray, j: np.ndarray,
                  annotator: np.ndarray, options: SEOptions) -> np.ndarray:
    """(N, inner, inner) uint8 segmentation patches whose top-left pixel is (i * stride, j * stride)."""
    inner = np.arange(options.patchInnerSize)
    segs = np.stack([seg for seg, _ in annotators])
    rows = (i * options.stride)[:, None, None] + inner[None, :, None]
    cols = (j * options.stride)[:, None, None] + inner[None, None, :]
    return relabel(segs[annotator[:, None, None], rows, cols])


def collect(images: Sequence[BsdsImage], feature_ids: np.ndarray, options: SEOptions, n_pos: int, n_neg: int,
            rng: np.random.Generator, on_image: Callable[[], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Features (len(feature_ids), N) float32 (feature-major, as the split search reads them) and labels
    (N, inner, inner) uint8 of up to n_pos + n_neg samples."""
    total = n_pos + n_neg
    features = np.empty((len(feature_ids), total), np.float32)
    labels = np.empty((total, options.patchInnerSize, options.patchInnerSize), np.uint8)
    filled = 0
    for item in images:
        rgb = read_rgb(item.image)
        annotators = read_segmentations(item.ground_truth, rgb.shape[:2])
        per_annotator = len(images) * len(annotators)
        quota = (math.ceil(n_pos / per_annotator), math.ceil(n_neg / per_annotator))
        i, j, annotator = sample_positions(annotators, options, quota, rng)
        keep = min(len(i), total - filled)  # edgesTrain keeps the first ones when the last image overflows
        i, j, annotator = i[:keep], j[:keep], annotator[:keep]
        maps = compute_feature_maps(to_float_rgb(rgb), options)
        features[:, filled:filled + keep] = lookup(maps, feature_ids[:, None], i[None, :], j[None, :], options)
        labels[filled:filled + keep] = label_patches(annotators, i, j, annotator, options)
        filled += keep
        if on_image is not None:
            on_image()
        if filled == total:
            break
    return features[:, :filled], labels[:filled]
