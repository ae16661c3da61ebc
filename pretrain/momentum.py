"""Momentum (EMA) copies of the online networks."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def momentum_copy(online: nn.Module) -> nn.Module:
    """A frozen copy of `online` that only `ema_update` changes."""
    target = copy.deepcopy(online)
    for param in target.parameters():
        param.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target <- m * target + (1 - m) * online, parameters only: as in MoCo, the target's BN keeps
    its own running statistics from the batches it sees."""
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        t.mul_(momentum).add_(o.detach(), alpha=1 - momentum)


def ema_update_pairs(pairs: list[tuple[nn.Module, nn.Module]], momentum: float) -> None:
    """`ema_update` of every (target, online) pair of a method's momentum networks."""
    for target, online in pairs:
        ema_update(target, online, momentum)


def cosine_momentum(base: float, iteration: int, total: int) -> float:
    """BYOL's target-momentum schedule (Grill et al. 2020, Sec. 3.2): base at the start, 1 at the end,
    1 - (1 - base) * (cos(pi * k / K) + 1) / 2."""
    return 1 - (1 - base) * (math.cos(math.pi * iteration / total) + 1) / 2
