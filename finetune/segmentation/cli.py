"""`python -m finetune convert-mmseg` and `python -m finetune voc-segmentation`."""

from __future__ import annotations

import argparse
from pathlib import Path

from finetune.common import positive_int, weights_path
from finetune.segmentation import convert


def _convert_mmseg(args: argparse.Namespace) -> None:
    arch = convert.convert(args.backbone, args.out)
    print(f"wrote {args.out} ({arch}, mmseg names under '{convert.PREFIX}')")


def _voc_segmentation(args: argparse.Namespace) -> None:
    # mmengine/mmseg load only for this command: `python -m finetune` also runs in the Detectron2 env.
    from finetune.segmentation import train
    from finetune.segmentation.config import SegmentationProtocol

    train.run(
        voc_root=args.voc_root,
        weights=args.weights,
        arch=args.arch,
        protocol=SegmentationProtocol.from_json(args.protocol_json),
        seed=args.seed,
        threads=args.threads,
        device=args.device,
        out=args.out,
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the segmentation subcommands to `python -m finetune`."""
    parser = subparsers.add_parser(
        "convert-mmseg", help="convert a torchvision ResNet backbone.pth into an mmseg backbone checkpoint"
    )
    parser.add_argument("--backbone", type=Path, required=True, help="backbone.pth (torchvision ResNet, no fc)")
    parser.add_argument("--out", type=Path, required=True, help="output .pth")
    parser.set_defaults(func=_convert_mmseg)

    parser = subparsers.add_parser(
        "voc-segmentation", help="fine-tune FCN on VOC12 train, evaluate mIoU on VOC12 val (mmseg protocol)"
    )
    parser.add_argument("--voc-root", type=Path, required=True, help="VOCdevkit folder with VOC2012")
    parser.add_argument("--weights", type=weights_path, required=True, help="convert-mmseg .pth or 'none' (random)")
    parser.add_argument("--arch", choices=sorted(convert.DEPTHS), required=True)
    parser.add_argument("--protocol-json", required=True, help="JSON object of the finetune.voc_segmentation settings")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--out", type=Path, required=True, help="output folder (metrics.json; work/ for mmengine)")
    parser.set_defaults(func=_voc_segmentation)
