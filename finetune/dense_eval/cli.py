"""`python -m finetune davis` and `python -m finetune segment-search`: dense evaluations of frozen features."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.architectures import RESNETS
from finetune.common import positive_int, weights_path


def _add(subparsers: argparse._SubParsersAction, name: str, help: str, data_help: str, section: str,
         run: Callable[..., Any]) -> None:
    parser = subparsers.add_parser(name, help=help)
    parser.add_argument("--data-root", type=Path, required=True, help=data_help)
    parser.add_argument("--backbone", type=weights_path, required=True,
                        help="backbone.pth (torchvision ResNet, no fc) or 'none' (random init from --seed)")
    parser.add_argument("--embedding", type=Path, help="embedding.pth of the backbone's pretraining run: its dense "
                        "embedding is the feature where the protocol has embedding: true and the file holds a head")
    parser.add_argument("--arch", choices=RESNETS, required=True)
    parser.add_argument("--protocol-json", required=True, help=f"JSON object of the finetune.{section} settings")
    parser.add_argument("--seed", type=int, required=True, help="random init (with --backbone none) and K-means")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, required=True, help="output folder: metrics.json, work/ to resume")
    parser.set_defaults(func=lambda args: run(**{k: v for k, v in vars(args).items() if k not in ("func", "command")}))


def _davis(protocol_json: str, **kwargs: Any) -> None:
    from finetune.dense_eval import davis

    davis.run(protocol=davis.DavisProtocol.from_json(protocol_json), **kwargs)


def _segment_search(protocol_json: str, **kwargs: Any) -> None:
    from finetune.dense_eval import segment_search

    segment_search.run(protocol=segment_search.SegmentSearchProtocol.from_json(protocol_json), **kwargs)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the dense-evaluation subcommands to `python -m finetune`."""
    _add(subparsers, "davis", "DAVIS mask tracking by label propagation on frozen features (J, F)",
         "DAVIS folder with JPEGImages/480p and Annotations/480p", "davis", _davis)
    _add(subparsers, "segment-search", "K-means segment retrieval on VOC 2012 with frozen features (per-class IoU)",
         "VOCdevkit folder (or its VOC2012 folder) with the segmentation layout", "segment_search", _segment_search)
