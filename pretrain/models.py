"""Backbones and projection heads shared by the methods."""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from core.architectures import PRETRAIN_ARCHS
from core.errors import UserError


class ResNetTrunk(nn.Module):
    """A torchvision ResNet without avgpool/fc, returning the last feature map.

    Its parameters keep torchvision's names (conv1, bn1, layer1, ...), so its state dict *is*
    the exported backbone that the converters read.
    """

    STAGES = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")

    def __init__(self, arch: str) -> None:
        super().__init__()
        if arch not in PRETRAIN_ARCHS:
            raise UserError(f"unknown backbone '{arch}'; choose one of {', '.join(PRETRAIN_ARCHS)}")
        net = getattr(torchvision.models, arch)(weights=None)
        for name in self.STAGES:
            self.add_module(name, getattr(net, name))
        self.out_channels: int = net.fc.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer4(self.c4(x))

    def c4(self, x: torch.Tensor) -> torch.Tensor:
        """The res4 (layer3) map, stride 16: where the C4 detectors (and SoCo, D3SSL) pool regions."""
        for name in self.STAGES[:-1]:
            x = getattr(self, name)(x)
        return x


class GlobalHead(nn.Module):
    """MoCo v2's MLP head on the pooled feature: fc-ReLU-fc."""

    def __init__(self, in_channels: int, hidden: int, out: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out))

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.mlp(feature_map.mean(dim=(2, 3)))


class DenseHead(nn.Module):
    """DenseCL's dense head: the MLP as 1x1 convolutions, one vector per feature-map cell."""

    def __init__(self, in_channels: int, hidden: int, out: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Conv2d(in_channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, out, 1))

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.mlp(feature_map)


class BYOLHead(nn.Module):
    """BYOL's projector / predictor (Grill et al. 2020, Sec. 3.3): Linear-BN-ReLU-Linear.

    dense=True applies the same MLP to every cell as 1x1 convolutions (PixPro's and LC-loss's
    local projections); otherwise it takes pooled vectors [B, C], or pools a map [B, C, H, W] first.
    """

    def __init__(self, in_channels: int, hidden: int, out: int, dense: bool = False) -> None:
        super().__init__()
        if dense:
            layers = [nn.Conv2d(in_channels, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
                      nn.Conv2d(hidden, out, 1)]
        else:
            layers = [nn.Linear(in_channels, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                      nn.Linear(hidden, out)]
        self.dense = dense
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.dense and x.ndim == 4:
            x = x.mean(dim=(2, 3))
        return self.mlp(x)
