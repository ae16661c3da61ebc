"""Table 2 of D3SSL: statistics of OpenImage-MINI and COCO, as measured next to the paper's numbers.

Reads the stats.json of `python -m prepare openimages-mini`, which holds both the selected subset and its
COCO reference (the instances file whose per-class counts capped the selection).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.reference import PAPERS, reference_for
from analysis.tables import write_table
from core.errors import UserError
from core.io import read_json

# The paper's values come from the reference file (analysis/reference/paper_values.csv, table 2); the
# image counts are rounded to thousands there ("146K", "118K").
DATASETS = {"OpenImage-MINI": "openimages_mini", "COCO": "coco"}  # reference row of each dataset
STATS_KEYS = {"OpenImage-MINI": "openimage_mini", "COCO": "coco"}  # stats.json key of each dataset
COLUMNS = {"images": "#Imgs", "objects_per_image": "#Obj/Img", "categories_per_image": "#Cat/Img",
           "categories": "#Cat"}


def _row(dataset: str, source: str, values: dict[str, Any]) -> dict[str, Any]:
    return {"dataset": dataset, "source": source, **{column: values[key] for key, column in COLUMNS.items()}}


def write_table2(stats_json: str | Path, out_csv: str | Path, out_md: str | Path) -> pd.DataFrame:
    """Write Table 2 (paper row, then our row, per dataset) as CSV and Markdown; return the frame."""
    if not Path(stats_json).is_file():
        raise UserError(f"missing {stats_json}: build it with `python -m prepare openimages-mini` first.")
    stats = read_json(stats_json)
    missing = [key for key in (*STATS_KEYS.values(), "selection", "inputs") if key not in stats]
    if missing:
        raise UserError(f"{stats_json} lacks {', '.join(missing)}; rebuild it with "
                        "`python -m prepare openimages-mini`.")
    reference = reference_for(2)
    rows = []
    for dataset, key in DATASETS.items():
        paper = reference[reference["row"] == key].set_index("column")["value"].to_dict()
        paper.update({count: int(paper[count]) for count in ("images", "categories")})  # counts, printed as such
        rows += [_row(dataset, "paper", paper), _row(dataset, "ours", stats[STATS_KEYS[dataset]])]
    frame = pd.DataFrame(rows)
    notes = [
        f"paper: {PAPERS['d3ssl']}, Table 2.",
        f"ours: OpenImage-MINI selected from {stats['inputs']['boxes']} with COCO counts from "
        f"{stats['coco']['annotations']}; order: {stats['selection']['order']}, seed {stats['selection']['seed']}.",
        "#Obj/Img = boxes / images (group-of boxes and COCO crowd annotations count as one object each); "
        "#Cat/Img = mean number of distinct categories per image; #Cat = categories with >= 1 object.",
        "A smoke build (COCO-mini photos in the OpenImages schema, COCO-mini train2017 as the reference) only "
        "checks the pipeline; its numbers are not comparable with the paper's.",
    ]
    write_table(frame, out_csv, out_md, "Table 2: OpenImage-MINI and COCO statistics", notes)
    return frame


def _run(args: argparse.Namespace) -> None:
    write_table2(args.stats, args.out_csv, args.out_md)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("table2", help="OpenImage-MINI vs COCO statistics (D3SSL Table 2)",
                                   description=__doc__)
    parser.add_argument("--stats", type=Path, required=True, help="stats.json of `python -m prepare openimages-mini`")
    parser.add_argument("--out-csv", type=Path, required=True)
    parser.add_argument("--out-md", type=Path, required=True)
    parser.set_defaults(func=_run)
