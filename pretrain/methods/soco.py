"""SoCo (Wei et al. 2021, "Aligning Pretraining for Detection via Object-Level Contrastive Learning"),
the region-level baseline D3SSL builds on, with its released C4 setting (hologerry/SoCo,
tools/SoCo_C4_*.sh) for what D3SSL leaves implicit: BYOL on region features. K = 4 selective-search
proposals per image, each pooled by RoIAlign 7x7 on C4, then res5, average pooling, projector and
predictor; the prediction of a box in one view regresses the momentum network's projection of the
same box in another view, symmetrised. Multi-scale views: V1 the whole image, V2 a random resized
crop, V3 = V2 down-sampled (`soco.small_scale`, SoCo Sec. 3.2: 112 of 224), with the V1-V2 and
V1-V3 losses summed as in SoCo's multi-view models; `small_scale: null` keeps the released C4
script's two views. Box jitter (ratio 0.1) and a cutout inside each box (probability 0.5, side
ratio [0.1, 0.3]) by default; `soco.augmentations` can swap in D3SSL's (its Table 6).
Boxes pair by proposal id, as SoCo's correspondence matrix: when an image has fewer than K proposals, the
copies of one proposal also pair with each other (`matched_regression`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from pretrain.data import Sample, SampleSource
from pretrain.methods import register
from pretrain.methods.byol import BYOL
from pretrain.momentum import cosine_momentum, ema_update_pairs
from pretrain.proposal_views import augment_regions, downsample, proposal_sample, region_views
from pretrain.region_features import region_maps
from pretrain.views import ViewConfig


def matched_regression(predictions: torch.Tensor, targets: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """SoCo's `regression_loss_bboxs` (up to its constant: 2 - 2 cos, not -2 cos): per image, the mean of
    2 - 2 cos(p_i, z_j) over the box pairs (i, j) with equal proposal ids; then the mean over images.

    predictions, targets: [B * K, D] rows ordered (image, box); ids: [B, K]. With distinct ids this is the
    mean over boxes of BYOL's regression of each box onto the same box.
    """
    batch, k = ids.shape
    p = F.normalize(predictions.view(batch, k, -1), dim=2)
    z = F.normalize(targets.view(batch, k, -1), dim=2)
    matched = (ids[:, :, None] == ids[:, None, :]).to(p.dtype)
    per_pair = 2 - 2 * (p @ z.transpose(1, 2))
    return ((per_pair * matched).sum(dim=(1, 2)) / matched.sum(dim=(1, 2))).mean()


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
        if soco["small_scale"]:
            sample["view3"], sample["boxes3"] = downsample(sample["view2"], sample["boxes2"], soco["small_scale"])
        for v in ("1", "2", "3")[: 3 if soco["small_scale"] else 2]:
            sample["view" + v], sample["boxes" + v] = augment_regions(
                sample["view" + v], sample["boxes" + v], soco["augmentations"], cfg["region_augment"], gen)
        return sample

    def forward(self, view1: torch.Tensor, view2: torch.Tensor, boxes1: torch.Tensor, boxes2: torch.Tensor,
                box_ids: torch.Tensor, iteration: int, total: int, view3: torch.Tensor | None = None,
                boxes3: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        ema_update_pairs(self.momentum_pairs(), cosine_momentum(self.base_momentum, iteration, total))
        views = [(view1, boxes1), (view2, boxes2)] + ([(view3, boxes3)] if view3 is not None else [])
        # One row per box: prediction of every online region, projection of every target region.
        predictions = [self.predictor(self.projector(region_maps(self.backbone, view, boxes, self.roi_size)))
                       for view, boxes in views]
        with torch.no_grad():
            targets = [self.target_projector(region_maps(self.target_backbone, view, boxes, self.roi_size))
                       for view, boxes in views]
        losses = {f"loss_1{v}": matched_regression(predictions[0], targets[v - 1], box_ids)
                  + matched_regression(predictions[v - 1], targets[0], box_ids) for v in range(2, len(views) + 1)}
        loss = sum(losses.values())
        return {"loss": loss, **{name: value.detach() for name, value in losses.items()}}
