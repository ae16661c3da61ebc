"""`python -m finetune convert-d2` and `python -m finetune voc-detection`."""

from __future__ import annotations

import argparse
from pathlib import Path

from finetune.common import positive_int, weights_path
from finetune.detection import convert


def _convert_d2(args: argparse.Namespace) -> None:
    arch = convert.convert(args.backbone, args.out)
    print(f"wrote {args.out} ({arch}, Detectron2 names)")


def _voc_detection(args: argparse.Namespace) -> None:
    # Imported here, so `python -m finetune` also starts in environments without Detectron2 (envs/mmseg.yml).
    from finetune.detection import train

    train.run(
        voc_root=args.voc_root,
        weights=args.weights,
        arch=args.arch,
        protocol=train.parse_protocol(args.protocol_json),
        seed=args.seed,
        threads=args.threads,
        device=args.device,
        out=args.out,
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the detection subcommands to `python -m finetune`."""
    parser = subparsers.add_parser(
        "convert-d2", help="convert a torchvision ResNet backbone.pth into a Detectron2 weights pickle"
    )
    parser.add_argument("--backbone", type=Path, required=True, help="backbone.pth (torchvision ResNet, no fc)")
    parser.add_argument("--out", type=Path, required=True, help="output .pkl")
    parser.set_defaults(func=_convert_d2)

    parser = subparsers.add_parser(
        "voc-detection", help="fine-tune Faster R-CNN C4 on VOC07+12, evaluate on VOC07 test (MoCo protocol)"
    )
    parser.add_argument("--voc-root", type=Path, required=True, help="VOCdevkit folder with VOC2007 and VOC2012")
    parser.add_argument("--weights", type=weights_path, required=True, help="convert-d2 .pkl or 'none' (random init)")
    parser.add_argument("--arch", choices=list(convert.DEPTHS), required=True)
    parser.add_argument("--protocol-json", required=True, help="JSON object of the finetune.voc_detection settings")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--out", type=Path, required=True, help="output folder (metrics.json; work/ for Detectron2)")
    parser.set_defaults(func=_voc_detection)
