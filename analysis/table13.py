"""Table 13: quality of the data preparation. BSDS500 boundaries of our structured edges and their
OWT-UCM hierarchy (the region trees of hierarchical grouping, Sec. 4.1) next to the published
numbers, and the selective-search proposal store (D3SSL Sec. 4 / SoCo) against COCO's boxes."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.tables import write_table
from core.errors import UserError
from core.io import read_json

# Our BSDS rows, and the published row measuring the same method (None: no published counterpart).
SAME_METHOD = {"SE edges + NMS (ours)": "SE edges (Dollar & Zitnick, TPAMI 2014)", "SE + OWT-UCM (ours)": None}


def _read(path: str | Path, fix: str) -> Path:
    if not Path(path).is_file():
        raise UserError(f"missing {path}: {fix}")
    return Path(path)


def table13_frame(bsds_csv: str | Path, proposals_json: str | Path) -> pd.DataFrame:
    """Long format: component, metric, ours, published value of the same method, its source, difference."""
    bsds = pd.read_csv(_read(bsds_csv, "run `snakemake results/prepare/edges/bsds_test.csv`.")).set_index("method")
    rows: list[dict[str, Any]] = []
    for ours, published in SAME_METHOD.items():
        for metric in ("ODS", "OIS", "AP", "s/img"):
            value = bsds.loc[ours, metric]
            paper = bsds.loc[published, metric] if published else float("nan")
            rows.append({"component": ours.removesuffix(" (ours)"), "metric": metric, "ours": value,
                         "paper": paper, "paper_source": published if pd.notna(paper) else None,
                         "difference": value - paper})
    compared = [*SAME_METHOD, *filter(None, SAME_METHOD.values())]
    for method in bsds.index.difference(compared):  # other published rows, for reference
        for metric in ("ODS", "OIS"):
            if pd.notna(bsds.loc[method, metric]):
                rows.append({"component": method, "metric": metric, "ours": float("nan"),
                             "paper": bsds.loc[method, metric], "paper_source": method, "difference": float("nan")})
    quality = read_json(_read(proposals_json, "run `snakemake results/analysis/proposal_quality.json`."))
    for metric in ("recall@0.5", "recall@0.7", "ABO", "proposals_per_image", "seconds_per_image"):
        rows.append({"component": "selective search (filtered store)", "metric": metric, "ours": quality[metric],
                     "paper": float("nan"), "paper_source": None, "difference": float("nan")})
    return pd.DataFrame(rows)


def write_table13(bsds_csv: str | Path, proposals_json: str | Path, scale: str, out_csv: str | Path,
                  out_md: str | Path) -> pd.DataFrame:
    frame = table13_frame(bsds_csv, proposals_json)
    quality = read_json(proposals_json)
    notes = [f"scale: {scale}.",
             "BSDS500 test: boundary benchmark of Arbelaez et al. (TPAMI 2011); published rows are the original "
             "papers' numbers (gPb-owt-ucm is a different method, shown for reference: no difference).",
             f"Proposals: {quality['images']} images, {quality['gt_boxes']} non-crowd COCO boxes; recall = share of "
             "boxes with a proposal at IoU >= the threshold, ABO = mean best IoU (percent); the store keeps only "
             f"boxes passing SoCo's filters {quality['settings']['filters']} (sizes 0.3-0.8 of the image first), so "
             "small objects are not covered by design. Seconds per image: the shard jobs' wall time.",
             "No paper of the five reports proposal recall or BSDS scores of its own preparation."]
    write_table(frame, out_csv, out_md, "Table 13: data-preparation quality", notes)
    return frame


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("table13", help="data-preparation quality: BSDS500 boundaries and proposal recall")
    p.add_argument("--bsds", required=True, help="bsds_test.csv of rule bsds_table")
    p.add_argument("--proposals", required=True, help="JSON of `python -m analysis proposal-quality`")
    p.add_argument("--scale", required=True)
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", required=True)
    p.set_defaults(func=lambda a: write_table13(a.bsds, a.proposals, a.scale, a.out_csv, a.out_md))
