"""Training one structured random tree, as Dollár & Zitnick (TPAMI 2014) with their toolboxes' defaults.

Follows `forestTrain.m` (Piotr's toolbox, with the `discretize` hook) driven by the edges toolbox's
`edgesTrain.m`:
- each tree sees a random quarter of all feature ids (`fracFtrs` 1/4, drawn in the caller), and each
  node draws round(sqrt(F)) of those (forestTrain's `F1`) -- the per-node subset;
- at each node the structured labels (16 x 16 segmentations) are discretised to 2 classes: 256
  random pixel pairs give the binary code z = [seg(p1) == seg(p2)]; centred codes are projected on
  their first principal component and split by sign ('pca', nClasses 2). The node keeps the
  medoid segmentation (the code closest to the mean) as its prediction;
- the split is the (feature, threshold) of lowest Gini impurity over all thresholds between sorted
  feature values at least 1e-6 apart (`forestFindThr`), threshold = midpoint; it is kept when the gain
  is > 1e-10 and both children have >= minChild (8) samples; nodes with <= max(minCount, minChild)
  samples, pure nodes, or depth > maxDepth (64) stay leaves;
- nodes are numbered breadth-first; `childs[k]` is the 1-based index of the left child (OpenCV's layout);
- after training (`mergeTrees`), segments of <= 5 pixels of each leaf's medoid are merged into the
  median label of their 3 x 3 neighbourhood, and the leaf's edge bins are the pixels where the label
  gradient (central differences) is nonzero, column-major (`sharpen` 0: OpenCV has no sharpening).

Split finding is vectorised: per node, the sampled features are sorted together with the class bit
(one 64-bit key per value: order-preserving integer image of the float, shifted left, class in bit 0),
and a cumulative sum gives every threshold's class counts at once.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import numpy as np
import scipy.linalg
import scipy.ndimage
import scipy.sparse.linalg
from threadpoolctl import threadpool_limits

from prepare.edges.opencv_model import OpenCVForest
from prepare.edges.options import SEOptions


@dataclasses.dataclass(frozen=True)
class TreeParams:
    min_count: int = 1
    min_child: int = 8
    max_depth: int = 64
    n_pairs: int = 256  # edgesTrain's nSamples: pixel pairs for the structured-label code
    chunk: int = 1 << 22  # values processed at once (memory bound of split search and discretisation)


DEFAULT_PARAMS = TreeParams()


@dataclasses.dataclass
class Tree:
    """One trained tree; node arrays indexed breadth-first."""

    feature_ids: np.ndarray  # int32, global feature id (0 at leaves)
    thresholds: np.ndarray  # float32 (0 at leaves)
    childs: np.ndarray  # int32, 1-based left child index, 0 = leaf
    counts: np.ndarray  # int32, training samples reaching the node
    depths: np.ndarray  # int32
    segs: np.ndarray  # uint8 (nodes, inner, inner), the node's medoid segmentation
    edge_counts: np.ndarray  # int32, number of edge bins per node (0 for internal nodes)
    edge_bins: np.ndarray  # int32, concatenated edge bins of all nodes

    def save(self, path_or_file, **extra: np.ndarray) -> None:
        np.savez_compressed(path_or_file, **dataclasses.asdict(self), **extra)

    @classmethod
    def from_npz(cls, data) -> Tree:
        return cls(**{field.name: data[field.name] for field in dataclasses.fields(cls)})


# ---------------------------------------------------------------- structured labels -> 2 classes


@functools.lru_cache(maxsize=4)
def _pixel_pairs(pixels: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(pixels, k=1)


def _top_eigenvector(matrix: np.ndarray) -> np.ndarray:
    """Unit eigenvector of the largest eigenvalue of a symmetric PSD matrix (deterministic).

    Lanczos (ARPACK, fixed start vector) was ~2.5x faster than LAPACK's subset `evr` on the 256 x 256
    scatter matrices (measured 1.7 vs 4.6 ms single-threaded); LAPACK for small sizes or no convergence.
    """
    size = matrix.shape[0]
    if size >= 64:
        start = np.linspace(1.0, 2.0, size)  # fixed; not the all-ones null vector of a centred Gram matrix
        try:
            return scipy.sparse.linalg.eigsh(matrix, k=1, which="LA", v0=start)[1][:, 0]
        except scipy.sparse.linalg.ArpackError:  # includes no convergence
            pass
    return scipy.linalg.eigh(matrix, subset_by_index=[size - 1, size - 1], driver="evr")[1][:, 0]


def discretize(labels: np.ndarray, rng: np.random.Generator, n_pairs: int = 256, need_classes: bool = True,
               chunk: int = 1 << 22) -> tuple[np.ndarray | None, int]:
    """(classes, medoid) for (n, w, w) segmentations (edgesTrain's 'pca' discretisation to 2 classes).

    classes is None when all codes are equal (a pure node) or when not `need_classes` (a node too
    small to split: only its medoid is used). Codes are 0/1, so the scatter matrix is the float32
    co-occurrence count matrix (exact below 2^24 samples) minus n * mean mean^T, and the squared
    distance of a code z to the mean is z . (1 - 2 mean) + |mean|^2; when n < d the first principal
    component's projections come from the n x n Gram matrix instead (same signs up to a global flip).
    """
    n = len(labels)
    by_pixel = np.ascontiguousarray(labels.reshape(n, -1).T)
    first, second = _pixel_pairs(by_pixel.shape[0])
    pick = rng.choice(first.size, size=min(n_pairs, first.size), replace=False)
    codes = by_pixel[first[pick]] == by_pixel[second[pick]]  # (pairs, n)
    ones = codes.sum(axis=1)
    varying = (ones > 0) & (ones < n)
    if not varying.any():
        return None, 0
    codes = codes[varying]
    mean = ones[varying] / n
    columns = max(1, chunk // len(codes))
    weights = (1 - 2 * mean).astype(np.float32)
    distance = np.empty(n, np.float32)
    counts = np.zeros((len(codes), len(codes)), np.float64)
    for start in range(0, n, columns):
        part = codes[:, start:start + columns].astype(np.float32)
        distance[start:start + columns] = weights @ part
        if need_classes and n >= len(codes):
            counts += part @ part.T
    medoid = int(np.argmin(distance))
    if not need_classes:
        return None, medoid
    if n < len(codes):
        centred = codes.T.astype(np.float32) - mean.astype(np.float32)
        return _top_eigenvector((centred @ centred.T).astype(np.float64)) < 0, medoid
    direction = _top_eigenvector(counts - n * np.outer(mean, mean))
    offset = np.float32(direction @ mean)
    direction = direction.astype(np.float32)
    projection = np.empty(n, np.float32)
    for start in range(0, n, columns):
        projection[start:start + columns] = direction @ codes[:, start:start + columns].astype(np.float32) - offset
    return projection < 0, medoid


# ---------------------------------------------------------------- split search


def _sort_keys(values: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """int64 keys ordering like the float32 values, with the class bit in bit 0."""
    bits = values.view(np.int32)
    ordered = bits ^ ((bits >> 31) & np.int32(0x7FFFFFFF))
    return (ordered.astype(np.int64) << 1) | classes


def _key_values(keys: np.ndarray) -> np.ndarray:
    ordered = (keys >> 1).astype(np.int32)
    return (ordered ^ ((ordered >> 31) & np.int32(0x7FFFFFFF))).view(np.float32)


def best_split(data: np.ndarray, classes: np.ndarray, chunk: int = 1 << 22) -> tuple[int, np.float32, float]:
    """(row of `data`, threshold, Gini gain) of the best split; `data` is (features, n) float32.

    Gini of a split (unit weights): v = 2 (T1 - l1^2 / nl - r1^2 / nr) / n, so the best split maximises
    q = l1^2 / nl + r1^2 / nr (l1, r1: class-1 counts left/right). Ties go to the first feature, then
    the lowest threshold, as forestFindThr's strict `v < vBest` scan.
    """
    n_features, n = data.shape
    if n < 2:
        return 0, np.float32(0), 0.0
    ones = classes.astype(np.int64)
    total1 = int(ones.sum())
    left_n = np.arange(1, n, dtype=np.float64)
    right_n = n - left_n
    baseline = total1 * total1 / n
    best = (0, np.float32(0), baseline)
    rows = max(1, chunk // max(n, 1))
    for start in range(0, n_features, rows):
        keys = np.sort(_sort_keys(data[start:start + rows], ones), axis=1)
        left1 = np.cumsum(keys[:, :-1] & 1, axis=1, dtype=np.int64).astype(np.float64)
        right1 = total1 - left1
        q = left1 * left1 / left_n + right1 * right1 / right_n
        values = _key_values(keys)
        q[(values[:, 1:] - values[:, :-1]) < np.float32(1e-6)] = -np.inf
        flat = int(np.argmax(q))
        row, pos = divmod(flat, n - 1)
        if q[row, pos] > best[2]:
            threshold = np.float32(0.5) * (values[row, pos] + values[row, pos + 1])
            best = (start + row, threshold, float(q[row, pos]))
    return best[0], best[1], 2.0 * (best[2] - baseline) / n


# ---------------------------------------------------------------- tree


def train_tree(features: np.ndarray, labels: np.ndarray, feature_ids: np.ndarray, rng: np.random.Generator,
               params: TreeParams = DEFAULT_PARAMS, on_leaf: Callable[[int], None] | None = None) -> Tree:
    """Grow one tree on `features` (F, n) float32, whose rows are the global ids `feature_ids`.

    `labels`: (n, inner, inner) uint8 segmentations; `on_leaf(count)` is called as samples settle in leaves.
    """
    # Thousands of small (256 x 256) eigenproblems: BLAS threads only spin, ~10x slower on a busy machine.
    with threadpool_limits(limits=1, user_api="blas"):
        return add_edges(_grow(features, labels, feature_ids, rng, params, on_leaf))


def _grow(by_feature: np.ndarray, labels: np.ndarray, feature_ids: np.ndarray, rng: np.random.Generator,
          params: TreeParams, on_leaf: Callable[[int], None] | None) -> Tree:
    n_candidates = len(feature_ids)
    per_node = min(n_candidates, round(math.sqrt(n_candidates)))
    min_count = max(1, params.min_count, params.min_child)
    fids, thresholds, childs, depths, counts, segs = [0], [0.0], [0], [0], [], []
    members: list[np.ndarray | None] = [np.arange(len(labels))]
    k = 0
    while k < len(members):
        ids = members[k]
        members[k] = None
        n = len(ids)
        counts.append(n)
        splittable = n > min_count and depths[k] <= params.max_depth
        classes, medoid = discretize(labels[ids], rng, params.n_pairs, splittable, params.chunk)
        segs.append(labels[ids[medoid]])
        split = None
        if classes is not None and classes.any() and not classes.all():
            columns = rng.choice(n_candidates, size=per_node, replace=False)
            row, threshold, gain = best_split(by_feature[np.ix_(columns, ids)], classes, params.chunk)
            if gain > 1e-10:
                left = by_feature[columns[row], ids] < threshold
                n_left = int(left.sum())
                if n_left >= params.min_child and n - n_left >= params.min_child:
                    split = (columns[row], threshold, left)
        if split is None:
            if on_leaf is not None:
                on_leaf(n)
        else:
            column, threshold, left = split
            fids[k], thresholds[k], childs[k] = int(feature_ids[column]), float(threshold), len(members) + 1
            members += [ids[left], ids[~left]]
            fids += [0, 0]
            thresholds += [0.0, 0.0]
            childs += [0, 0]
            depths += [depths[k] + 1] * 2
        k += 1
    return Tree(
        feature_ids=np.array(fids, np.int32), thresholds=np.array(thresholds, np.float32),
        childs=np.array(childs, np.int32), counts=np.array(counts, np.int32), depths=np.array(depths, np.int32),
        segs=np.stack(segs), edge_counts=np.zeros(len(fids), np.int32), edge_bins=np.zeros(0, np.int32),
    )


# ---------------------------------------------------------------- leaves -> edge bins


def merge_small_segments(seg: np.ndarray, max_size: int = 5) -> np.ndarray:
    """mergeTrees: give each segment of <= max_size pixels the median label around it, then relabel 0..m-1."""
    labels = seg.astype(np.float64)
    changed = False
    for value in range(int(seg.max()) + 1):
        mask = labels == value
        if not mask.any() or mask.sum() > max_size:
            continue
        around = scipy.ndimage.binary_dilation(mask, structure=np.ones((3, 3), bool))
        labels[mask] = np.median(labels[around])
        changed = True
    if not changed:
        return seg
    return np.unique(labels, return_inverse=True)[1].reshape(seg.shape).astype(seg.dtype)


def edge_bins(seg: np.ndarray) -> np.ndarray:
    """Column-major indices (column * w + row) of the pixels on a label boundary of `seg`."""
    grad_rows, grad_cols = np.gradient(seg.astype(np.float32))
    edges = np.hypot(grad_rows, grad_cols) > 0.01
    return np.flatnonzero(edges.T).astype(np.int32)


def add_edges(tree: Tree) -> Tree:
    """Fill `edge_counts` / `edge_bins` from the leaves' medoid segmentations."""
    counts = np.zeros(len(tree.childs), np.int32)
    bins = []
    for node in np.flatnonzero(tree.childs == 0):
        seg = tree.segs[node]
        if seg.max() == 0:
            continue
        node_bins = edge_bins(merge_small_segments(seg))
        counts[node] = len(node_bins)
        bins.append(node_bins)
    tree.edge_counts = counts
    tree.edge_bins = np.concatenate(bins) if bins else np.zeros(0, np.int32)
    return tree


def merge_trees(trees: list[Tree], options: SEOptions) -> OpenCVForest:
    """The trees in OpenCV's layout: padded to a common node count, edge bins as one global running sum."""
    if options.numberOfTrees != len(trees):
        raise ValueError(f"options say {options.numberOfTrees} trees, got {len(trees)}")
    n_nodes = max(len(tree.childs) for tree in trees)

    def padded(field: str, dtype: type) -> np.ndarray:
        out = np.zeros((len(trees), n_nodes), dtype)
        for index, tree in enumerate(trees):
            values = getattr(tree, field)
            out[index, :len(values)] = values
        return out

    counts = padded("edge_counts", np.int64).reshape(-1)
    return OpenCVForest(
        options=options, childs=padded("childs", np.int32), feature_ids=padded("feature_ids", np.int32),
        thresholds=padded("thresholds", np.float32),
        edge_boundaries=np.concatenate([[0], np.cumsum(counts)]).astype(np.int32),
        edge_bins=np.concatenate([tree.edge_bins for tree in trees]).astype(np.int32),
    )
