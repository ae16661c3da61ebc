"""Optimizers and learning-rate schedules of the pretraining protocols.

SGD (MoCo v2, DenseCL, HoughCL), LARS (BYOL, LC-loss, PixPro, SoCo, D3SSL; timm's maintained
implementation) or Adam (hierarchical grouping). The schedule is cosine after a linear warm-up, or
step decay x0.1 at given epochs (`lr_schedule: step`, hierarchical grouping's 25/45/60 of 80).
As in BYOL, biases and BatchNorm parameters get neither weight decay nor
LARS's trust-ratio adaptation: timm's Lars skips adaptation in groups with weight_decay 0.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from timm.optim import Lars
from torch import nn

OPTIMIZERS = ("sgd", "lars", "adam")


def peak_lr(cfg: dict[str, Any]) -> float:
    """base_lr, scaled linearly with the batch when the protocol states it per 256 images (LC-loss, BYOL)."""
    scale = cfg["batch_size"] / 256 if cfg["lr_scaling"] == "linear" else 1.0
    return cfg["base_lr"] * scale


def lr_at(cfg: dict[str, Any], iteration: int, total: int, warmup: int) -> float:
    """Linear warm-up over `warmup` iterations, then cosine annealing to zero or step decay (per iteration)."""
    peak = peak_lr(cfg)
    if iteration < warmup:
        return peak * (iteration + 1) / warmup
    if cfg["lr_schedule"] == "step":
        epoch = iteration // max(1, total // cfg["epochs"])
        return peak * 0.1 ** sum(epoch >= step for step in cfg["lr_step_epochs"])
    return 0.5 * peak * (1 + math.cos(math.pi * (iteration - warmup) / max(1, total - warmup)))


def build_optimizer(model: nn.Module, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if cfg["optimizer"] == "sgd":
        return torch.optim.SGD([p for _, p in trainable], lr=peak_lr(cfg), momentum=cfg["momentum"],
                               weight_decay=cfg["weight_decay"])
    if cfg["optimizer"] == "adam":
        return torch.optim.Adam([p for _, p in trainable], lr=peak_lr(cfg), weight_decay=cfg["weight_decay"])
    decayed = [p for _, p in trainable if p.ndim > 1]  # conv and linear weights
    exempt = [p for _, p in trainable if p.ndim <= 1]  # biases, BN weights and biases
    groups = [{"params": decayed, "weight_decay": cfg["weight_decay"]}, {"params": exempt, "weight_decay": 0.0}]
    return Lars(groups, lr=peak_lr(cfg), momentum=cfg["momentum"])
