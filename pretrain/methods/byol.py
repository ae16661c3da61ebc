"""BYOL (Grill et al. 2020): an online encoder + projector + predictor regresses an EMA target network's
projection of the other view with L = 2 - 2 cos, symmetrised over the two views; no negatives."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pretrain.losses import cosine_regression
from pretrain.methods import PretrainMethod, register
from pretrain.models import BYOLHead, ResNetTrunk
from pretrain.momentum import cosine_momentum, ema_update_pairs, momentum_copy
from pretrain.views import ViewConfig, byol_views


def symmetric_regression(predictions: tuple[torch.Tensor, torch.Tensor],
                         targets: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """BYOL's L + L~ (Grill et al. 2020, Eq. 2 and its symmetrisation): each view's online prediction
    regresses the other view's target projection; the two terms are summed, then averaged over the batch."""
    return (cosine_regression(predictions[0], targets[1]) + cosine_regression(predictions[1], targets[0])).mean()


@register("byol")
class BYOL(PretrainMethod):
    def __init__(self, arch: str, cfg: dict[str, Any]) -> None:
        super().__init__()
        byol = cfg["byol"]
        self.base_momentum: float = byol["momentum"]
        self.backbone = ResNetTrunk(arch)
        self.projector = BYOLHead(self.backbone.out_channels, byol["projector_hidden"], byol["dim"])
        self.predictor = BYOLHead(byol["dim"], byol["predictor_hidden"], byol["dim"])  # online network only
        self.target_backbone = momentum_copy(self.backbone)
        self.target_projector = momentum_copy(self.projector)

    @classmethod
    def view_configs(cls, cfg: dict[str, Any]) -> tuple[ViewConfig, ViewConfig]:
        return byol_views(cfg["image_size"])

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(target, online) module pairs the EMA updates; subclasses add their heads."""
        return [(self.target_backbone, self.backbone), (self.target_projector, self.projector)]

    def encode(self, view1: torch.Tensor, view2: torch.Tensor, iteration: int,
               total: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """EMA-update the target networks, then the online and the target backbone maps of both views."""
        # The target catches up with the online weights of the steps so far; the momentum follows BYOL's
        # cosine schedule from its base value to 1 over the run (Grill et al. 2020, Sec. 3.2).
        ema_update_pairs(self.momentum_pairs(), cosine_momentum(self.base_momentum, iteration, total))
        # One pass per view, so BatchNorm normalises each view's batch on its own.
        online_maps = [self.backbone(view1), self.backbone(view2)]
        with torch.no_grad():
            target_maps = [self.target_backbone(view1), self.target_backbone(view2)]
        return online_maps, target_maps

    def global_loss(self, online_maps: list[torch.Tensor], target_maps: list[torch.Tensor]) -> torch.Tensor:
        predictions = (self.predictor(self.projector(online_maps[0])), self.predictor(self.projector(online_maps[1])))
        with torch.no_grad():
            targets = (self.target_projector(target_maps[0]), self.target_projector(target_maps[1]))
        return symmetric_regression(predictions, targets)

    def forward(self, view1: torch.Tensor, view2: torch.Tensor, geom1: torch.Tensor, geom2: torch.Tensor,
                iteration: int, total: int) -> dict[str, torch.Tensor]:
        online_maps, target_maps = self.encode(view1, view2, iteration, total)
        loss = self.global_loss(online_maps, target_maps)
        return {"loss": loss, "loss_global": loss.detach()}
