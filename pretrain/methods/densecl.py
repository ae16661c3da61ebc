"""DenseCL (Wang et al. 2021; HoughCL Sec. 2): MoCo v2 plus a dense head whose cells are
contrasted with argmax-matched key cells, L = (1 - lambda) L_q + lambda L_r."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from pretrain.losses import info_nce
from pretrain.matching import argmax_match
from pretrain.methods import register
from pretrain.methods.mocov2 import MoCoV2
from pretrain.models import DenseHead
from pretrain.momentum import momentum_copy
from pretrain.queue import FeatureQueue


@register("densecl")
class DenseCL(MoCoV2):
    def __init__(self, arch: str, cfg: dict[str, Any]) -> None:
        super().__init__(arch, cfg)
        moco, densecl = cfg["moco"], cfg["densecl"]
        width = self.backbone.out_channels
        self.dense_head = DenseHead(width, width, moco["dim"])
        self.key_dense_head = momentum_copy(self.dense_head)
        # Negatives of the dense loss are pooled dense key vectors of other images (DenseCL's queue2).
        self.dense_queue = FeatureQueue(moco["queue_size"], moco["dim"])
        self.loss_lambda: float = densecl["loss_lambda"]
        # DenseCL's code holds lambda at 0 for its first iterations (DenseCLHook start_iters=1000).
        self.warmup_iters: int = densecl["warmup_iters"]

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [*super().momentum_pairs(), (self.key_dense_head, self.dense_head)]

    def match(self, query_map: torch.Tensor, key_map: torch.Tensor) -> torch.Tensor:
        """The positive key cell of every query cell, [B, S*S]: DenseCL's argmax (HoughCL overrides it).

        Matching uses the backbone maps, not the projected ones (HoughCL Sec. 2.2).
        """
        return argmax_match(query_map, key_map, grid=query_map.shape[-1])

    def dense_loss(self, query_map: torch.Tensor, key_map: torch.Tensor) -> torch.Tensor:
        q = F.normalize(self.dense_head(query_map).flatten(2), dim=1)  # [B, D, S*S]
        with torch.no_grad():
            k_raw = self.key_dense_head(key_map).flatten(2)
            k = F.normalize(k_raw, dim=1)
            match = self.match(query_map, key_map)
            positives = torch.gather(k, 2, match.unsqueeze(1).expand(-1, k.shape[1], -1))
        dim = q.shape[1]
        loss = info_nce(q.transpose(1, 2).reshape(-1, dim), positives.transpose(1, 2).reshape(-1, dim),
                        self.dense_queue.keys.clone(), self.temperature)
        self.dense_queue.push(F.normalize(k_raw.mean(dim=2), dim=1))
        return loss

    def forward(self, view1: torch.Tensor, view2: torch.Tensor, geom1: torch.Tensor, geom2: torch.Tensor,
                iteration: int, total: int) -> dict[str, torch.Tensor]:
        query_map, key_map = self.encode_pair(view1, view2, iteration)
        loss_global = self.global_loss(query_map, key_map)
        loss_dense = self.dense_loss(query_map, key_map)
        lam = self.loss_lambda if iteration >= self.warmup_iters else 0.0
        loss = (1 - lam) * loss_global + lam * loss_dense
        return {"loss": loss, "loss_global": loss_global.detach(), "loss_dense": loss_dense.detach()}
