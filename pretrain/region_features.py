"""Region features of a ResNet-C4 (SoCo, D3SSL Eq. 1): RoIAlign on the C4 map, then res5.

f(x, b) = head(RoIAlign(C4(x), b)) where the head is res5 (layer4), average pooling and an MLP
projector; this module gives the res5 maps of the boxes and the methods' heads pool them.
"""

from __future__ import annotations

import torch
from torchvision.ops import roi_align

from pretrain.models import ResNetTrunk


def region_maps(trunk: ResNetTrunk, images: torch.Tensor, boxes: torch.Tensor, output_size: int = 7) -> torch.Tensor:
    """res5 maps of every box: images [B, 3, H, W], boxes [B, K, 4] (x1, y1, x2, y2) in image pixels;
    returns [B * K, C, s, s] rows ordered (image, box), s = ceil(output_size / 2).

    RoIAlign with aligned=True (pixel-centre convention, Detectron2's ROIAlignV2) and adaptive
    sampling (sampling_ratio 0), as SoCo's C4 model (`--aligned`, `--output_size 7`).
    """
    c4 = trunk.c4(images)
    scale = c4.shape[-1] / images.shape[-1]
    rois = roi_align(c4, list(boxes.to(c4.dtype).unbind(0)), output_size, spatial_scale=scale, sampling_ratio=0,
                     aligned=True)
    return trunk.layer4(rois)
