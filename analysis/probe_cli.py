"""The command-line contract shared by every per-checkpoint analysis probe (`python -m analysis <probe>`).

A probe measures one property of one frozen backbone on one dataset and writes `<out>/metrics.json`
(last, atomically) as {"probe", "metrics": {name: number}, "weights", "arch", "provenance", ...}; the
tables read nothing else. The arguments mirror `python -m finetune linear-eval` so that one Snakemake
rule serves every probe.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.architectures import RESNETS
from core.io import write_json
from core.provenance import provenance
from finetune.common import positive_int, weights_path


def add_probe(subparsers: argparse._SubParsersAction, name: str, help: str, data_help: str,
              run: Callable[..., Any]) -> argparse.ArgumentParser:
    """A probe subcommand; `run` gets data_root, backbone (Path | None), arch, protocol_json, seed, threads, out."""
    parser = subparsers.add_parser(name, help=help)
    parser.add_argument("--data-root", type=Path, required=True, help=data_help)
    parser.add_argument("--backbone", type=weights_path, required=True,
                        help="backbone.pth (torchvision ResNet, no fc) or 'none' (random init from --seed)")
    parser.add_argument("--arch", choices=RESNETS, required=True)
    parser.add_argument("--protocol-json", required=True, help="JSON object: analysis.probes.<name>")
    parser.add_argument("--seed", type=int, required=True, help="random init (with --backbone none) and sampling")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, required=True, help="output folder: metrics.json (and work/ to resume)")
    parser.set_defaults(func=lambda args: run(**{k: v for k, v in vars(args).items() if k not in ("func", "command")}))
    return parser


def write_probe_metrics(out: Path, probe: str, metrics: dict[str, float], *, protocol: dict[str, Any],
                        backbone: Path | None, arch: str, seed: int, **extra: Any) -> dict[str, Any]:
    """Write `out`/metrics.json last and atomically (a present file means a finished probe); return it."""
    summary = {"probe": probe, "metrics": metrics, "weights": None if backbone is None else str(backbone),
               "arch": arch, **extra, "provenance": provenance(protocol, seed)}
    write_json(Path(out) / "metrics.json", summary)
    return summary
