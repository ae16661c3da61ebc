"""Writing a table as CSV and Markdown together, atomically."""

from __future__ import annotations

from pathlib import Path
from statistics import mean, stdev

import pandas as pd

from core.io import write_text


def write_table(frame: pd.DataFrame, out_csv: str | Path, out_md: str | Path, title: str, notes: list[str],
                markdown_before: list[str] = ()) -> None:
    """CSV for machines; Markdown (`markdown_before` lines, then title, table, notes) for people."""
    write_text(out_csv, frame.to_csv(index=False, float_format="%.2f"))
    lines = [*markdown_before, f"# {title}", "", frame.to_markdown(index=False, floatfmt=".2f"), ""]
    lines += [f"- {note}" for note in notes]
    write_text(out_md, "\n".join(lines) + "\n")


def trials(values: list[float]) -> tuple[float, float | None]:
    """Mean over the fine-tuning trials, and their sample std when there are several (else None)."""
    return mean(values), (stdev(values) if len(values) > 1 else None)
