"""`python -m prepare <command>`: dataset builders and data preparation."""

from __future__ import annotations

import argparse

from core.errors import run_cli
from prepare import (
    bsds,
    bsds_eval,
    bsds_predict,
    cityscapes,
    coco,
    coco_subset,
    davis,
    image_list,
    openimages,
    openimages_mini,
    proposals,
    region_trees,
    shards,
    tinyimagenet,
    voc,
)
from prepare.edges import train as edge_model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m prepare", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for module in (coco, voc, bsds, image_list, openimages, openimages_mini, coco_subset, proposals, edge_model,
                   region_trees, shards, bsds_predict, bsds_eval, tinyimagenet, cityscapes, davis):
        module.register(commands)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    run_cli(main)
