"""`python -m cluster <command>`: plan paper-scale cluster time without the datasets."""

from __future__ import annotations

import argparse

from cluster import gpu_plan, placeholders
from core.errors import run_cli


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m cluster`, every subcommand registered."""
    parser = argparse.ArgumentParser(prog="python -m cluster", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for module in (placeholders, gpu_plan):
        module.register(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    run_cli(main)
