"""`python -m finetune convert-d2` and `python -m finetune voc-detection`."""

from __future__ import annotations

import argparse
from typing import Any

from finetune.common import add_converter, add_protocol
from finetune.detection import convert


def _voc_detection(protocol_json: str, **kwargs: Any) -> None:
    # Imported here, so `python -m finetune` also starts in environments without Detectron2 (envs/mmseg.yml).
    from finetune.detection import train

    train.run(protocol=train.parse_protocol(protocol_json), **kwargs)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the detection subcommands to `python -m finetune`."""
    add_converter(subparsers, "convert-d2", "convert a torchvision ResNet backbone.pth to Detectron2 weights",
                  "output .pkl", convert.convert, "Detectron2 names")
    add_protocol(subparsers, "voc-detection",
                 "fine-tune Faster R-CNN C4 on VOC07+12, evaluate on VOC07 test (MoCo protocol)",
                 section="voc_detection", archs=list(convert.DEPTHS), weights_help="convert-d2 .pkl",
                 run=_voc_detection)
