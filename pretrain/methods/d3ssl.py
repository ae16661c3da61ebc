"""D3SSL (Qiu et al., "De-coupling and De-positioning Dense Self-supervised Learning", Sec. 4).

Region features as SoCo's (RoIAlign on C4, res5, pooling, MLP projector) in the MoCo formalism:
an online (student) and a momentum (teacher) encoder, InfoNCE against a memory bank of teacher
region features from earlier batches (Eq. 5).
- Views: x1 the whole image, x2 a random resized crop of scale [0.4, 1], x2-s = x2 down-sampled by
  `small_scale` (112 of 224); boxes follow every transform.
- De-coupling (Eq. 2-4): x1^ = PRM o PRC(x1), x2-s^ = PRM o PRC(x2-s) with RBJ boxes;
  L_dc = nce(z_s(x1^), z_t(x2)) + nce(z_s(x2-s^), z_t(x1^)).
- De-positioning (Eq. 6-9): x2's boxed regions pasted at one random shift t onto another image of the
  dataset (the pasted mask cut again by PRC, Eq. 7); L_dp = nce(z_s(x3), z_t(x2)) + nce(z_s(x3), z_t(x1^)).
- Loss (Eq. 10): the mean over boxes of L_dc + L_dp. `d3ssl.depositioning: false` and the
  `d3ssl.augmentations` list switch the parts off for the ablations of Tables 5 and 7.
The memory bank holds z_t(x2), the teacher features of the un-masked view, one per box.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from pretrain.data import Sample, SampleSource
from pretrain.losses import info_nce
from pretrain.methods import register
from pretrain.methods.mocov2 import MoCoV2
from pretrain.momentum import ema_update_pairs
from pretrain.proposal_views import augment_regions, downsample, proposal_sample, region_views
from pretrain.region_augment import depositioning_composite, proposal_random_cutout, sample_shift
from pretrain.region_features import region_maps
from pretrain.views import ViewConfig, make_view


@register("d3ssl")
class D3SSL(MoCoV2):
    def __init__(self, arch: str, cfg: dict[str, Any]) -> None:
        super().__init__(arch, cfg)  # encoder, MLP projector, momentum copies, memory bank, temperature
        self.roi_size: int = cfg["d3ssl"]["roi_output_size"]

    @classmethod
    def view_configs(cls, cfg: dict[str, Any]) -> tuple[ViewConfig, ViewConfig]:
        return region_views(cfg["image_size"], cfg["d3ssl"]["crop_scale"])

    @classmethod
    def make_sample(cls, source: SampleSource, gen: torch.Generator, cfg: dict[str, Any]) -> Sample:
        d3ssl, params = cfg["d3ssl"], cfg["region_augment"]
        views = cls.view_configs(cfg)
        sample = proposal_sample(source, views, d3ssl["boxes_per_image"], gen)
        del sample["box_ids"]  # Eq. 5 scores each box against its own teacher feature, copies included
        small, small_boxes = downsample(sample["view2"], sample["boxes2"], d3ssl["small_scale"])
        names = d3ssl["augmentations"]
        sample["view1"], sample["boxes1"] = augment_regions(sample["view1"], sample["boxes1"], names, params, gen)
        sample["view2_small"], sample["boxes2_small"] = augment_regions(small, small_boxes, names, params, gen)
        if d3ssl["depositioning"]:
            background, _ = make_view(source.draw_image(), views[1], gen)
            size = views[1].size
            shift = sample_shift(sample["boxes2"], size, size, gen)
            shifted = sample["boxes2"] + torch.tensor([shift[0], shift[1], shift[0], shift[1]], dtype=torch.float32)
            cut = (proposal_random_cutout(shifted, size, size, tuple(params["prc_size"]), params["prc_max_cover"], gen)
                   if "prc" in names else torch.zeros(size, size, dtype=torch.bool))
            sample["composite"], sample["boxes3"] = depositioning_composite(
                sample["view2"], background, sample["boxes2"], shift, cut)
        return sample

    def student(self, view: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.global_head(region_maps(self.backbone, view, boxes, self.roi_size)), dim=1)

    @torch.no_grad()
    def teacher(self, view: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.key_global_head(region_maps(self.key_backbone, view, boxes, self.roi_size)), dim=1)

    def forward(self, view1: torch.Tensor, view2: torch.Tensor, view2_small: torch.Tensor, boxes1: torch.Tensor,
                boxes2: torch.Tensor, boxes2_small: torch.Tensor, iteration: int, total: int,
                composite: torch.Tensor | None = None, boxes3: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        ema_update_pairs(self.momentum_pairs(), self.momentum)
        teacher1, teacher2 = self.teacher(view1, boxes1), self.teacher(view2, boxes2)
        bank = self.queue.keys.clone()
        loss_dc = (info_nce(self.student(view1, boxes1), teacher2, bank, self.temperature)
                   + info_nce(self.student(view2_small, boxes2_small), teacher1, bank, self.temperature))
        losses = {"loss_dc": loss_dc.detach()}
        loss = loss_dc
        if composite is not None:
            student3 = self.student(composite, boxes3)
            loss_dp = info_nce(student3, teacher2, bank, self.temperature) + info_nce(student3, teacher1, bank,
                                                                                        self.temperature)
            losses["loss_dp"] = loss_dp.detach()
            loss = loss + loss_dp
        self.queue.push(teacher2)
        return {"loss": loss, **losses}
