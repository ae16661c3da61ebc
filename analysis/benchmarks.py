"""Time and memory of every job, from the files Snakemake's `benchmark:` directive writes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.tables import write_table


def summarise_benchmarks(files: list[str], out_csv: str, out_md: str) -> pd.DataFrame:
    """One row per job (wall seconds, peak RSS, CPU seconds), slowest first, with a total row."""
    rows = []
    for path in files:
        bench = pd.read_csv(path, sep="\t").iloc[-1]  # several rows only with `repeat()`; take the last
        parts = Path(path).with_suffix("").parts
        job = "/".join(parts[len(parts) - parts[::-1].index("benchmarks"):])  # the path below benchmarks/
        rows.append({"job": job, "wall_s": float(bench["s"]),
                     "max_rss_mb": float(bench["max_rss"]), "cpu_s": float(bench["cpu_time"])})
    frame = pd.DataFrame(rows).sort_values("wall_s", ascending=False, kind="stable")
    total = {"job": "total (sum over jobs)", "wall_s": frame["wall_s"].sum(), "max_rss_mb": frame["max_rss_mb"].max(),
             "cpu_s": frame["cpu_s"].sum()}
    frame = pd.concat([frame, pd.DataFrame([total])], ignore_index=True)
    notes = ["wall_s: wall-clock seconds; max_rss_mb: peak resident memory; cpu_s: CPU seconds (Snakemake benchmark).",
             "Jobs run in parallel up to the core count, so the DAG's wall time is below the sum."]
    write_table(frame, out_csv, out_md, "Time and memory per job", notes)
    return frame
