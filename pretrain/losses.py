"""Contrastive losses shared by the methods."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def info_nce(query: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE with one positive per query and a shared bank of negatives.

    query, positive: [N, D] L2-normalised; negatives: [K, D] L2-normalised. Returns the mean of
    -log(exp(q.p/t) / (exp(q.p/t) + sum_k exp(q.n_k/t))) over the N queries (MoCo Eq. 1, DenseCL Eq. 1).
    """
    pos = (query * positive).sum(dim=1, keepdim=True)
    neg = query @ negatives.t()
    logits = torch.cat([pos, neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(query.shape[0], dtype=torch.long, device=query.device))


def cosine_regression(prediction: torch.Tensor, target: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """BYOL's loss 2 - 2 cos(p, z) per row (Grill et al. 2020, Eq. 2), not reduced; `target` is not
    back-propagated through by the callers (it comes from the momentum network)."""
    return 2 - 2 * F.cosine_similarity(prediction, target, dim=dim)
