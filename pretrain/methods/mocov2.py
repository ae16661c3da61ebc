"""MoCo v2 (Chen et al. 2020): momentum key encoder, queue of negatives, MLP head, InfoNCE."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from pretrain.distributed import batch_shuffle, batch_unshuffle
from pretrain.losses import info_nce
from pretrain.methods import PretrainMethod, register
from pretrain.models import GlobalHead, ResNetTrunk
from pretrain.momentum import ema_update_pairs, momentum_copy
from pretrain.queue import FeatureQueue


@register("mocov2")
class MoCoV2(PretrainMethod):
    def __init__(self, arch: str, cfg: dict[str, Any]) -> None:
        super().__init__()
        moco = cfg["moco"]
        self.temperature: float = moco["temperature"]
        self.momentum: float = moco["momentum"]
        self.backbone = ResNetTrunk(arch)
        width = self.backbone.out_channels
        self.global_head = GlobalHead(width, width, moco["dim"])  # hidden = backbone width, as MoCo v2
        self.key_backbone = momentum_copy(self.backbone)
        self.key_global_head = momentum_copy(self.global_head)
        self.queue = FeatureQueue(moco["queue_size"], moco["dim"])

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(key, online) module pairs the EMA updates; subclasses add their heads."""
        return [(self.key_backbone, self.backbone), (self.key_global_head, self.global_head)]

    def global_loss(self, query_map: torch.Tensor, key_map: torch.Tensor) -> torch.Tensor:
        q = F.normalize(self.global_head(query_map), dim=1)
        with torch.no_grad():
            k = F.normalize(self.key_global_head(key_map), dim=1)
        loss = info_nce(q, k, self.queue.keys.clone(), self.temperature)
        self.queue.push(k)
        return loss

    def encode_pair(self, view1: torch.Tensor, view2: torch.Tensor,
                    iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Momentum-update the key networks, then the query map of view1 and the key map of view2."""
        ema_update_pairs(self.momentum_pairs(), self.momentum)
        query_map = self.backbone(view1)
        with torch.no_grad():
            # MoCo's shuffle BN across processes (a no-op in one process). The heads have no BatchNorm, so
            # unshuffling the backbone map is the same as unshuffling the keys. torch.initial_seed() is the
            # run's seed (train seeds the global RNG with it), the same on every rank.
            shuffled, unshuffle = batch_shuffle(view2, torch.initial_seed(), iteration)
            key_map = batch_unshuffle(self.key_backbone(shuffled), unshuffle)
        return query_map, key_map

    def forward(self, view1: torch.Tensor, view2: torch.Tensor, geom1: torch.Tensor, geom2: torch.Tensor,
                iteration: int, total: int) -> dict[str, torch.Tensor]:
        query_map, key_map = self.encode_pair(view1, view2, iteration)
        loss = self.global_loss(query_map, key_map)
        return {"loss": loss, "loss_global": loss.detach()}
