"""`python -m finetune linear-eval` and `python -m finetune few-shot`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.architectures import RESNETS
from finetune.classification.data import LAYOUTS
from finetune.classification.protocols import FewShotProtocol, LinearProtocol
from finetune.common import positive_int, weights_path


def _linear_eval(protocol_json: str, **kwargs: Any) -> None:
    # Imported here, so `python -m finetune` also starts in the Detectron2 and mmseg envs, which lack
    # the pretrain stage's dependencies and scikit-learn.
    from finetune.classification import linear

    linear.run(protocol=LinearProtocol.from_json(protocol_json), **kwargs)


def _few_shot(protocol_json: str, **kwargs: Any) -> None:
    from finetune.classification import few_shot

    few_shot.run(protocol=FewShotProtocol.from_json(protocol_json), **kwargs)


def _add(subparsers: argparse._SubParsersAction, name: str, help: str, section: str,
         run: Callable[..., Any]) -> None:
    parser = subparsers.add_parser(name, help=help)
    parser.add_argument("--data-root", type=Path, required=True, help="dataset root in the --layout layout")
    parser.add_argument("--layout", choices=LAYOUTS, required=True,
                        help="tinyimagenet: wnids.txt, train/<wnid>/images, val/; imagefolder: <split>/<class>/<image>")
    parser.add_argument("--backbone", type=weights_path, required=True,
                        help="backbone.pth (torchvision ResNet, no fc) or 'none' (random init from --seed)")
    parser.add_argument("--arch", choices=RESNETS, required=True)
    parser.add_argument("--protocol-json", required=True, help=f"JSON object of the finetune.{section} settings")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--threads", type=positive_int, default=1, help="torch and BLAS CPU threads")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--out", type=Path, required=True,
                        help="output folder: metrics.json, work/ (features, checkpoints)")
    parser.set_defaults(func=lambda args: run(**{k: v for k, v in vars(args).items() if k not in ("func", "command")}))


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the frozen-feature classification subcommands to `python -m finetune`."""
    _add(subparsers, "linear-eval",
         "linear classifier on frozen global-average-pooled features (Moon et al. / Wang & Isola STL-10 protocol)",
         "linear_eval", _linear_eval)
    _add(subparsers, "few-shot",
         "N-way K-shot logistic regression on frozen features, mean top-1 and 95%% CI (LC-loss Table 7)",
         "few_shot", _few_shot)
