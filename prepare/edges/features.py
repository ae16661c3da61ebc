"""Structured-forest features, computed exactly as OpenCV computes them at inference.

OpenCV's `StructuredEdgeDetection::detectEdges` (opencv_contrib, ximgproc/src/structured_edge_detection.cpp)
reflect-pads the float RGB image by (patchSize - patchInnerSize) / 2, computes 13 channels with
`RFFeatureGetter::getFeatures` (LUV + gradient magnitude + 4 orientation histograms at 2 scales,
shrunk 2x), then smooths two copies with a triangle filter (`imsmooth`): radius
round(regFeatureSmoothingRadius / shrink) for the regular features, round(ssFeatureSmoothingRadius /
shrink) for the self-similarity ones. The patch at grid position (i, j) starts at channel pixel
(i * stride // shrink, j * stride // shrink) and predicts the 16 x 16 edge patch whose top-left image
pixel is (i * stride, j * stride).

Feature ids (as in Dollár & Zitnick's `edgesTrain.m`, MATLAB column-major), P = patchSize / shrink = 16:
- id < C * P^2 (regular): channel * P^2 + column * P + row, the smoothed channel at that patch pixel;
- otherwise (self-similarity): C * P^2 + channel * n_pairs + pair, where the pairs (a, b), a < b,
  of the G x G grid cells are enumerated a-major; cell c sits at row grid[c % G], column
  grid[c // G]; the feature is cell a minus cell b of the self-similarity copy.
We call `getFeatures` itself (bound in Python) and `cv2.sepFilter2D` with OpenCV's own triangle kernel,
so training features are bit-identical to what the forest sees at inference.
"""

from __future__ import annotations

import dataclasses
import functools

import cv2
import numpy as np

from prepare.edges.options import SEOptions


def triangle_kernel(radius: int) -> np.ndarray:
    """OpenCV `imsmooth`'s separable kernel (float32) for an integer radius >= 1."""
    if radius <= 1:
        p = np.float32(12.0) / np.float32(radius) / np.float32(radius + 2) - np.float32(2.0)
        return np.array([1, p, 1], np.float32) / (p + np.float32(2))
    norm = np.float32((radius + 1.0) ** 2)
    ramp = np.arange(1, radius + 2, dtype=np.float32)
    return np.concatenate([ramp, ramp[-2::-1]]) / norm


def imsmooth(image: np.ndarray, radius: int) -> np.ndarray:
    """Triangle-filter `image` (H x W [x C], float32) as OpenCV's `imsmooth` (border REFLECT_101)."""
    if radius == 0:
        return image
    kernel = triangle_kernel(radius)
    return cv2.sepFilter2D(image, -1, kernel, kernel)


def channel_shape(image_shape: tuple[int, ...], options: SEOptions) -> tuple[int, int]:
    """Size of the channel map `getFeatures` returns for an (unpadded) image of `image_shape`.

    OpenCV divides the padded size by the float shrink and rounds half to even (cvRound), as
    Python's round() does; measured: a padded side of 337 gives 168, 339 gives 170.
    """
    pad = 2 * options.padding
    return round((image_shape[0] + pad) / options.shrinkNumber), round((image_shape[1] + pad) / options.shrinkNumber)


