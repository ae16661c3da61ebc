"""`python -m prepare <command>`: dataset builders and data preparation."""

from __future__ import annotations

import argparse

from core.cli import register_lazily
from core.errors import run_cli

# Each command's module, imported only when it runs: the builders and shard indexes start in a fraction of
# a second instead of importing higra, matplotlib and scipy for the region trees and the BSDS benchmark.
COMMANDS = {
    "coco": "prepare.coco",
    "voc": "prepare.voc",
    "bsds": "prepare.bsds",
    "image-list": "prepare.image_list",
    "openimages": "prepare.openimages",
    "openimages-mini": "prepare.openimages_mini",
    "coco-subset": "prepare.coco_subset",
    "proposals": "prepare.proposals",
    "edge-model": "prepare.edges.train",
    "region-trees": "prepare.region_trees",
    "shard-index": "prepare.shards",
    "bsds-predict": "prepare.bsds_predict",
    "bsds-eval": "prepare.bsds_eval",
    "tinyimagenet": "prepare.tinyimagenet",
    "imagenet": "prepare.imagenet",
    "cityscapes": "prepare.cityscapes",
    "davis": "prepare.davis",
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m prepare", description=__doc__)
    register_lazily(parser.add_subparsers(dest="command", required=True), COMMANDS, argv)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    run_cli(main)
