"""SoCo (Wei et al. 2021, "Aligning Pretraining for Detection via Object-Level Contrastive Learning"),
the region-level baseline D3SSL builds on, in its released C4 setting (hologerry/SoCo,
tools/SoCo_C4_*.sh): BYOL on region features. K = 4 selective-search proposals per image, each
pooled by RoIAlign 7x7 on C4, then res5, average pooling, projector and predictor; the prediction of
a box in one view regresses the momentum network's projection of the same box in the other view.
Box jitter (ratio 0.1) and a cutout inside each box (probability 0.5, side ratio [0.1, 0.3]) by
default; `soco.augmentations` can swap in D3SSL's (its Table 6, "SoCo + Aug_D3SSL").
"""

from __future__ import annotations

from typing import Any

import torch

from pretrain.data import Sample, SampleSource
from pretrain.methods import register
from pretrain.methods.byol import BYOL
from pretrain.momentum import cosine_momentum, ema_update_pairs
from pretrain.proposal_views import augment_regions, proposal_sample, region_views
from pretrain.region_features import region_maps
from pretrain.views import ViewConfig


@register("soco")
class SoCo(BYOL):
    def __init__(self, arch: str, cfg: dict[str, Any]) -> None:
        super().__init__(arch, cfg)  # BYOL's projector and predictor (SoCo's Proj_Head / Pred_Head)
        soco = cfg["soco"]
        self.base_momentum = soco["momentum"]
        self.roi_size: int = soco["roi_output_size"]

    @classmethod
    def view_configs(cls, cfg: dict[str, Any]) -> tuple[ViewConfig, ViewConfig]:
        return region_views(cfg["image_size"], cfg["soco"]["crop_scale"])

    @classmethod
    def make_sample(cls, source: SampleSource, gen: torch.Generator, cfg: dict[str, Any]) -> Sample:
        soco = cfg["soco"]
        sample = proposal_sample(source, cls.view_configs(cfg), soco["boxes_per_image"], gen)
        for v in ("1", "2"):
            sample["view" + v], sample["boxes" + v] = augment_regions(
                sample["view" + v], sample["boxes" + v], soco["augmentations"], cfg["region_augment"], gen)
        return sample

    def forward(self, view1: torch.Tensor, view2: torch.Tensor, boxes1: torch.Tensor, boxes2: torch.Tensor,
                iteration: int, total: int) -> dict[str, torch.Tensor]:
        ema_update_pairs(self.momentum_pairs(), cosine_momentum(self.base_momentum, iteration, total))
        pairs = ((view1, boxes1), (view2, boxes2))
        online = [region_maps(self.backbone, view, boxes, self.roi_size) for view, boxes in pairs]
        with torch.no_grad():
            target = [region_maps(self.target_backbone, view, boxes, self.roi_size) for view, boxes in pairs]
        loss = self.global_loss(online, target)  # BYOL's symmetric regression, one row per box
        return {"loss": loss, "loss_region": loss.detach()}