def patch_grid(image_shape: tuple[int, ...], options: SEOptions) -> tuple[int, int]:
    """Number of patch positions (rows, columns) OpenCV evaluates on an image of `image_shape`."""
    rows, cols = channel_shape(image_shape, options)
    shrink, span, stride = options.shrinkNumber, options.patchSize, options.stride
    return -(-(rows * shrink - span) // stride), -(-(cols * shrink - span) // stride)  # ceil, as cvCeil


@dataclasses.dataclass(frozen=True)
class FeatureMaps:
    """The two smoothed channel maps of one image (padded, shrunk; H' x W' x C float32)."""

    regular: np.ndarray
    self_similarity: np.ndarray


def to_float_rgb(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 RGB -> float32 in [0, 1], the input OpenCV's detector requires (CV_32FC3)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 uint8 RGB image, got {rgb.dtype} {rgb.shape}")
    return rgb.astype(np.float32) / np.float32(255)


def compute_channels(rgb: np.ndarray, options: SEOptions) -> np.ndarray:
    """`getFeatures` on the reflect-padded image, as `detectEdges` calls it. `rgb`: H x W x 3 float32 in [0, 1]."""
    if rgb.dtype != np.float32 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 float32 RGB image in [0, 1], got {rgb.dtype} {rgb.shape}")
    pad = options.padding
    padded = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    # The binding's `features` is an output Mat&: preallocated with the right size and type,
    # OpenCV's create() is a no-op and the channels are written into our array.
    channels = np.zeros((*channel_shape(rgb.shape, options), options.n_channels), np.float32)
    cv2.ximgproc.createRFFeatureGetter().getFeatures(
        padded, channels, options.gradientNormalizationRadius, options.gradientSmoothingRadius,
        options.shrinkNumber, options.n_channels, options.numberOfGradientOrientations)
    return channels


def compute_feature_maps(rgb: np.ndarray, options: SEOptions) -> FeatureMaps:
    """Regular and self-similarity maps of an H x W x 3 float32 RGB image in [0, 1]."""
    channels = compute_channels(rgb, options)
    shrink = options.shrinkNumber
    # cvRound(radius / float(shrink)): 2/2 -> 1, 8/2 -> 4 (half-to-even, as round()).
    return FeatureMaps(
        regular=imsmooth(channels, round(options.regFeatureSmoothingRadius / shrink)),
        self_similarity=imsmooth(channels, round(options.ssFeatureSmoothingRadius / shrink)),
    )


def grid_positions(options: SEOptions) -> np.ndarray:
    """Row/column offsets (in channel pixels) of the self-similarity cells: [1, 4, 8, 11, 14] by default."""
    side, cells = options.shrunk_patch, options.selfsimilarityGridSize
    half = round(side / (2.0 * cells))
    return np.array([int((i + 1) * (side + 2 * half - 1) / (cells + 1.0) - half + 0.5) for i in range(cells)])


@dataclasses.dataclass(frozen=True)
class FeatureTable:
    """Per feature id: the patch pixels it reads, as (channel, row, column) of pixel A and pixel B.

    Regular features read A only (B is unused); self-similarity features are A - B.
    """

    is_pair: np.ndarray
    channel: np.ndarray
    row_a: np.ndarray
    col_a: np.ndarray
    row_b: np.ndarray
    col_b: np.ndarray

    def offsets(self, width: int, n_channels: int) -> tuple[np.ndarray, np.ndarray]:
        """Flat offsets of A and B inside a (rows, `width`, `n_channels`) C-ordered map, as OpenCV's lookup tables."""
        a = (self.row_a * width + self.col_a) * n_channels + self.channel
        b = (self.row_b * width + self.col_b) * n_channels + self.channel
        return a, b


@functools.lru_cache(maxsize=8)
def feature_table(options: SEOptions) -> FeatureTable:
    side, chans, cells = options.shrunk_patch, options.n_channels, options.selfsimilarityGridSize
    ids = np.arange(options.n_regular)
    reg_channel, rest = np.divmod(ids, side * side)
    reg_col, reg_row = np.divmod(rest, side)

    grid = grid_positions(options)
    first, second = np.triu_indices(cells * cells, k=1)  # a-major, b > a: OpenCV's enumeration order
    n_pairs = len(first)
    pair_channel = np.repeat(np.arange(chans), n_pairs)
    first, second = np.tile(first, chans), np.tile(second, chans)
    zeros = np.zeros(options.n_regular, np.int64)
    return FeatureTable(
        is_pair=np.concatenate([np.zeros(options.n_regular, bool), np.ones(chans * n_pairs, bool)]),
        channel=np.concatenate([reg_channel, pair_channel]),
        row_a=np.concatenate([reg_row, grid[first % cells]]),
        col_a=np.concatenate([reg_col, grid[first // cells]]),
        row_b=np.concatenate([zeros, grid[second % cells]]),
        col_b=np.concatenate([zeros, grid[second // cells]]),
    )


def lookup(maps: FeatureMaps, feature_ids: np.ndarray, rows: np.ndarray, cols: np.ndarray,
           options: SEOptions) -> np.ndarray:
    """Feature values; `feature_ids`, `rows`, `cols` broadcast together.

    `rows`, `cols` are patch-grid positions (i, j) as in OpenCV's predictEdges; e.g. ids of shape
    (1, F) with positions of shape (N, 1) give the N x F training matrix.
    """
    table = feature_table(options)
    _, width, chans = maps.regular.shape
    off_a, off_b = table.offsets(width, chans)
    shrink, stride = options.shrinkNumber, options.stride
    base = ((np.asarray(rows) * stride // shrink) * width + np.asarray(cols) * stride // shrink) * chans
    ids, base = np.broadcast_arrays(np.asarray(feature_ids), base)
    pair = table.is_pair[ids]
    values = np.empty(ids.shape, np.float32)
    single = ~pair
    values[single] = maps.regular.reshape(-1)[base[single] + off_a[ids[single]]]
    if pair.any():
        similar = maps.self_similarity.reshape(-1)
        ids, base = ids[pair], base[pair]
        values[pair] = similar[base + off_a[ids]] - similar[base + off_b[ids]]
    return values
