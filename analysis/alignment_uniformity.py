"""Held-out alignment and uniformity of a pretrained backbone (Moon et al. 2022, Figs. 2-3).

Measured on the backbone itself (the exported `backbone.pth`; the training heads are not exported),
at both levels whatever the pre-training scheme (Fig. 2 caption): instance = the L2-normalised
global-average-pooled last feature map, dense = its L2-normalised cells. L_a and L_u have the
training losses' definitions (`pretrain.losses.alignment` / `uniformity`).

Dense L_u is reported under both readings of the paper (dense_alignment_uniformity.md Sec. 3.3): "uniform"
is Wang & Isola's metric, which the paper says it adopts (t = 2, every pair of cells of all images), and
"uniform_same_index" the definition it prints: G(x, y) = exp(-||x - y||^2) (t = 1) over pairs of images
(i, j) at the same index p. Table 3's dense tau uses the printed one and shows the other beside it.

Positive pairs are two independently augmented views of each held-out image, paired index-wise
for the dense level: the pairs the paper trains on (Sec. 3.3). Two views sharing one crop would
make dense alignment degenerate (only photometric change), so we keep the training pairs although
their cells at one index need not show the same content. Views are drawn from (seed, image index)
only, so a measurement is deterministic.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch.nn import functional as F

from core.errors import UserError
from pretrain.data import PretrainImages, view_pair_images
from pretrain.losses import alignment
from pretrain.methods.index_contrast import index_contrast_views
from pretrain.models import ResNetTrunk

ALIGN_ALPHA = 2.0  # Wang & Isola, ssnl/align_uniform: align_loss default alpha = 2
UNIFORM_T = 2.0  # Wang & Isola, ssnl/align_uniform: uniform_loss default t = 2
PRINTED_T = 1.0  # dense_alignment_uniformity.md Sec. 3.3: G(x, y) = exp(-||x - y||^2)


def load_backbone(path: str | Path, arch: str) -> ResNetTrunk:
    """An exported torchvision-named backbone state dict (no fc) in a `ResNetTrunk`, in eval mode."""
    if not Path(path).is_file():
        raise UserError(f"backbone not found: {path}. Pretrain first (`python -m pretrain train`).")
    backbone = ResNetTrunk(arch)
    backbone.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return backbone.eval()


@torch.no_grad()
def encode_view_pairs(backbone: ResNetTrunk, dataset: PretrainImages, indices: list[int],
                      batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Backbone maps of both views of each image, as [N, H*W, C] (cells row-major), in eval mode."""
    maps: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
    for start in range(0, len(indices), batch_size):
        samples = [dataset[i] for i in indices[start:start + batch_size]]
        for v in (0, 1):
            feature = backbone(torch.stack([sample[f"view{v + 1}"] for sample in samples]))
            maps[v].append(feature.flatten(2).transpose(1, 2))
    return torch.cat(maps[0]), torch.cat(maps[1])


@torch.no_grad()
def pair_potential_sum(x: torch.Tensor, t: float, chunk: int = 512) -> float:
    """Sum of the Gaussian potentials exp(-t ||x_i - x_j||^2) over the ordered distinct pairs i != j of the rows
    of x [N, D], in row blocks of `chunk` (chunk * N potentials in memory at a time, not N^2). Block sums are
    accumulated in float64 so that a sum of ~1e9 terms keeps float32's precision."""
    n = x.shape[0]
    sq_norm = (x * x).sum(dim=1)
    total = 0.0
    for start in range(0, n, chunk):
        rows = slice(start, min(start + chunk, n))
        sq_dist = (sq_norm[rows, None] + sq_norm[None, :] - 2 * x[rows] @ x.t()).clamp_min(0)
        potential = sq_dist.mul(-t).exp()
        local = torch.arange(rows.stop - rows.start)
        potential[local, local + rows.start] = 0  # a row's own potential is not a pair
        total += potential.sum(dtype=torch.float64).item()
    return total


def chunked_uniformity(x: torch.Tensor, t: float, chunk: int = 512) -> float:
    """`pretrain.losses.uniformity` of the rows of x [N, D], exact over all N (N - 1) ordered distinct pairs
    (`pair_potential_sum`): the dense level has N = images * H * W vectors (~50k for 1000 images at 224 px)."""
    n = x.shape[0]
    return math.log(pair_potential_sum(x, t, chunk) / (n * (n - 1)))


def same_index_uniformity(maps: torch.Tensor, t: float = PRINTED_T) -> float:
    """The paper's printed dense L_u of L2-normalised cells maps [N, HW, D]: the log of the mean, over ordered
    pairs of distinct images (i, j) and positions p, of exp(-t ||h_(i,p) - h_(j,p)||^2)."""
    n, cells = maps.shape[:2]
    total = sum(pair_potential_sum(maps[:, position], t) for position in range(cells))
    return math.log(total / (cells * n * (n - 1)))


def align_uniform_of(view1: torch.Tensor, view2: torch.Tensor, alpha: float, t: float) -> dict[str, float]:
    """L_a over the rows paired across [N, D] views; L_u the mean of both views' uniformity, as in training."""
    view1, view2 = F.normalize(view1, dim=-1), F.normalize(view2, dim=-1)
    return {"align": alignment(view1, view2, alpha).item(),
            "uniform": (chunked_uniformity(view1, t) + chunked_uniformity(view2, t)) / 2}


def measure_alignment_uniformity(backbone_path: str | Path, image_list: str, arch: str, image_size: int, seed: int,
                                 max_images: int | None, views: str = "densecl", batch_size: int = 32,
                                 align_alpha: float = ALIGN_ALPHA, uniform_t: float = UNIFORM_T) -> dict:
    """Instance- and dense-level L_a, L_u of a backbone on (up to `max_images` of) a held-out image list.

    `views`: the augmentation of the positive pairs, by its `index_contrast.views` name (the
    pre-training dataset's: "wang_isola" for STL-10, "densecl" for COCO). `max_images` (None: all)
    bounds the cost: dense uniformity is quadratic in images * H * W. The images are a seeded random subset.
    `batch_size` only groups the encoding: in eval mode BatchNorm uses running statistics, so the
    values do not depend on it.
    """
    view = index_contrast_views(views, image_size)
    dataset = view_pair_images(image_list, (view, view), seed)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    indices = sorted(order[:max_images])
    dense1, dense2 = encode_view_pairs(load_backbone(backbone_path, arch), dataset, indices, batch_size)
    dense = align_uniform_of(dense1.flatten(0, 1), dense2.flatten(0, 1), align_alpha, uniform_t)
    dense["uniform_same_index"] = sum(same_index_uniformity(F.normalize(maps, dim=-1)) for maps in (dense1, dense2)) / 2
    return {"instance": align_uniform_of(dense1.mean(dim=1), dense2.mean(dim=1), align_alpha, uniform_t),
            "dense": dense, "images": len(indices)}
