"""Figures: pretraining loss curves from each run's train_log.csv."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on cluster nodes or CI
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from core.errors import UserError  # noqa: E402
from core.io import atomic_path  # noqa: E402


def plot_pretrain_losses(run_dirs: list[str], out_png: str) -> None:
    """One panel per loss column (loss, loss_global, loss_dense, ...), one line per run."""
    logs = {}
    for run_dir in run_dirs:
        path = Path(run_dir) / "train_log.csv"
        if not path.is_file():
            raise UserError(f"{path} is missing: rerun the pretraining of {Path(run_dir).name}.")
        logs[Path(run_dir).name] = pd.read_csv(path)
    columns = sorted({c for log in logs.values() for c in log.columns if c.startswith("loss")})
    fig, axes = plt.subplots(1, len(columns), figsize=(4.5 * len(columns), 3.5), squeeze=False)
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
    plt.close(fig)
