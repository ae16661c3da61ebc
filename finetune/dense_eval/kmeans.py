"""Seeded K-means (k-means++ initialisation, then Lloyd iterations) on the rows of a tensor."""

from __future__ import annotations

import torch


def _kmeans_pp(points: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): each next centre drawn with probability ~ D(x)^2."""
    first = int(torch.randint(points.shape[0], (), generator=generator))
    centres = [points[first]]
    nearest = (points - points[first]).square().sum(dim=1)
    for _ in range(1, k):
        total = nearest.sum()
        # All points coincide with a centre: any draw is as good, so draw uniformly.
        probs = nearest / total if total > 0 else torch.ones_like(nearest)
        index = int(torch.multinomial(probs, 1, generator=generator))
        centres.append(points[index])
        nearest = torch.minimum(nearest, (points - points[index]).square().sum(dim=1))
    return torch.stack(centres)


def kmeans(points: torch.Tensor, k: int, iters: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster `points` [N, D] into at most `k` clusters (Euclidean); return (assignment [N], centres [k', D]).

    k' = min(k, N); a cluster that empties keeps its previous centre. Iterations stop early once the
    assignment no longer changes. The same generator state gives the same result.
    """
    if points.ndim != 2 or points.shape[0] == 0:
        raise ValueError(f"kmeans needs a non-empty [N, D] tensor, got shape {tuple(points.shape)}")
    points = points.float()
    centres = _kmeans_pp(points, min(k, points.shape[0]), generator)
    assign = torch.cdist(points, centres).argmin(dim=1)
    for _ in range(iters):
        counts = torch.bincount(assign, minlength=centres.shape[0]).unsqueeze(1)
        sums = torch.zeros_like(centres).index_add_(0, assign, points)
        centres = torch.where(counts > 0, sums / counts.clamp(min=1), centres)
        new_assign = torch.cdist(points, centres).argmin(dim=1)
        if torch.equal(new_assign, assign):
            break
        assign = new_assign
    return assign, centres
