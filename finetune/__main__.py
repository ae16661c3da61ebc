"""`python -m finetune <command>`: checkpoint converters and transfer protocols."""

from __future__ import annotations

import argparse

from core.errors import run_cli
from finetune import import_cli
from finetune.classification import cli as classification_cli
from finetune.dense_eval import cli as dense_eval_cli
from finetune.detection import cli as detection_cli
from finetune.segmentation import cli as segmentation_cli


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m finetune", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for module in (detection_cli, segmentation_cli, dense_eval_cli, classification_cli, import_cli):
        module.register(commands)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    run_cli(main)
