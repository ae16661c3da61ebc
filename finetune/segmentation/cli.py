"""`python -m finetune convert-mmseg` and `python -m finetune voc-segmentation`."""

from __future__ import annotations

import argparse
from typing import Any

from finetune.common import add_converter, add_protocol
from finetune.segmentation import convert


def _voc_segmentation(protocol_json: str, **kwargs: Any) -> None:
    # mmengine/mmseg load only for this command: `python -m finetune` also runs in the Detectron2 env.
    from finetune.segmentation import train
    from finetune.segmentation.config import SegmentationProtocol

    train.run(protocol=SegmentationProtocol.from_json(protocol_json), **kwargs)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the segmentation subcommands to `python -m finetune`."""
    add_converter(subparsers, "convert-mmseg", "convert a torchvision ResNet backbone.pth into an mmseg checkpoint",
                  "output .pth", convert.convert, f"mmseg names under '{convert.PREFIX}'")
    add_protocol(subparsers, "voc-segmentation",
                 "fine-tune FCN on VOC12 train, evaluate mIoU on VOC12 val (mmseg protocol)",
                 section="voc_segmentation", archs=sorted(convert.DEPTHS), weights_help="convert-mmseg .pth",
                 run=_voc_segmentation)
