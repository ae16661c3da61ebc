"""Index-wise contrast (Moon, Kim & Choi, BMVC 2022): a ResNet whose last feature map feeds an
instance (pooled) or a dense (per-position) sub-head, trained with InfoNCE (Eq. 1 / Eq. 2: positives
at the same index of the two views) or with Wang & Isola's alignment + uniformity (Sec. 3.2).

No momentum encoder and no queue: the paper avoids such tricks (Sec. 3.3), so negatives come from the
batch: both views of the other images at the instance level (Eq. 1), the other view's vectors at the
dense level (Sec. 3.3's "neg = h~2").
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from core.errors import UserError
from pretrain.losses import alignment, index_info_nce, nt_xent, uniformity
from pretrain.methods import PretrainMethod, register
from pretrain.models import DenseHead, GlobalHead, ResNetTrunk
from pretrain.views import ViewConfig

SCHEMES = ("instance", "dense")
LOSSES = ("infonce", "align_uniform")
VIEWS = ("wang_isola", "densecl")


def index_contrast_views(name: str, size: int) -> ViewConfig:
    """The augmentation the paper takes from each dataset's reference code (Sec. 4.1).

    "wang_isola" (STL-10, ssnl/align_uniform examples/stl10/main.py): RandomResizedCrop scale (0.08, 1),
    flip, ColorJitter(0.4, 0.4, 0.4, 0.4) always applied, grayscale p = 0.2, no blur. That code
    normalises with STL-10's own mean/std; here ImageNet's, as every exported backbone declares.
    "densecl" (COCO, DenseCL configs/selfsup/densecl/densecl_coco_800ep.py): MoCo v2's views, the defaults.
    """
    if name == "wang_isola":
        return ViewConfig(size=size, scale=(0.08, 1.0), jitter_prob=1.0, jitter=(0.4, 0.4, 0.4, 0.4),
                          blur_prob=0.0)
    if name == "densecl":
        return ViewConfig(size=size)
    raise UserError(f"index_contrast.views is '{name}'; choose one of {', '.join(VIEWS)}")


def _choice(section: dict[str, Any], key: str, allowed: tuple[str, ...]) -> str:
    value = section[key]
    if value not in allowed:
        raise UserError(f"index_contrast.{key} is '{value}'; choose one of {', '.join(allowed)}")
    return value


@register("index_contrast")
class IndexContrast(PretrainMethod):
    @classmethod
    def view_configs(cls, cfg: dict[str, Any]) -> tuple[ViewConfig, ViewConfig]:
        view = index_contrast_views(cfg["index_contrast"]["views"], cfg["image_size"])
        return view, view

    def __init__(self, arch: str, cfg: dict[str, Any]) -> None:
        super().__init__()
        section = cfg["index_contrast"]
        self.scheme = _choice(section, "scheme", SCHEMES)
        self.loss = _choice(section, "loss", LOSSES)
        self.temperature: float = section["temperature"]
        self.align_weight: float = section["align_weight"]
        self.uniform_weight: float = section["uniform_weight"]
        self.align_alpha: float = section["align_alpha"]
        # Moon et al. print G(x, y) = exp(-||x - y||^2), i.e. t = 1; Wang & Isola's code defaults to t = 2.
        self.uniform_t: float = section["uniform_t"]
        self.backbone = ResNetTrunk(arch)
        # Only the scheme's sub-head is built: the paper projects the map to one of two sub-heads
        # "depending on the training scheme" (Sec. 4.1), and an unused head would only be decayed.
        head = GlobalHead if self.scheme == "instance" else DenseHead
        self.head = head(self.backbone.out_channels, section["hidden"], section["dim"])

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised projections [B, S, D]: S = 1 (instance) or one per feature-map cell (dense)."""
        out = self.head(self.backbone(images))
        out = out.unsqueeze(1) if self.scheme == "instance" else out.flatten(2).transpose(1, 2)
        return F.normalize(out, dim=-1)

    def forward(self, view1: torch.Tensor, view2: torch.Tensor, geom1: torch.Tensor, geom2: torch.Tensor,
                iteration: int, total: int) -> dict[str, torch.Tensor]:
        # Both views in one pass, as Wang & Isola's STL-10 code: BatchNorm sees the 2B images together.
        z1, z2 = self.embed(torch.cat([view1, view2])).chunk(2)
        align_uniform = self.loss == "align_uniform"
        with torch.set_grad_enabled(align_uniform and torch.is_grad_enabled()):
            align = alignment(z1, z2, self.align_alpha)
            # Wang & Isola average the uniformity of the two views; dense vectors are pooled per view.
            uniform = (uniformity(z1.flatten(0, 1), self.uniform_t) + uniformity(z2.flatten(0, 1), self.uniform_t)) / 2
        out = {"loss_align": align.detach(), "loss_uniform": uniform.detach()}
        if align_uniform:
            return {"loss": self.align_weight * align + self.uniform_weight * uniform, **out}
        # Eq. 1 (instance): both views of the batch are negatives; Eq. 2 (dense): the other view's vectors.
        loss = (nt_xent if self.scheme == "instance" else index_info_nce)(z1, z2, self.temperature)
        return {"loss": loss, "loss_infonce": loss.detach(), **out}
