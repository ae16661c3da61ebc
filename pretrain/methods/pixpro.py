"""PixPro (Xie et al. 2021, "Propagate Yourself"): pixel-to-propagation consistency.

Both views go through an online backbone + dense projector and a momentum target copy. The online
projection is smoothed by the pixel propagation module (PPM) and regressed onto the target projection of
the other view at every pair of cells that lie close together in the source image.
The instance branch is left out: its weight is 0 in the released configs (`--pixpro-ins-loss-weight 0.`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from core.errors import UserError
from pretrain.data import Sample, SampleSource
from pretrain.methods import PretrainMethod, register
from pretrain.models import BYOLHead, ResNetTrunk
from pretrain.momentum import cosine_momentum, ema_update_pairs, momentum_copy
from pretrain.views import ViewConfig, byol_views, view_grid_coords


def pixel_index_coords(geometry: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """A view's crop as PixPro records it (its `RandomResizedCropCoord`): the first and last pixel of the crop
    over W - 1 and H - 1, i.e. j / (W - 1) and (j + w - 1) / (W - 1), where `make_view` records the crop's
    edges over W and H (j / W and (j + w) / W). The flip flag is kept; `view_grid_coords` reverses x for it as
    PixPro's flip swaps x1 and x2. geometry: [5] from `make_view` of a width x height image."""
    left, top, right, bottom = (geometry[:4] * torch.tensor([width, height, width, height])).round()
    x_span, y_span = max(width - 1, 1), max(height - 1, 1)
    return torch.stack([left / x_span, top / y_span, (right - 1) / x_span, (bottom - 1) / y_span, geometry[4]])


def positive_mask(geom1: torch.Tensor, geom2: torch.Tensor, grid: int, pos_ratio: float) -> torch.Tensor:
    """PixPro's positive pairs: cells i of view 1 and j of view 2 are a positive pair when their centres, warped
    back to the source image, are closer than `pos_ratio` bin diagonals.

    As in PixPro's code, distances are in [0, 1] source coordinates (`pixel_index_coords`: x and y each
    normalised by the image side minus one) and the bin diagonal is the larger of the two views' cell diagonals.
    Returns [B, grid * grid, grid * grid] booleans, rows view-1 cells, columns view-2 cells.
    """
    centres1, centres2 = view_grid_coords(geom1, grid), view_grid_coords(geom2, grid)
    # Explicit differences, not torch.cdist: its matrix-product path moves distances at the threshold.
    distance = (centres1[:, :, None] - centres2[:, None]).norm(dim=-1)
    diag1, diag2 = ((g[:, 2:4] - g[:, 0:2]).norm(dim=1) / grid for g in (geom1, geom2))
    return distance / torch.maximum(diag1, diag2)[:, None, None] < pos_ratio


def propagate(features: torch.Tensor, values: torch.Tensor, power: float) -> torch.Tensor:
    """PPM: y_i = sum_j max(cos(x_i, x_j), 0)^power * g(x_j) over all cells j of the same map.

    features: the projections x [B, C, H, W]; values: their transform g(x), L2-normalised per cell
    here as in PixPro's code (the paper leaves it implicit). Returns y [B, C, H, W].
    """
    x = F.normalize(features.flatten(2), dim=1)
    v = F.normalize(values.flatten(2), dim=1)
    # [B, HW (i), HW (j)]; negative cosines clamp to 0 (PixPro's `--pixpro-clamp-value` default 0).
    similarity = (x.transpose(1, 2) @ x).clamp(min=0) ** power
    return (v @ similarity.transpose(1, 2)).view_as(values)


