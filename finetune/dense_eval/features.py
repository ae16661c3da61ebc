"""Frozen dense features of a torchvision ResNet stage, from backbone.pth or a seeded random init.

The hierarchical-grouping paper reads its 32-d hypercolumn embedding (Sec. 4.2); our exported
backbones hold the ResNet trunk only, so these evaluations read one trunk stage instead (the
protocol's `layer`), with the output stride reduced by turning the stride-2 convolutions of the
later stages into stride 1, without dilation, as label-propagation code does for ResNet-18 res4 at
stride 8 (Jabri et al. CRW, `code/resnet.py`; the paper does not name a stage for ResNets).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn

from core.errors import UserError
from finetune.common import frozen_resnet
from pretrain.models import ARCHS
from pretrain.views import IMAGENET_MEAN, IMAGENET_STD

LAYERS = ("layer1", "layer2", "layer3", "layer4")
# The natural output stride of each stage of a torchvision ResNet.
NATURAL_STRIDE = {"layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}


def check_layer(layer: str, stride: int) -> None:
    """UserError unless `layer` is a ResNet stage and `stride` an output stride it can reach."""
    if layer not in LAYERS:
        raise UserError(f"protocol layer must be one of {list(LAYERS)}, got {layer!r}.")
    allowed = [s for s in (4, 8, 16, 32) if s <= NATURAL_STRIDE[layer]]
    if stride not in allowed:
        raise UserError(f"protocol stride {stride!r} is not reachable at {layer}; choose one of {allowed}.")


class DenseFeatures(nn.Module):
    """A ResNet trunk up to `layer`, at output `stride`, returning L2-normalised maps [B, C, h, w]."""

    def __init__(self, net: torchvision.models.ResNet, layer: str, stride: int) -> None:
        super().__init__()
        check_layer(layer, stride)
        names = ("conv1", "bn1", "relu", "maxpool", *LAYERS[: LAYERS.index(layer) + 1])
        self.trunk = nn.Sequential(*(getattr(net, name) for name in names))
        natural = NATURAL_STRIDE[layer]
        # Undo the downsampling of the last stages, latest first, until the output stride is reached.
        for name in reversed(LAYERS[: LAYERS.index(layer) + 1]):
            if natural == stride:
                break
            for module in getattr(net, name)[0].modules():
                if isinstance(module, nn.Conv2d) and module.stride == (2, 2):
                    module.stride = (1, 1)
            natural //= 2
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.eval().requires_grad_(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: RGB in [0, 1], [B, 3, H, W]."""
        return F.normalize(self.trunk((images - self.mean) / self.std), dim=1)


def feature_extractor(arch: str, backbone: Path | None, seed: int, layer: str, stride: int) -> DenseFeatures:
    """The frozen dense feature model of a protocol."""
    if arch not in ARCHS:
        raise UserError(f"--arch {arch!r} is not supported; choose one of {list(ARCHS)}.")
    return DenseFeatures(frozen_resnet(arch, backbone, seed), layer, stride)


def load_rgb(path: Path, max_side: int | None) -> torch.Tensor:
    """An image as RGB [3, H, W] in [0, 1], resized (bilinear) so its longer side is `max_side` (None: as is)."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            if max_side is not None:
                scale = max_side / max(image.size)
                size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
                image = image.resize(size, Image.BILINEAR)
            array = np.asarray(image)
    except OSError as err:
        raise UserError(f"cannot read image {path} ({err}); replace the file or rebuild the dataset.") from err
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255)
