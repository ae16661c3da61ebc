"""Frozen dense features: a torchvision ResNet stage, or a pretraining run's own dense embedding.

The hierarchical-grouping paper reads its 32-d hypercolumn embedding F (Sec. 4.2, 5.2-5.3, Fig. 2); a run of
that method exports the head beside its backbone (embedding.pth), and a protocol with `embedding: true` reads F
for such a row (`EmbeddingFeatures`, at 1/4 of the input). Every other row, and every protocol without it, reads
one trunk stage (the protocol's `layer`), with the output stride reduced by turning the stride-2 convolutions of
the later stages into stride 1, without dilation, as label-propagation code does for ResNet-18 res4 at stride 8
(Jabri et al. CRW, `code/resnet.py`; the paper does not name a stage for ResNets).
"""

from __future__ import annotations

import abc
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn

from core.architectures import IMAGENET_MEAN, IMAGENET_STD, RESNETS
from core.errors import UserError
from finetune.common import frozen_resnet, load_weights_only
from pretrain.methods.hiergroup import Hypercolumn, hypercolumn_embedding

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


class FrozenFeatures(nn.Module, abc.ABC):
    """ImageNet normalisation of RGB images in [0, 1]; subclasses map the result to L2-normalised [B, C, h, w]."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @abc.abstractmethod
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The maps [B, C, h, w] of normalised images [B, 3, H, W]."""

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: RGB in [0, 1], [B, 3, H, W]."""
        return F.normalize(self.features((images - self.mean) / self.std), dim=1)


class DenseFeatures(FrozenFeatures):
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
        self.name = f"{layer} (stride {stride})"
        self.eval().requires_grad_(False)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.trunk(images)


class EmbeddingFeatures(FrozenFeatures):
    """A hierarchical-grouping run's embedding F (its hypercolumn over Res3 and Res4), [B, dim, H / 4, W / 4]."""

    def __init__(self, net: torchvision.models.ResNet, head: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.trunk, self.head = net, Hypercolumn.from_state_dict(head)
        self.name = f"embedding ({self.head.out.out_channels}-d hypercolumn, stride 4)"
        self.eval().requires_grad_(False)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return hypercolumn_embedding(self.trunk, self.head, images)


def feature_extractor(arch: str, backbone: Path | None, seed: int, layer: str, stride: int,
                      embedding: Path | None = None) -> FrozenFeatures:
    """The frozen dense feature model of a protocol: the run's embedding when `embedding` (its embedding.pth) is
    given, else the trunk's `layer` at `stride`. Its `name` says which, for metrics.json."""
    if arch not in RESNETS:
        raise UserError(f"--arch {arch!r} is not supported; choose one of {list(RESNETS)}.")
    net = frozen_resnet(arch, backbone, seed)
    if embedding is None:
        return DenseFeatures(net, layer, stride)
    if backbone is None:
        raise UserError("--embedding needs the --backbone of the same pretraining run, not 'none'.")
    head = load_weights_only(embedding)
    if not head:
        raise UserError(f"{embedding} holds no embedding head: its method exports none "
                        "(pretrain.runs.METHOD_EMBEDDING); drop --embedding to read the protocol's layer.")
    return EmbeddingFeatures(net, head)


def embedding_of(protocol: object, embedding: Path | None) -> Path | None:
    """--embedding, refused unless the protocol reads embeddings (`embedding: true`)."""
    if embedding is not None and not protocol.embedding:
        raise UserError(f"--embedding {embedding} given, but the protocol's embedding is false: drop --embedding or "
                        "set embedding: true.")
    return embedding


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
