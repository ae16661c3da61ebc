"""Region hierarchies from an edge map: oriented watershed + ultrametric contour map (OWT-UCM).

Hierarchical grouping (Zhang & Maire, NeurIPS 2020, Sec. 3-4.1) turns structured-edge maps into a
region tree T with OWT-UCM (Arbelaez et al., TPAMI 2011) and samples pixel pairs from the tree
distance d_T(R1, R2): the height at which the two regions merge. Here:

1. pixel maps -> 4-adjacency graph: an edge between two pixels takes the larger edge strength of
   the two and that pixel's orientation (the orientation of the edge normal, as OpenCV's
   `computeOrientation` and higra both define it);
2. higra's `mean_pb_hierarchy` is Arbelaez's OWT-UCM: watershed of the edge graph, watershed arcs
   fitted with straight segments and re-weighted by |cos| of the angle between each segment and
   the edge orientation, then greedy merging of the regions with the weakest mean boundary
   (average linkage weighted by boundary length);
3. altitudes made increasing ("max" monotonic regression: a parent never lies below a child);
4. the paper's cut: the finest level keeps at most `max_regions` (40) regions; the tree above that
   level is what a shard stores.
"""

from __future__ import annotations

from dataclasses import dataclass

import higra as hg
import numpy as np

from core.errors import UserError


@dataclass(frozen=True)
class RegionTree:
    """The leaf regions of an image and the merge tree above them.

    labels: (H, W) region index of every pixel, 0..K-1 (the finest level, K <= max_regions).
    parents: (N,) parent of every tree node; nodes 0..K-1 are the leaf regions, the root is its own
        parent, and a parent always has a larger index than its children.
    altitudes: (N,) merge height of every node (0 for leaves), increasing towards the root.
    """

    labels: np.ndarray
    parents: np.ndarray
    altitudes: np.ndarray

    @property
    def num_regions(self) -> int:
        return int(self.labels.max()) + 1


def edge_graph_weights(
    edges: np.ndarray, orientations: np.ndarray
) -> tuple[hg.UndirectedGraph, np.ndarray, np.ndarray]:
    """The 4-adjacency graph of an image with boundary strength and orientation on its edges."""
    graph = hg.get_4_adjacency_graph(edges.shape)
    sources, targets = graph.edge_list()
    flat_edges, flat_orient = edges.ravel().astype(np.float64), orientations.ravel().astype(np.float64)
    stronger = np.where(flat_edges[sources] >= flat_edges[targets], sources, targets)
    return graph, flat_edges[stronger], flat_orient[stronger]


def owt_ucm(edges: np.ndarray, orientations: np.ndarray) -> tuple[hg.Tree, np.ndarray, hg.UndirectedGraph]:
    """The full OWT-UCM hierarchy on watershed superpixels: (tree, increasing altitudes, pixel graph)."""
    if edges.shape != orientations.shape or edges.ndim != 2:
        raise UserError(f"edge map {edges.shape} and orientation map {orientations.shape} must be equal 2-D shapes")
    if not np.isfinite(edges).all():
        raise UserError("the edge map has NaN or inf values; check the edge model and the input image")
    graph, weights, edge_orientations = edge_graph_weights(edges, orientations)
    tree, altitudes = hg.mean_pb_hierarchy(graph, weights, edges.shape, edge_orientations=edge_orientations)
    return tree, hg.tree_monotonic_regression(tree, altitudes, "max"), graph


def ucm_map(tree: hg.Tree, altitudes: np.ndarray, graph: hg.UndirectedGraph, shape: tuple[int, int]) -> np.ndarray:
    """The ultrametric contour map in the BSDS `ucm2` layout: (2H+1, 2W+1), boundaries between pixels."""
    saliency = hg.saliency(tree, altitudes)
    khalimsky = hg.graph_4_adjacency_2_khalimsky(graph, saliency, shape)
    return np.pad(khalimsky, 1).astype(np.float32)


def cut_finest(tree: hg.Tree, altitudes: np.ndarray, max_regions: int) -> RegionTree:
    """Cut the hierarchy at the lowest level with at most `max_regions` regions (paper Sec. 4.1)."""
    if max_regions < 1:
        raise UserError(f"max_regions must be >= 1, got {max_regions}")
    num_leaves = tree.num_leaves()
    parents = tree.parents()
    internal = np.arange(num_leaves, tree.num_vertices())
    # With increasing altitudes, "every node at or below threshold t is merged" is a valid cut; the
    # lowest t leaving <= max_regions regions merges the (num_leaves - max_regions) lowest nodes.
    merges_needed = num_leaves - max_regions
    if merges_needed > 0:
        threshold = np.sort(altitudes[internal])[merges_needed - 1]
        merged = np.zeros(tree.num_vertices(), dtype=bool)
        merged[internal] = altitudes[internal] <= threshold
    else:
        merged = np.zeros(tree.num_vertices(), dtype=bool)
    merged[:num_leaves] = True
    # The cut's regions: merged nodes whose parent is not merged (the root when everything merged).
    is_region = merged & ~merged[parents]
    is_region[tree.root()] |= merged[tree.root()]
    kept = np.flatnonzero(is_region | ~merged)  # regions first (they are below), then upper nodes
    kept = np.concatenate([kept[is_region[kept]], kept[~is_region[kept]]])
    new_index = np.full(tree.num_vertices(), -1, dtype=np.int64)
    new_index[kept] = np.arange(kept.size)
    # Every watershed leaf's region: the first region node on its way up (pointer jumping).
    ancestor = np.where(is_region, np.arange(tree.num_vertices()), parents)
    for _ in range(int(np.ceil(np.log2(tree.num_vertices() + 1))) + 1):
        ancestor = np.where(is_region[ancestor], ancestor, ancestor[ancestor])
    leaf_region = new_index[ancestor[:num_leaves]]
    new_parents = new_index[parents[kept]]
    root = new_index[tree.root()]
    new_parents[root] = root
    new_altitudes = altitudes[kept].astype(np.float32)
    new_altitudes[: int(is_region.sum())] = 0.0
    vertex_labels = hg.CptHierarchy.get_leaf_graph(tree)  # the region adjacency graph of the superpixels
    pixel_labels = hg.rag_back_project_vertex_weights(vertex_labels, leaf_region)
    return RegionTree(pixel_labels.astype(np.uint8 if max_regions <= 255 else np.int32), new_parents, new_altitudes)
