"""`python -m prepare <command>`: dataset builders and data preparation."""

from __future__ import annotations

import argparse

from core.errors import run_cli
from prepare import coco, image_list, voc


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m prepare", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for module in (coco, voc, image_list):
        module.register(commands)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    run_cli(main)
