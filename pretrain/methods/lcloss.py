"""LC-loss (Islam et al., WACV 2023): BYOL plus a local contrastive loss at known correspondences between
the target network's local features of a colour-only view I_c and the online network's local features of
a cropped, flipped view I_sc; L = (1 - alpha) L_G + alpha L_LC (Eq. 5).

L_G (Eq. 1) is defined "for a single input", one prediction against one target, and Eq. 5 weighs it
against the one-directional L_LC. BYOL's symmetrised loss sums the two directions, which would double
L_G's weight against alpha L_LC; L_G here is their mean, the value of Eq. 1 per direction, so alpha
balances the terms as Eq. 5 writes them (docs/protocol_notes.md).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from pretrain.methods import register
from pretrain.methods.byol import BYOL
from pretrain.momentum import momentum_copy
from pretrain.views import ViewConfig, byol_views, source_to_view, view_grid_coords


def local_projection(width: int, dim: int) -> nn.Sequential:
    """Sec. 4.1's local projection branch as listed: a 1x1 convolution width -> width (2048 on ResNet-50)
    followed by BatchNorm, then a 1x1 convolution -> dim (256). The text names no activation between them."""
    return nn.Sequential(nn.Conv2d(width, width, 1), nn.BatchNorm2d(width), nn.Conv2d(width, dim, 1))


def correspondence_nll(target_c: torch.Tensor, online_sc: torch.Tensor, temperature: float) -> torch.Tensor:
    """Eq. 2-3: for every grid point p_c of I_c, the NLL that each location of I_sc is its match.

    target_c, online_sc: local features [B, D, h, w] of I_c (target) and I_sc (online). Returns
    [B, h * w, h, w]: row-major p_c, then NLL(p_c, :) laid out on I_sc's feature grid.
    """
    batch, _, h, w = online_sc.shape
    similarity = F.normalize(target_c.flatten(2), dim=1).transpose(1, 2) @ F.normalize(online_sc.flatten(2), dim=1)
    return -F.log_softmax(similarity / temperature, dim=2).view(batch, -1, h, w)


def correspondences(geom_c: torch.Tensor, geom_sc: torch.Tensor, grid: int) -> torch.Tensor:
    """Where the centres of I_c's grid x grid feature cells land in I_sc: [B, grid * grid, 2] (x, y) in I_sc's
    [0, 1] coordinates, outside [0, 1] when the crop of I_sc does not contain them."""
    return source_to_view(view_grid_coords(geom_c, grid), geom_sc)


def sample_nll(nll: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """NLL(p_c, p_sc) at sub-pixel p_sc by bilinear interpolation of each map NLL(p_c, :) (Sec. 3).

    nll: [B, N, h, w] from `correspondence_nll`; points: [B, N, 2] from `correspondences`. Returns [B, N].
    """
    batch, n, h, w = nll.shape
    # With align_corners=False, grid_sample puts cell k's centre at (k + 0.5) / size, the convention of
    # view_grid_coords; border padding holds the outer cells' values between their centres and the view's edge.
    grid = (2 * points - 1).reshape(batch * n, 1, 1, 2)
    sampled = F.grid_sample(nll.reshape(batch * n, 1, h, w), grid.to(nll.dtype), mode="bilinear",
                            padding_mode="border", align_corners=False)
    return sampled.view(batch, n)


def local_contrastive_loss(nll_at_points: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Eq. 4: per image, the mean NLL over the pairs whose p_sc falls inside I_sc; averaged over the images
    that have any such pair (a small crop may contain no grid point of I_c)."""
    inside = ((points >= 0) & (points <= 1)).all(dim=2).to(nll_at_points.dtype)
    pairs = inside.sum(dim=1)
    per_image = (nll_at_points * inside).sum(dim=1) / pairs.clamp(min=1)
    return per_image.sum() / (pairs > 0).sum().clamp(min=1)


@register("lcloss")
class LCLoss(BYOL):
    def __init__(self, arch: str, cfg: dict[str, Any]) -> None:
        super().__init__(arch, cfg)
        lcloss = cfg["lcloss"]
        self.alpha: float = lcloss["alpha"]
        self.temperature: float = lcloss["temperature"]
        # On the last stage's map, before pooling (Sec. 4.1).
        self.local_head = local_projection(self.backbone.out_channels, lcloss["local_dim"])
        self.target_local_head = momentum_copy(self.local_head)

    @classmethod
    def view_configs(cls, cfg: dict[str, Any]) -> tuple[ViewConfig, ViewConfig]:
        """(I_c, I_sc): I_c is BYOL's first view without crop or flip, the whole image resized (Sec. 3);
        I_sc is BYOL's second view (Sec. 4.1: BYOL's augmentation)."""
        colour, spatial = byol_views(cfg["image_size"])
        return replace(colour, crop=False, flip_prob=0.0), spatial

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [*super().momentum_pairs(), (self.target_local_head, self.local_head)]

    def local_loss(self, online_sc_map: torch.Tensor, target_c_map: torch.Tensor, geom_c: torch.Tensor,
                   geom_sc: torch.Tensor) -> torch.Tensor:
        """Sec. 3: I_sc feeds the online local branch, I_c the target one; one direction only, as in the paper."""
        online_sc = self.local_head(online_sc_map)
        with torch.no_grad():
            target_c = self.target_local_head(target_c_map)
        nll = correspondence_nll(target_c, online_sc, self.temperature)
        points = correspondences(geom_c, geom_sc, grid=online_sc.shape[-1])
        return local_contrastive_loss(sample_nll(nll, points), points)

    def forward(self, view1: torch.Tensor, view2: torch.Tensor, geom1: torch.Tensor, geom2: torch.Tensor,
                iteration: int, total: int) -> dict[str, torch.Tensor]:
        # view1 is I_c and view2 is I_sc (the order of view_configs); L_G is BYOL's loss between them.
        online_maps, target_maps = self.encode(view1, view2, iteration, total)
        loss_global = self.global_loss(online_maps, target_maps) / 2  # the mean of BYOL's two directions
        loss_local = self.local_loss(online_maps[1], target_maps[0], geom1, geom2)
        loss = (1 - self.alpha) * loss_global + self.alpha * loss_local
        return {"loss": loss, "loss_global": loss_global.detach(), "loss_local": loss_local.detach()}
