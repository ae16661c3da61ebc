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


def nt_xent(view1: torch.Tensor, view2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent (Moon et al. 2022, Eq. 1, the instance scheme), over [B, S, D] L2-normalised views.

    Every (view, image, position) is an anchor; its positive is the same position of the other view of its
    image. Its denominator holds every vector of every other view (k != i): the paired view's other positions
    and both views of the other images. With S = 1 this is Eq. 1 exactly. Returns the mean over the 2 * B * S
    anchors.
    """
    batch, positions, dim = view1.shape
    z = torch.cat([view1, view2]).reshape(-1, dim)  # rows ordered (view, image, position)
    owner = torch.arange(2 * batch, device=z.device).repeat_interleave(positions)  # which view a row comes from
    logits = (z @ z.t() / temperature).masked_fill(owner[:, None] == owner[None, :], float("-inf"))
    half = batch * positions
    positive = (torch.arange(2 * half, device=z.device) + half) % (2 * half)  # same (image, position), other view
    return F.cross_entropy(logits, positive)


def index_info_nce(view1: torch.Tensor, view2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Index-wise dense InfoNCE (Moon et al. 2022, Eq. 2 with Sec. 3.3's pairs), over [B, S, D] L2-normalised views.

    The anchor h(1,p)'s positive is h(2,p), the same index of the other view; its negatives are the other
    vectors of the other view, "neg = h~2" (Sec. 3.3): the S - 1 other indices of its own image (the noisy
    negatives) and the (B - 1) * S vectors of the other images, "~12.5k dense features of other images" at
    batch 256 and 7 x 7 cells (255 x 49 = 12,495; both views would be twice that). Symmetric: each view's
    vectors are anchors once; returns the mean over the 2 * B * S anchors.
    """
    dim = view1.shape[-1]
    one, two = view1.reshape(-1, dim), view2.reshape(-1, dim)
    logits = one @ two.t() / temperature  # [anchor of view 1, vector of view 2]
    positive = torch.arange(one.shape[0], device=one.device)  # same (image, position)
    return (F.cross_entropy(logits, positive) + F.cross_entropy(logits.t(), positive)) / 2


def alignment(x: torch.Tensor, y: torch.Tensor, alpha: float) -> torch.Tensor:
    """Wang & Isola's L_align: the mean of ||x - y||^alpha over positive pairs (rows of [..., D]).

    Dense pairs [B, S, D] are averaged over images and positions (Moon et al. Sec. 3.2, index-wise).
    Moon et al. print L_a as the mean of -cos(x, y); for unit vectors and alpha = 2, ||x - y||^2 =
    2 - 2 cos(x, y), the same objective up to an affine map.
    """
    return (x - y).norm(dim=-1).pow(alpha).mean()


def uniformity(x: torch.Tensor, t: float) -> torch.Tensor:
    """Wang & Isola's L_uniform: log of the mean Gaussian potential exp(-t ||x_i - x_j||^2) over the
    distinct pairs i != j of the rows of x [N, D] (dense: the B * S vectors of a view, taken i.i.d.,
    Moon et al. Sec. 3.2). Squared distances are expanded from dot products rather than taken from
    torch.pdist, whose square root has no gradient when two rows coincide; the self-pairs are masked
    before the sum, not subtracted after it, which would cancel the small potentials of a uniform set.
    """
    n = x.shape[0]
    sq_norm = (x * x).sum(dim=1)
    sq_dist = (sq_norm[:, None] + sq_norm[None, :] - 2 * x @ x.t()).clamp_min(0)
    self_pairs = torch.eye(n, dtype=torch.bool, device=x.device)
    return (sq_dist.masked_fill(self_pairs, float("inf")).mul(-t).exp().sum() / (n * (n - 1))).log()
