"""`python -m cluster placeholders`: empty dataset roots so a paper-scale dry run works without the data.

At paper scale every dataset root must exist before Snakemake builds the DAG (common.smk checks them), and a
few files under them are named as inputs of rules (the OpenImages CSVs of openimages_mini, COCO's
train2017 annotations of coco_subset), so they must exist too. Nothing is read from them: they only let
`snakemake -n --config scale=paper` list the jobs on a machine without the datasets.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from core.errors import UserError
from core.io import write_text

REPO = Path(__file__).resolve().parents[1]
PAPER_CONFIG = REPO / "workflow" / "config" / "paper.yaml"
# Files that rules name as inputs under a root (see the module docstring); every other root is a bare folder.
PLACEHOLDER_FILES = {
    "openimages": ("train-annotations-bbox.csv", "class-descriptions-boxable.csv"),
    "coco": ("annotations/instances_train2017.json",),
}


def dataset_names(config_path: Path = PAPER_CONFIG) -> list[str]:
    """The datasets of a scale config that have a `root` (paper.yaml's `datasets` section)."""
    datasets = (yaml.safe_load(config_path.read_text()) or {}).get("datasets") or {}
    names = [name for name, spec in datasets.items() if isinstance(spec, dict) and "root" in spec]
    if not names:
        raise UserError(f"{config_path}: no dataset with a `root` under `datasets`; nothing to make placeholders for.")
    return names


def make_placeholders(out: Path, names: list[str]) -> Path:
    """Create an empty root per dataset under `out`/roots and write `out`/roots.yaml pointing at them
    (`build: false`, as at paper scale); return the configfile's path."""
    roots = {}
    for name in names:
        root = (out / "roots" / name).resolve()
        root.mkdir(parents=True, exist_ok=True)
        for relative in PLACEHOLDER_FILES.get(name, ()):
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            (root / relative).touch()
        roots[name] = {"root": str(root), "build": False}
    configfile = out / "roots.yaml"
    header = "# Empty placeholder roots for a dry run (python -m cluster placeholders): no data in them.\n"
    write_text(configfile, header + yaml.safe_dump({"datasets": roots}, sort_keys=False))
    return configfile


def _run(args: argparse.Namespace) -> None:
    print(make_placeholders(args.out, dataset_names(args.config)))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("placeholders", help="empty dataset roots + a configfile for paper dry runs",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for the roots and roots.yaml")
    parser.add_argument("--config", type=Path, default=PAPER_CONFIG, help="scale config whose datasets to cover")
    parser.set_defaults(func=_run)
