"""Region-level samples (SoCo, D3SSL): the two views of an image, its selective-search proposals
carried into both views, and the region augmentations applied to them.

Views (SoCo's released C4 setting, D3SSL Sec. 4 "Views construction"): view 1 is the whole image
resized to a square, view 2 a random resized crop (scale [0.6, 1] for SoCo, [0.4, 1] for D3SSL);
both take BYOL's asymmetric colour augmentation and a random flip, as SoCo's `ImageAsymBboxCutout`.
A proposal is used when at least half of it lies inside view 2's crop (view 1 shows the whole
image) and it spans >= 2 pixels per side there; it is clipped to the crop. K of them are drawn per
image, repeated when fewer exist (SoCo's `--padding_k`); `box_ids` says which boxes are copies of
one proposal (SoCo's proposal ids). An image whose record holds no box (none passed the prepare
stage's filters) has the whole image as its one proposal, as in SoCo's dataset; when no proposal is
visible in view 2, its crop is the box (SoCo instead redraws the views up to `--max_tries` times).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from core.errors import UserError
from pretrain.data import Sample, SampleSource, two_views
from pretrain.region_augment import (
    blank,
    box_cutout,
    box_jitter,
    proposal_random_cutout,
    proposal_random_mask,
    restricted_box_jitter,
)
from pretrain.views import ViewConfig, byol_views, source_to_view

# The augmentations a region-level method can switch on (D3SSL Table 5's columns).
AUGMENTATIONS = ("box_jitter", "box_cutout", "rbj", "prc", "prm")
MIN_VISIBLE = 0.5  # share of a proposal that must lie inside view 2's crop
MIN_VIEW_PIXELS = 2  # side of a proposal in view 2 (x2-s and view 1 then still show >= 1 pixel of it)


def region_views(size: int, crop_scale: Sequence[float]) -> tuple[ViewConfig, ViewConfig]:
    """View 1: the whole image resized; view 2: a random resized crop of scale `crop_scale`."""
    whole, crop = byol_views(size)
    return replace(whole, crop=False), replace(crop, scale=tuple(crop_scale))


def proposal_boxes(record: dict[str, np.ndarray] | None, original_size: tuple[int, int]) -> torch.Tensor:
    """An image's proposals [n, 4] as [0, 1] source coordinates (records hold pixels of the original file);
    the whole image when the record holds none."""
    boxes = None if record is None else record.get("boxes")
    if boxes is None or boxes.ndim != 2 or boxes.shape[1] != 4:
        raise UserError("the proposal record has no 'boxes' array of shape [n, 4]: the store is not the output of "
                        "`python -m prepare proposals`. Rebuild it with the prepare stage.")
    if len(boxes) == 0:
        return torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    width, height = original_size
    return torch.from_numpy(boxes).float() / torch.tensor([width, height, width, height], dtype=torch.float32)


def select_visible(boxes: torch.Tensor, crop: torch.Tensor, k: int, view_size: int,
                   gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """K proposals ([0, 1] source coordinates) visible in a view_size x view_size view whose crop is `crop`
    [x1, y1, x2, y2], clipped to it; drawn without repetition, then repeated to fill K (see the module
    docstring), and their ids [K] (equal for copies of one proposal). Proposals under MIN_VIEW_PIXELS per
    side in the view are dropped: they cover no pixel there."""
    clipped = torch.cat([torch.maximum(boxes[:, :2], crop[:2]), torch.minimum(boxes[:, 2:], crop[2:4])], dim=1)
    sides = (clipped[:, 2:] - clipped[:, :2]).clamp_min(0)
    area = (boxes[:, 2:] - boxes[:, :2]).prod(dim=1)
    big_enough = (sides * view_size / (crop[2:4] - crop[:2]) >= MIN_VIEW_PIXELS).all(dim=1)
    usable = clipped[big_enough & (sides.prod(dim=1) >= MIN_VISIBLE * area)]
    if len(usable) == 0:
        usable = crop[None, :4]
    order = torch.randperm(len(usable), generator=gen)[:k]
    if len(order) < k:
        order = torch.cat([order, torch.randint(len(usable), (k - len(order),), generator=gen)])
    return usable[order], order


def to_view_pixels(boxes: torch.Tensor, geometry: torch.Tensor, size: int) -> torch.Tensor:
    """[0, 1] source boxes [K, 4] -> pixel boxes of a size x size view with this geometry (flip included)."""
    corners = source_to_view(boxes.reshape(1, -1, 2), geometry[None])[0].reshape(-1, 4) * size
    x_a, x_b = corners[:, 0], corners[:, 2]
    return torch.stack([torch.minimum(x_a, x_b), corners[:, 1], torch.maximum(x_a, x_b), corners[:, 3]], dim=1)


def proposal_sample(source: SampleSource, views: tuple[ViewConfig, ViewConfig], k: int,
                    gen: torch.Generator) -> Sample:
    """Both views, the K selected proposals in each view's pixels (`boxes1`, `boxes2`: [K, 4]) and their ids
    (`box_ids`: [K])."""
    sample = two_views(source.image, views, gen)
    boxes, ids = select_visible(proposal_boxes(source.record, source.original_size), sample["geom2"], k,
                                views[1].size, gen)
    return {"view1": sample["view1"], "view2": sample["view2"],
            "boxes1": to_view_pixels(boxes, sample["geom1"], views[0].size),
            "boxes2": to_view_pixels(boxes, sample["geom2"], views[1].size), "box_ids": ids}


def downsample(view: torch.Tensor, boxes: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A view resized by `scale` (anti-aliased) and its boxes with it: SoCo's V3, D3SSL's x2-s."""
    size = round(view.shape[-1] * scale)
    small = F.interpolate(view[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    return small, boxes * (size / view.shape[-1])


def augment_regions(view: torch.Tensor, boxes: torch.Tensor, names: Sequence[str], params: dict[str, Any],
                    gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The switched-on region augmentations of one view: box changes first (jitter or RBJ), then the pixel
    masks on the resulting boxes (SoCo's cutout in the box, D3SSL's PRM o PRC of Eq. 2)."""
    unknown = sorted(set(names) - set(AUGMENTATIONS))
    if unknown:
        raise UserError(f"unknown region augmentation(s) {unknown}; choose from {', '.join(AUGMENTATIONS)}")
    _, height, width = view.shape
    if "box_jitter" in names:
        boxes = box_jitter(boxes, params["jitter_ratio"], height, width, gen)
    if "rbj" in names:
        boxes = restricted_box_jitter(boxes, params["rbj_ratio"], gen)
    removed = torch.zeros(height, width, dtype=torch.bool)
    if "box_cutout" in names:
        removed |= box_cutout(boxes, height, width, params["cutout_prob"], tuple(params["cutout_side"]), gen)
    if "prc" in names:
        size, cover = tuple(params["prc_size"]), params["prc_max_cover"]
        removed |= proposal_random_cutout(boxes, height, width, size, cover, gen)
    if "prm" in names:
        keep, _ = proposal_random_mask(boxes, height, width, tuple(params["prm_scale"]), tuple(params["prm_ratio"]),
                                       gen)
        removed |= ~keep
    return blank(view, removed), boxes
