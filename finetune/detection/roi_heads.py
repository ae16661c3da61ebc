"""MoCo's C4 box head: Detectron2's Res5ROIHeads with an extra norm after res5, for any ResNet depth."""

from __future__ import annotations

from detectron2.config import CfgNode
from detectron2.layers import get_norm
from detectron2.modeling.backbone.resnet import BasicBlock, ResNet
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads
from torch import nn

# res5 blocks of the BasicBlock ResNets; Detectron2's Res5ROIHeads only builds bottleneck res5 heads.
_BASIC_RES5_BLOCKS = {18: 2, 34: 3}


@ROI_HEADS_REGISTRY.register()
class Res5ROIHeadsExtraNorm(Res5ROIHeads):
    """Res5ROIHeads plus a norm layer after the res5 stage, as in the MoCo paper's detection setup.

    The res5 head of the BasicBlock ResNets (18, 34) is built from BasicBlock, so small-scale runs
    can use a ResNet-18 backbone whose res5 weights load into `roi_heads.res5`.
    """

    @classmethod
    def _build_res5_block(cls, cfg: CfgNode) -> tuple[nn.Sequential, int]:
        depth = cfg.MODEL.RESNETS.DEPTH
        norm = cfg.MODEL.RESNETS.NORM
        if depth in _BASIC_RES5_BLOCKS:
            out_channels = cfg.MODEL.RESNETS.RES2_OUT_CHANNELS * 8  # res5 is 8x res2
            blocks = ResNet.make_stage(
                BasicBlock,
                _BASIC_RES5_BLOCKS[depth],
                stride_per_block=[2] + [1] * (_BASIC_RES5_BLOCKS[depth] - 1),
                in_channels=out_channels // 2,
                out_channels=out_channels,
                norm=norm,
            )
            res5 = nn.Sequential(*blocks)
        else:
            res5, out_channels = super()._build_res5_block(cfg)
        # Named "norm" as in MoCo's train_net.py, so checkpoints of both stay interchangeable.
        res5.add_module("norm", get_norm(norm, out_channels))
        return res5, out_channels
