"""`python -m pretrain <command>`: train a method, or export a backbone from a training state."""

from __future__ import annotations

import argparse
import json
import logging

from core.errors import run_cli
from core.io import read_json
from pretrain.export import export, load_training_state
from pretrain.methods import method_class
from pretrain.runs import METHOD_EMBEDDING
from pretrain.train import train


def _train(args: argparse.Namespace) -> None:
    train(args.method, args.image_list, json.loads(args.config_json), args.seed, args.out, args.data_name,
          device=args.device, threads=args.threads, prepared=args.prepared)


def _export(args: argparse.Namespace) -> None:
    """Re-export from any saved state (e.g. an intermediate one), keeping the run's meta.json fields."""
    state = load_training_state(args.state)
    meta = read_json(args.meta) if args.meta else {}
    export(state["model"], {**meta, "iterations": state["iteration"]}, args.out, METHOD_EMBEDDING.get(args.method))


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    parser = argparse.ArgumentParser(prog="python -m pretrain", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("train", help="pretrain one method and export its backbone (under torchrun: data-parallel, "
                                          "pretrain.batch_size split over the processes)")
    p.add_argument("--method", required=True)
    p.add_argument("--image-list", required=True, help="file from `python -m prepare image-list`")
    p.add_argument("--config-json", required=True, help="the config's `pretrain` section as JSON")
    p.add_argument("--data-name", required=True, help="name of the pretraining data, recorded in meta.json")
    p.add_argument("--prepared", help="index.json of the proposals / region trees a region-level method reads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True, help="run folder: state.pth, backbone.pth, meta.json")
    p.set_defaults(func=_train)
    p = commands.add_parser("export", help="write backbone.pth, embedding.pth and meta.json from a training state")
    p.add_argument("--method", required=True, type=lambda name: method_class(name) and name,
                   help="the method whose state it is (its embedding head is exported)")
    p.add_argument("--state", required=True)
    p.add_argument("--meta", help="a meta.json whose fields to keep")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_export)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    run_cli(main)
