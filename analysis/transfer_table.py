"""The transfer table: every protocol's metrics for each of its rows, as mean +- std over the
fine-tuning trials (the papers average 2-5 trials), with the number of trials and provenance."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.tables import trials
from core.errors import UserError
from core.io import read_json, write_text


def _load(path: str, protocol: str, task: str) -> dict[str, Any]:
    if not Path(path).is_file():
        raise UserError(f"missing result {path}: run `snakemake {path}` first.")
    result = read_json(path)
    # The frozen-feature launchers record their task (linear_eval), not the config section (au_linear_eval).
    if result.get("protocol", protocol) not in (protocol, task):
        raise UserError(f"{path} holds protocol {result['protocol']!r}, not {protocol!r}; delete it and rerun.")
    return result


def transfer_frame(spec: list[dict[str, Any]]) -> pd.DataFrame:
    """Long format: one line per protocol, row and metric (scalar metrics; per-item breakdowns stay in
    the metrics files)."""
    lines = []
    for entry in spec:
        results = [_load(path, entry["protocol"], entry["task"]) for path in entry["metrics"]]
        names = [k for k, v in results[0]["metrics"].items() if isinstance(v, (int, float))]
        for name in names:
            mean, std = trials([float(r["metrics"][name]) for r in results])
            lines.append({
                "protocol": entry["protocol"], "task": entry["task"], "row": entry["label"], "metric": name,
                "mean": mean, "std": std, "trials": len(results),
                "seeds": " ".join(str(r["provenance"]["seed"]) for r in results),
                "run": entry["run"], "commit": " ".join(sorted({r["provenance"]["commit"] for r in results})),
            })
    return pd.DataFrame(lines)


def _cell(mean: float, std: float | None) -> str:
    return f"{mean:.2f}" if pd.isna(std) else f"{mean:.2f} ± {std:.2f}"


def write_transfer_table(spec: list[dict[str, Any]], scale: str, out_csv: str, out_md: str) -> None:
    frame = transfer_frame(spec)
    write_text(out_csv, frame.to_csv(index=False, float_format="%.4f"))
    lines = ["# Transfer: every protocol", "",
             f"scale: {scale}. Cells are mean ± std over the fine-tuning trials (std when there are several); "
             "per-seed files: results/finetune/<protocol>/<run>/s<seed>/metrics.json."]
    for protocol, group in frame.groupby("protocol", sort=False):
        wide = group.assign(cell=[_cell(m, s) for m, s in zip(group["mean"], group["std"], strict=True)]).pivot_table(
            index=["row", "trials"], columns="metric", values="cell", aggfunc="first", sort=False)
        wide = wide[list(dict.fromkeys(group["metric"]))].reset_index()
        lines += ["", f"## {protocol} ({group['task'].iloc[0]})", "", wide.to_markdown(index=False)]
    write_text(out_md, "\n".join(lines) + "\n")


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("transfer-table", help="every transfer protocol's metrics, mean +- std over trials")
    p.add_argument("--spec-json", required=True, help="entries: protocol, task, label, run, metrics files per seed")
    p.add_argument("--scale", required=True)
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", required=True)
    p.set_defaults(func=lambda a: write_transfer_table(json.loads(a.spec_json), a.scale, a.out_csv, a.out_md))
