"""`python -m finetune convert-mmseg` and `python -m finetune segmentation`."""

from __future__ import annotations

import argparse
from typing import Any

from finetune.common import add_converter, add_protocol
from finetune.segmentation import convert


def _segmentation(protocol_json: str, name: str, **kwargs: Any) -> None:
    # mmengine/mmseg load only for this command: `python -m finetune` also runs in the Detectron2 env.
    from finetune.segmentation import train
    from finetune.segmentation.protocol import SegmentationProtocol

    train.run(protocol=SegmentationProtocol.from_json(protocol_json, name), name=name, **kwargs)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the segmentation subcommands to `python -m finetune`."""
    add_converter(subparsers, "convert-mmseg", "convert a torchvision ResNet backbone.pth into an mmseg checkpoint",
                  "output .pth", convert.convert, f"mmseg names under '{convert.PREFIX}'")
    add_protocol(
        subparsers, "segmentation",
        "train an mmseg FCN or ASPP head (dataset, head, frozen backbone, schedule from the protocol) and "
        "evaluate mIoU on the val split",
        archs=sorted(convert.DEPTHS), weights_help="convert-mmseg .pth", run=_segmentation, convert=convert.convert,
        converted_name="mmseg.pth",
        data_help="VOCdevkit folder (its VOC2012) or Cityscapes folder (leftImg8bit, gtFine), as the protocol's "
        "dataset needs",
    )
