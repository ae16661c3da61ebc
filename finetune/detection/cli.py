"""`python -m finetune convert-d2` and `python -m finetune detection`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from finetune.common import add_converter, add_protocol, non_negative_int, positive_int
from finetune.detection import convert


def _detection(protocol_json: str, **kwargs: Any) -> None:
    # Imported here, so `python -m finetune` also starts in environments without Detectron2 (envs/mmseg.yml).
    from finetune.detection import launcher, train

    launcher.launch_detection(protocol=train.parse_protocol(protocol_json), **kwargs)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the detection subcommands to `python -m finetune`."""
    add_converter(subparsers, "convert-d2", "convert a torchvision ResNet backbone.pth to Detectron2 weights",
                  "output .pkl", convert.convert, "Detectron2 names")
    parser = add_protocol(
        subparsers, "detection",
        "fine-tune a Detectron2 detector (model and dataset from the protocol) and evaluate it",
        archs=list(convert.DEPTHS), weights_help="convert-d2 .pkl", run=_detection, convert=convert.convert,
        converted_name="d2.pkl",
        data_help="VOCdevkit folder (VOC2007, VOC2012) or COCO folder (train2017, val2017, annotations), as the "
        "protocol's dataset needs",
    )
    parser.add_argument("--train-json", type=Path, default=None,
                        help="COCO train annotations replacing annotations/*_train2017.json (mini-COCO subsets)")
    # Detectron2's tools/train_net.py options; the protocol's ims_per_batch is the total over all processes.
    parser.add_argument("--gpus", type=non_negative_int, default=0,
                        help="training processes (GPUs) per machine: 0 = one process on --device (default cpu); "
                        "N >= 1 = N CUDA processes, SyncBN when more than one process in all")
    parser.add_argument("--num-machines", type=positive_int, default=1)
    parser.add_argument("--machine-rank", type=int, default=0, help="this machine's rank, 0 to --num-machines - 1")
    parser.add_argument("--dist-url", default="auto",
                        help="rendezvous of the processes, e.g. tcp://<machine 0's host>:<port>; 'auto' = a free local "
                        "port (one machine)")
    parser.set_defaults(device=None)  # --gpus N >= 1 implies cuda (launcher._check)
