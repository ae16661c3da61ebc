"""The alignment/uniformity sweep as a table: one row per pretrained model, its objective and its
held-out L_a / L_u at instance and dense level (dense_alignment_uniformity.md Sec. 4.1). Table 3 of
the analysis correlates these with transfer performance; this table is its input, readable alone.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.tables import write_table
from core.errors import UserError
from core.io import read_json


def sweep_frame(members: list[dict[str, Any]]) -> pd.DataFrame:
    """members: {run, data, member: {scheme, loss, temperature | align_weight, uniform_weight}, metrics: path}."""
    rows = []
    for spec in members:
        if not Path(spec["metrics"]).is_file():
            raise UserError(f"missing {spec['metrics']}: run `snakemake {spec['metrics']}` first.")
        measured = read_json(spec["metrics"])
        member = spec["member"]
        rows.append({
            "image set": spec["data"], "scheme": member["scheme"], "loss": member["loss"],
            "tau": member.get("temperature"), "w_a": member.get("align_weight"), "w_u": member.get("uniform_weight"),
            "instance L_a": measured["instance"]["align"], "instance L_u": measured["instance"]["uniform"],
            "dense L_a": measured["dense"]["align"], "dense L_u": measured["dense"]["uniform"],
            "dense L_u same-index": measured["dense"]["uniform_same_index"],
            "held-out images": measured["images"], "run": spec["run"],
        })
    return pd.DataFrame(rows)


def write_sweep_table(members: list[dict[str, Any]], out_csv: str | Path, out_md: str | Path) -> pd.DataFrame:
    frame = sweep_frame(members)
    notes = ["L_a: alignment (Wang & Isola, alpha = 2), L_u: uniformity (Gaussian potential, t = 2), measured on "
             "the image set's held-out split with two augmented views per image; lower is better for both.",
             "dense L_u same-index: the paper's printed dense L_u (t = 1, pairs of images at the same index).",
             "instance: global-average-pooled backbone features; dense: per-position backbone features, paired by "
             "index, measured for every model whatever its training scheme (paper Fig. 2 caption)."]
    write_table(frame, out_csv, out_md, "Alignment/uniformity sweep (dense index-wise contrast)", notes)
    return frame


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("sweep-table", help="the alignment/uniformity sweep's models and their L_a, L_u")
    p.add_argument("--spec-json", required=True, help="members: run, data, member settings, metrics file")
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", required=True)
    p.set_defaults(func=lambda a: write_sweep_table(json.loads(a.spec_json), a.out_csv, a.out_md))