def consistency_loss(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One direction of the PixPro loss: the mean over positive pairs (i, j) of 2 - 2 cos(y_i, x'_j) per image,
    then over the batch; an image without positive pairs contributes 0.

    PixPro's code regresses with -2 cos; BYOL's 2 - 2 cos (`losses.cosine_regression`) differs by a
    constant, so gradients and the tuned learning rate carry over. Computed for all cell pairs at once
    as one matrix product. prediction, target: [B, C, H, W]; mask: [B, HW, HW] from `positive_mask`.
    """
    y = F.normalize(prediction.flatten(2), dim=1)
    x = F.normalize(target.flatten(2), dim=1)
    per_pair = 2 - 2 * (y.transpose(1, 2) @ x)
    mask = mask.to(per_pair.dtype)
    per_image = (per_pair * mask).sum(dim=(1, 2)) / mask.sum(dim=(1, 2)).clamp(min=1)
    return per_image.mean()


def value_transform(layers: int, dim: int) -> nn.Module:
    """The PPM's transform g: identity, one 1x1 convolution, or two with BN-ReLU between, the choices of
    PixPro's `--pixpro-transform-layer`."""
    if layers == 0:
        return nn.Identity()
    if layers == 1:
        return nn.Conv2d(dim, dim, 1)
    if layers == 2:
        return BYOLHead(dim, dim, dim, dense=True)
    raise UserError(f"pretrain.pixpro.transform_layers is {layers}; PixPro defines 0, 1 or 2 (its default is 1).")


@register("pixpro")
class PixPro(PretrainMethod):
    # PixPro syncs BN across its 8 GPUs; a single process normalises over its own batch (same per view).
    @classmethod
    def view_configs(cls, cfg: dict[str, Any]) -> tuple[ViewConfig, ViewConfig]:
        return byol_views(cfg["image_size"])  # PixPro's `--aug BYOL --crop 0.08`

    @classmethod
    def make_sample(cls, source: SampleSource, gen: torch.Generator, cfg: dict[str, Any]) -> Sample:
        """Two views, their geometry in PixPro's pixel-index convention (`pixel_index_coords`)."""
        sample = super().make_sample(source, gen, cfg)
        width, height = source.image.size
        for key in ("geom1", "geom2"):
            sample[key] = pixel_index_coords(sample[key], width, height)
        return sample

    def __init__(self, arch: str, cfg: dict[str, Any]) -> None:
        super().__init__()
        pixpro = cfg["pixpro"]
        self.pos_ratio: float = pixpro["pos_ratio"]
        self.power: float = pixpro["power"]
        self.base_momentum: float = pixpro["momentum"]
        self.backbone = ResNetTrunk(arch)
        # PixPro's projector reads 2048 ResNet-50 channels; any trunk's own width here.
        self.projector = BYOLHead(self.backbone.out_channels, pixpro["hidden"], pixpro["dim"], dense=True)
        self.value_transform = value_transform(pixpro["transform_layers"], pixpro["dim"])
        self.target_backbone = momentum_copy(self.backbone)
        self.target_projector = momentum_copy(self.projector)

    def online(self, view: torch.Tensor) -> torch.Tensor:
        projection = self.projector(self.backbone(view))
        return propagate(projection, self.value_transform(projection), self.power)

    @torch.no_grad()
    def target(self, view: torch.Tensor) -> torch.Tensor:
        return self.target_projector(self.target_backbone(view))

    def forward(self, view1: torch.Tensor, view2: torch.Tensor, geom1: torch.Tensor, geom2: torch.Tensor,
                iteration: int, total: int) -> dict[str, torch.Tensor]:
        ema_update_pairs([(self.target_backbone, self.backbone), (self.target_projector, self.projector)],
                         cosine_momentum(self.base_momentum, iteration, total))
        # Each view passes the networks alone, so BN statistics are per view, as in PixPro.
        pred1, pred2 = self.online(view1), self.online(view2)
        target1, target2 = self.target(view1), self.target(view2)
        mask = positive_mask(geom1, geom2, pred1.shape[-1], self.pos_ratio)
        loss = consistency_loss(pred1, target2, mask) + consistency_loss(pred2, target1, mask.transpose(1, 2))
        return {"loss": loss}
