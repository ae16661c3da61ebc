"""Paper tables from metrics files: our value (mean +- std over trials), the paper's value for the same
cell with its source, the difference, and each row's provenance (`python -m analysis paper-table`).

The spec (built by the DAG from the active config) lists the rows and, per row, the metrics.json
files of each source (a transfer protocol over seeds, or one analysis probe). A column whose source
the row lacks stays empty: the table never shows a value that was not measured.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.reference import load_reference
from analysis.table_specs import TABLES
from analysis.tables import trials
from core.errors import UserError
from core.io import read_json, write_text
from core.provenance import config_hash

# How the papers name each row (method registry name -> label); imported labels are shown as given.
METHOD_LABELS = {"random": "random init", "mocov2": "MoCo v2", "densecl": "DenseCL", "houghcl": "HoughCL",
                 "byol": "BYOL", "lcloss": "LC-loss", "pixpro": "PixPro", "index_contrast": "Dense index-wise contrast",
                 "soco": "SoCo", "d3ssl": "D3SSL", "hiergroup": "Hierarchical grouping"}


def row_label(key: str) -> str:
    """A row's label: the method's name, with the variant for an ablation row (`<method>/<variant>`)."""
    method, _, variant = key.partition("/")
    label = METHOD_LABELS.get(method, method)
    return f"{label} / {variant}" if variant else label


def _load(path: str) -> dict[str, Any]:
    if not Path(path).is_file():
        raise UserError(f"missing result {path}: run `snakemake {path}` first.")
    return read_json(path)


def _metric(result: dict[str, Any], metric: str, path: str) -> float:
    if metric not in result["metrics"]:
        raise UserError(f"{path} has no metric {metric!r} (it has {sorted(result['metrics'])}); "
                        "delete it and rerun its rule with the current code.")
    return float(result["metrics"][metric])


def row_provenance(meta_path: str | None, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Where a row comes from: its pretraining run (or import, or none) and the runs measuring it."""
    meta = _load(meta_path) if meta_path else None
    pretrained_here = meta is not None and "provenance" in meta  # imported checkpoints have no run of ours
    if meta is None:
        pretrain_data, hashes, commits = "none", [], set()
    elif pretrained_here:
        pretrain_data = meta["pretrain_data"]["name"]
        hashes, commits = [meta["provenance"]["config_hash"]], {meta["provenance"]["commit"]}
    else:
        pretrain_data, hashes, commits = f"published ({meta['layout']})", [meta["sha256"]], set()
    hashes += sorted({r["provenance"]["config_hash"] for r in results})
    return {
        "pretrain_data": pretrain_data,
        "pretrain_iterations": meta["iterations"] if pretrained_here else 0,
        "pretrain_seed": meta["provenance"]["seed"] if pretrained_here else "",
        "seeds": " ".join(str(s) for s in sorted({r["provenance"]["seed"] for r in results})),
        "config_hash": config_hash(hashes),
        "commit": " ".join(sorted({r["provenance"]["commit"] for r in results} | commits)),
    }


def table_frames(number: int, rows: list[dict[str, Any]], scale: str,
                 reference: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(cells, provenance): one line per measured cell with the paper's value; one line per row."""
    ref = reference[reference["table"] == number].set_index(["row", "column"])
    cells, provenance = [], []
    for row in rows:
        loaded = {source: [(path, _load(path)) for path in paths] for source, paths in row["sources"].items()}
        for column in TABLES[number].columns:
            source, metric = column.split("/", 1)
            if source not in loaded:
                continue
            mean, std = trials([_metric(result, metric, path) for path, result in loaded[source]])
            paper = ref.loc[(row["key"], column)] if (row["key"], column) in ref.index else None
            cells.append({
                "table": number, "row": row["key"], "method": row_label(row["key"]),
                "column": column, "ours": mean, "std": std, "trials": len(loaded[source]),
                "paper": None if paper is None else float(paper["value"]),
                "paper_source": None if paper is None else f"{paper['paper']} {paper['paper_table']}",
                "difference": None if paper is None else mean - float(paper["value"]),
                "run": row["run"], "scale": scale,
            })
        measured = [result for entries in loaded.values() for _, result in entries]
        if measured:
            provenance.append({"method": row_label(row["key"]), "run": row["run"],
                               "scale": scale, **row_provenance(row["meta"], measured)})
    return pd.DataFrame(cells), pd.DataFrame(provenance)


def _cell(line: pd.Series, digits: int) -> str:
    ours = f"{line['ours']:.{digits}f}" + ("" if pd.isna(line["std"]) else f" ± {line['std']:.{digits}f}")
    return ours if pd.isna(line["paper"]) else f"{ours} ({line['paper']:g}, {line['difference']:+.{digits}f})"


def write_paper_table(number: int, rows: list[dict[str, Any]], scale: str, out_csv: str | Path, out_md: str | Path,
                      reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """Write table `number` as long CSV (one measured cell per line) and Markdown (methods x columns)."""
    spec = TABLES[number]
    cells, provenance = table_frames(number, rows, scale, load_reference() if reference is None else reference)
    write_text(out_csv, cells.to_csv(index=False, float_format="%.4f") if len(cells) else "")
    lines = [f"# {spec.title}", "", f"Mirrors: {spec.mirrors}. Scale: {scale}."]
    if scale == "smoke":
        lines.append("Smoke numbers check that every stage runs (ResNet-18, tiny data, few iterations); "
                     "they are not comparable with the papers'.")
    if len(cells):
        wide = cells.assign(cell=cells.apply(_cell, axis=1, digits=spec.digits)).pivot_table(
            index="method", columns="column", values="cell", aggfunc="first", sort=False)
        wide = wide[[c for c in spec.columns if c in wide.columns]].fillna("").reset_index()
        sources = cells.dropna(subset=["paper_source"])["paper_source"].unique()
        lines += ["", wide.to_markdown(index=False, disable_numparse=True), "",
                  "Cells: ours (mean ± std over trials when there are several), then (paper, ours - paper) where the "
                  "paper reports the cell" + (f"; paper values from {', '.join(sources)}" if len(sources) else "")
                  + ". Columns are `<protocol or probe>/<metric>`; a column without a configured source is absent.",
                  "", "## Provenance", "", provenance.to_markdown(index=False)]
    else:
        lines += ["", "No cell of this table is configured at this scale."]
    write_text(out_md, "\n".join(lines) + "\n")
    return cells


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("paper-table", help="a paper table (1, 4-11) with the papers' values and provenance")
    p.add_argument("--table", type=int, choices=sorted(TABLES), required=True)
    p.add_argument("--spec-json", required=True, help="rows: key, run, meta, metrics files per source")
    p.add_argument("--scale", required=True)
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", required=True)
    p.set_defaults(func=lambda a: write_paper_table(a.table, json.loads(a.spec_json), a.scale, a.out_csv, a.out_md))
