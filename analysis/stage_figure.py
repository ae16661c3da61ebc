"""Coupling rate and mean cosine similarity per ResNet stage, one line per method (D3SSL Fig. 3b / 4b
style), from table 5's long CSV."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from core.errors import UserError
from core.io import atomic_path

STAGES = ("C2", "C3", "C4", "C5")
PANELS = {"CR": "coupling rate\n(higher: more coupled)",
          "MCS": "mean cosine similarity\n(lower: more positional information)"}


def plot_stage_curves(table5_csv: str | Path, out_png: str | Path) -> None:
    if not Path(table5_csv).is_file():
        raise UserError(f"missing {table5_csv}: run `snakemake {table5_csv}` first.")
    cells = pd.read_csv(table5_csv)
    fig = Figure(figsize=(9, 3.6))
    for ax, (measure, title) in zip(fig.subplots(1, 2), PANELS.items(), strict=True):
        for method, group in cells.groupby("method", sort=False):
            values = group.set_index("column")["ours"]
            stages = [s for s in STAGES if f"coupling/{measure}_{s}" in values.index]
            ax.plot(stages, [values[f"coupling/{measure}_{s}"] for s in stages], marker="o", label=method)
        ax.set(title=title, xlabel="ResNet stage")
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=120)


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("stage-figure", help="CR and MCS per stage, one line per method (from table 5)")
    p.add_argument("--table5", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=lambda a: plot_stage_curves(a.table5, a.out))
