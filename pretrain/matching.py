"""Dense positive-pair matching between the cells of two views."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def cell_similarity(query_feats: torch.Tensor, key_feats: torch.Tensor, grid: int) -> torch.Tensor:
    """Cosine similarity [B, grid * grid, grid * grid] of the maps' cells after average pooling to grid x grid."""
    q = F.normalize(F.adaptive_avg_pool2d(query_feats, grid).flatten(2), dim=1)
    k = F.normalize(F.adaptive_avg_pool2d(key_feats, grid).flatten(2), dim=1)
    return torch.einsum("bcq,bck->bqk", q, k)


def argmax_match(query_feats: torch.Tensor, key_feats: torch.Tensor, grid: int) -> torch.Tensor:
    """DenseCL's winner-takes-all matching (HoughCL Sec. 2.2).

    Both backbone maps [B, C, H, W] are average-pooled to grid x grid; for every query cell the
    index of the most cosine-similar key cell is returned, [B, grid * grid].
    """
    return cell_similarity(query_feats, key_feats, grid).argmax(dim=2)


def offset_bin_ids(grid: int, offset_bins: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Hough-space bin [grid^2, grid^2] of the offset (key cell - query cell) of every candidate match.

    As in Min et al. 2019 (hpf `build_hspace`), the offset space spans both maps' extents, [-1, 1) of
    a view's side per axis, and is cut into offset_bins x offset_bins bins, row-major (y, x). In cell
    units an offset d lies in [-(grid - 1), grid - 1], so its bin floor((d + grid) * offset_bins / (2 grid))
    is computed in integers: no rounding can put two equal offsets in different bins.
    """
    cells = torch.arange(grid, device=device)
    row, col = (c.reshape(-1) for c in torch.meshgrid(cells, cells, indexing="ij"))
    dy = row[None, :] - row[:, None]  # [query, key]
    dx = col[None, :] - col[:, None]
    by = (dy + grid) * offset_bins // (2 * grid)
    bx = (dx + grid) * offset_bins // (2 * grid)
    return by * offset_bins + bx


def gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    """A size x size discretised Gaussian summing to 1 (hpf `geometry.gaussian2d` normalises it too); size is odd
    so that the kernel is centred on a bin."""
    centre = (size - 1) / 2
    x = torch.arange(size, dtype=torch.float32) - centre
    g = torch.exp(-(x[None, :] ** 2 + x[:, None] ** 2) / (2 * sigma**2))
    return g / g.sum()


def phm_confidence(appearance: torch.Tensor, grid: int, offset_bins: int, kernel: torch.Tensor) -> torch.Tensor:
    """Probabilistic Hough matching (HoughCL Eq. 1): p(m|D) = p(m_a) x (Gaussian-smoothed votes at m's offset).

    appearance: p(m_a) of every (query cell, key cell) match, [B, grid^2, grid^2]; each match votes its
    p(m_a) into its offset bin, per image; the vote map is convolved (zero padding) with `kernel`, the
    discretised Gaussian p(m_g|x). Returns the confidences, same shape as `appearance`.
    """
    batch = appearance.shape[0]
    bins = offset_bin_ids(grid, offset_bins, appearance.device).flatten()
    # All images vote at once: the bin of a match depends only on its cells, not on the image.
    votes = appearance.new_zeros(batch, offset_bins * offset_bins).index_add_(1, bins, appearance.flatten(1))
    smoothed = F.conv2d(votes.view(batch, 1, offset_bins, offset_bins), kernel.to(votes)[None, None],
                        padding=kernel.shape[-1] // 2).flatten(1)
    return appearance * smoothed[:, bins].view_as(appearance)


def phm_match(query_feats: torch.Tensor, key_feats: torch.Tensor, grid: int, appearance_power: float,
              offset_bins: int, kernel_size: int, kernel_sigma: float) -> torch.Tensor:
    """HoughCL's matching (Sec. 3): for every query cell, the key cell of highest PHM confidence, [B, grid^2].

    Pools the backbone maps as `argmax_match` does; p(m_a) = ReLU(cos)^appearance_power (the exponent
    suppresses weak, noisy similarities so they barely vote).
    """
    appearance = cell_similarity(query_feats, key_feats, grid).clamp(min=0).pow(appearance_power)
    return phm_confidence(appearance, grid, offset_bins, gaussian_kernel(kernel_size, kernel_sigma)).argmax(dim=2)
