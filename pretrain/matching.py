"""Dense positive-pair matching between the cells of two views."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def argmax_match(query_feats: torch.Tensor, key_feats: torch.Tensor, grid: int) -> torch.Tensor:
    """DenseCL's winner-takes-all matching (HoughCL Sec. 2.2).

    Both backbone maps [B, C, H, W] are average-pooled to grid x grid; for every query cell the
    index of the most cosine-similar key cell is returned, [B, grid * grid].
    """
    q = F.normalize(F.adaptive_avg_pool2d(query_feats, grid).flatten(2), dim=1)
    k = F.normalize(F.adaptive_avg_pool2d(key_feats, grid).flatten(2), dim=1)
    return torch.einsum("bcq,bck->bqk", q, k).argmax(dim=2)
