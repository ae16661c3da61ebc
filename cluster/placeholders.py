"""`python -m cluster placeholders`: empty dataset roots (and imported checkpoints) so a paper-scale dry run
works without the data.

At paper scale every dataset root must exist before Snakemake builds the DAG, holding the paths each
transfer protocol and image set reads (common.smk checks them; prepare/roots.py lists them), and a few
files under them are named as inputs of rules (the OpenImages CSVs of openimages_mini, COCO's train2017
annotations of coco_subset). Nothing is read from the empty files and folders made here: they only let
`snakemake -n --config scale=paper` list the jobs on a machine without the datasets.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from core.errors import UserError
from core.io import write_text
from prepare.roots import protocol_dataset, protocol_layout

REPO = Path(__file__).resolve().parents[1]
PAPER_CONFIG = REPO / "workflow" / "config" / "paper.yaml"
# Files that rules name as inputs under a root (see the module docstring).
RULE_INPUTS = {"openimages": ("train-annotations-bbox.csv", "class-descriptions-boxable.csv")}


def placeholder_layouts(config: dict[str, Any]) -> dict[str, list[str]]:
    """Per dataset with a `root` in `config`: the relative paths (folders end with '/') its placeholder holds."""
    datasets = config.get("datasets") or {}
    rooted = [name for name, spec in datasets.items() if isinstance(spec, dict) and "root" in spec]
    layouts = {name: list(RULE_INPUTS.get(name, ())) for name in rooted}
    if not layouts:
        raise UserError("the config has no dataset with a `root` under `datasets`; nothing to make placeholders for.")
    for spec in config["finetune"]["protocols"].values():
        layouts.setdefault(protocol_dataset(spec), []).extend(protocol_layout(spec))
    for spec in config["pretrain"]["image_sets"].values():
        if "union" in spec:  # its members are image sets of their own
            continue
        # One folder per pattern, its wildcards named "placeholder"; the id list an image set keeps.
        folders = [pattern.replace("*", "placeholder") + "/" for pattern in spec["train"] + spec.get("heldout", [])]
        layouts.setdefault(spec["dataset"], []).extend(folders + ([spec["ids"]] if spec.get("ids") else []))
    return {name: sorted(set(paths)) for name, paths in layouts.items()}


def make_placeholders(out: Path, config_path: Path = PAPER_CONFIG) -> Path:
    """Create an empty root per dataset of `config_path` under `out`/roots and an empty file per imported
    checkpoint under `out`/checkpoints, and write `out`/roots.yaml pointing at them (`build: false`, as at paper
    scale); return the configfile's path."""
    config = yaml.safe_load(config_path.read_text()) or {}
    roots = {}
    for name, paths in placeholder_layouts(config).items():
        root = (out / "roots" / name).resolve()
        root.mkdir(parents=True, exist_ok=True)
        for relative in paths:
            if relative.endswith("/"):
                (root / relative).mkdir(parents=True, exist_ok=True)
            else:
                (root / relative).parent.mkdir(parents=True, exist_ok=True)
                (root / relative).touch()
        roots[name] = {"root": str(root), "build": False}
    overrides: dict[str, Any] = {"datasets": roots}
    imported = (config.get("finetune") or {}).get("imported") or {}
    for label, spec in imported.items():
        checkpoint = (out / "checkpoints" / Path(spec["checkpoint"]).name).resolve()
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.touch()
        overrides.setdefault("finetune", {"imported": {}})["imported"][label] = {"checkpoint": str(checkpoint)}
    configfile = out / "roots.yaml"
    header = "# Empty placeholder roots and checkpoints for a dry run (python -m cluster placeholders): no data.\n"
    write_text(configfile, header + yaml.safe_dump(overrides, sort_keys=False))
    return configfile


def _run(args: argparse.Namespace) -> None:
    print(make_placeholders(args.out, args.config))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("placeholders", help="empty dataset roots + a configfile for paper dry runs",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for the roots and roots.yaml")
    parser.add_argument("--config", type=Path, default=PAPER_CONFIG, help="scale config whose datasets to cover")
    parser.set_defaults(func=_run)
