"""The backbones densebench trains and reads, and the input normalisation every export declares.

Pretraining builds `PRETRAIN_ARCHS` (the schema's `arch` enums list the same names, tests/test_core.py). The
frozen evaluations and probes read any torchvision ResNet a row can hold: a pretraining export or a published
checkpoint, recognised by its layout (`RESNET_LAYOUTS`, `finetune.common.infer_arch`).
"""

from __future__ import annotations

PRETRAIN_ARCHS = ("resnet18", "resnet34", "resnet50")
# (blocks per stage, bottleneck blocks?) -> the torchvision ResNet with that layout.
RESNET_LAYOUTS = {
    ((2, 2, 2, 2), False): "resnet18",
    ((3, 4, 6, 3), False): "resnet34",
    ((3, 4, 6, 3), True): "resnet50",
    ((3, 4, 23, 3), True): "resnet101",
    ((3, 8, 36, 3), True): "resnet152",
}
RESNETS = tuple(RESNET_LAYOUTS.values())
# torchvision's ImageNet statistics: every method's views and every evaluation normalise with them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
