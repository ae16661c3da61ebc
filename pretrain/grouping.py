"""Pixel sampling from a region tree (hierarchical grouping, Zhang & Maire 2020, Sec. 3).

An anchor region R_a draws the regions of its positive pixels from Eq. 2 and those of its negative pixels
from Eq. 3, both functions of the tree distance d_T (`region_distances`); a pixel is then
uniform within its drawn region. Everything is driven by an explicit `torch.Generator`, so a sample
depends only on the generator's seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def region_distances(parents: np.ndarray, altitudes: np.ndarray, num_regions: int) -> np.ndarray:
    """d_T between every two leaf regions: the altitude of their lowest common ancestor (0 on the diagonal)."""
    # Ancestor sets by climbing; K <= 40 and the tree has < 2K nodes, so this is tiny.
    depth_limit = len(parents)
    chains = []
    for leaf in range(num_regions):
        chain, node = [leaf], leaf
        for _ in range(depth_limit):
            if parents[node] == node:
                break
            node = int(parents[node])
            chain.append(node)
        chains.append(chain)
    distances = np.zeros((num_regions, num_regions), dtype=np.float32)
    for a in range(num_regions):
        ancestors_a = set(chains[a])
        for b in range(a + 1, num_regions):
            lca = next(node for node in chains[b] if node in ancestors_a)
            distances[a, b] = distances[b, a] = altitudes[lca]
    return distances


def positive_probabilities(distances: torch.Tensor, sigma: float) -> torch.Tensor:
    """Eq. 2: row a is P(region b holds a positive of an anchor in R_a), over all regions b.

    exp(-d_T(R_a, R_b) / sigma) normalised by sum_{m != a} exp(-d_T(R_a, R_m) / sigma) + 1: the self term is
    cast to 1 whatever the diagonal of `distances` holds. distances: [K, K]; returns [K, K], rows sum to 1.
    """
    weights = torch.exp(-distances / sigma)
    weights = weights.masked_fill(torch.eye(len(distances), dtype=torch.bool, device=distances.device), 1.0)
    return weights / weights.sum(dim=1, keepdim=True)


def negative_probabilities(distances: torch.Tensor, sigma: float) -> torch.Tensor:
    """Eq. 3: row a is P(region b holds a negative of an anchor in R_a): exp(d_T / sigma) normalised over
    b != a, 0 on the diagonal (computed as a softmax, so large d_T / sigma cannot overflow).

    With a single region (K = 1) no negative exists in the image: the row is all zeros rather than 0/0, and
    the anchor's negatives then come only from other images (`cross_image_negatives` of the method).
    """
    if len(distances) == 1:
        return torch.zeros_like(distances)
    logits = (distances / sigma).masked_fill(torch.eye(len(distances), dtype=torch.bool, device=distances.device),
                                             float("-inf"))
    return torch.softmax(logits, dim=1)


@dataclass(frozen=True)
class PixelSamples:
    """One image's sampled pixels as (x, y) pixel centres in [0, 1] source-image coordinates, and their regions.

    anchors [R, 2], positives [R, P, 2], negatives [R, N, 2]; *_regions hold the leaf-region index of each
    point ([R], [R, P], [R, N]). negatives_valid [R] is False where the sampling window holds a single region,
    so Eq. 3 has nothing to draw: those negatives repeat the anchor and must be masked out.
    """

    anchors: torch.Tensor
    positives: torch.Tensor
    negatives: torch.Tensor
    anchor_regions: torch.Tensor
    positive_regions: torch.Tensor
    negative_regions: torch.Tensor
    negatives_valid: torch.Tensor


def sample_pixels(labels: np.ndarray, distances: torch.Tensor, regions: int, positives: int, negatives: int,
                  sigma: float, gen: torch.Generator, window: tuple[float, float, float, float] | None = None,
                  ) -> PixelSamples:
    """Anchors, positives and negatives of one image (Sec. 3 "Pixel Sampling from Region Metric").

    labels: (H, W) leaf region of every pixel (non-negative integers); distances: [K, K] d_T between leaf
    regions. Only pixels whose centres lie in `window` (x1, y1, x2, y2 in [0, 1]; all pixels when it holds
    none) are drawn, and Eq. 2 / 3 run over the regions present there. `regions` anchor regions are drawn
    uniformly, distinct while the window has enough of them; each gets one uniform anchor pixel, `positives`
    pixels from Eq. 2 and `negatives` pixels from Eq. 3, each a region draw then a uniform pixel of it.
    """
    # Pixel bookkeeping in numpy: its stable sort of small integer labels is a radix sort, far faster than torch's.
    height, width = labels.shape
    pixels = np.arange(height * width)
    if window is not None:
        x1, y1, x2, y2 = window
        cx, cy = (np.arange(width) + 0.5) / width, (np.arange(height) + 0.5) / height
        inside = np.outer((cy >= y1) & (cy <= y2), (cx >= x1) & (cx <= x2)).reshape(-1)
        if inside.any():
            pixels = pixels[inside]
    pixel_labels = labels.reshape(-1)[pixels]
    # Pixels grouped by region (ascending label, as `present`): region r's are by_region[starts[r]:][:counts[r]].
    by_region = torch.from_numpy(pixels[np.argsort(pixel_labels, kind="stable")])
    all_counts = np.bincount(pixel_labels)
    present = torch.from_numpy(np.flatnonzero(all_counts))
    counts = torch.from_numpy(all_counts[present.numpy()])
    starts = torch.cumsum(counts, 0) - counts

    def uniform_pixel(local: torch.Tensor) -> torch.Tensor:
        offset = (torch.rand(local.shape, generator=gen) * counts[local]).long()
        return by_region[starts[local] + torch.minimum(offset, counts[local] - 1)]

    num = len(present)
    anchor = torch.randperm(num, generator=gen)[:regions]
    if num < regions:  # fewer regions than anchors: the rest repeat random regions
        anchor = torch.cat([anchor, torch.randint(num, (regions - num,), generator=gen)])
    local_distances = distances[present][:, present]
    positive = torch.multinomial(positive_probabilities(local_distances, sigma)[anchor], positives,
                                 replacement=True, generator=gen)
    if num > 1:
        negative = torch.multinomial(negative_probabilities(local_distances, sigma)[anchor], negatives,
                                     replacement=True, generator=gen)
    else:
        negative = anchor[:, None].expand(regions, negatives)

    def coords(index: torch.Tensor) -> torch.Tensor:
        return torch.stack([(index % width + 0.5) / width, (index // width + 0.5) / height], dim=-1)

    return PixelSamples(
        anchors=coords(uniform_pixel(anchor)),
        positives=coords(uniform_pixel(positive)),
        negatives=coords(uniform_pixel(negative)),
        anchor_regions=present[anchor],
        positive_regions=present[positive],
        negative_regions=present[negative],
        negatives_valid=torch.full((regions,), num > 1),
    )
