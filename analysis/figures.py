"""Figures: pretraining loss curves from each run's train_log.csv."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure  # the object API: no pyplot state, no display backend needed

from core.errors import UserError
from core.io import atomic_path


def plot_pretrain_losses(run_dirs: list[str], out_png: str) -> None:
    """One panel per loss column (loss, loss_global, loss_dense, ...), one line per run."""
    logs = {}
    for run_dir in run_dirs:
        path = Path(run_dir) / "train_log.csv"
        if not path.is_file():
            raise UserError(f"{path} is missing: rerun the pretraining of {Path(run_dir).name}.")
        logs[Path(run_dir).name] = pd.read_csv(path)
    columns = sorted({c for log in logs.values() for c in log.columns if c.startswith("loss")})
    fig = Figure(figsize=(4.5 * len(columns), 3.5))
    axes = fig.subplots(1, len(columns), squeeze=False)
    for ax, column in zip(axes[0], columns, strict=True):
        for run, log in logs.items():
            if column in log:
                ax.plot(log["iteration"], log[column], label=run)
        ax.set(title=column, xlabel="iteration")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
