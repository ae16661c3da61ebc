"""Time and memory of every job, from the files Snakemake's `benchmark:` directive writes, per stage and per job."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.tables import write_table

NOTES = [
    "wall_s: wall-clock seconds; max_rss_mb: peak resident memory; cpu_s: CPU seconds (Snakemake benchmark).",
    "Jobs run in parallel up to the core count, so the DAG's wall time is below the sum; "
    "`benchmarks/demo_profile.py` gives the run's wall time, per-rule sums and the critical path.",
    "Under `make demo` a `python -m` job runs in a fork of the prefork server (core/prefork.py): its max_rss_mb "
    "and cpu_s are those of the `python` shim Snakemake started, its wall_s the job's.",
]


def _job_name(path: str) -> str:
    """The path below benchmarks/, without .tsv."""
    parts = Path(path).with_suffix("").parts
    return "/".join(parts[len(parts) - parts[::-1].index("benchmarks"):])


def summarise_benchmarks(stages: dict[str, list[str]], out_csv: str, out_md: str) -> pd.DataFrame:
    """One row per job (stage, wall seconds, peak RSS, CPU seconds), slowest first, with a total row; the
    Markdown starts with the per-stage sums."""
    rows = []
    for stage, files in stages.items():
        for path in files:
            bench = pd.read_csv(path, sep="\t").iloc[-1]  # several rows only with `repeat()`; take the last
            rows.append({"stage": stage, "job": _job_name(path), "wall_s": float(bench["s"]),
                         "max_rss_mb": float(bench["max_rss"]), "cpu_s": float(bench["cpu_time"])})
    frame = pd.DataFrame(rows).sort_values("wall_s", ascending=False, kind="stable")
    total = {"stage": "all", "job": "total (sum over jobs)", "wall_s": frame["wall_s"].sum(),
             "max_rss_mb": frame["max_rss_mb"].max(), "cpu_s": frame["cpu_s"].sum()}
    per_stage = frame.groupby("stage", sort=False).agg(jobs=("job", "size"), wall_s=("wall_s", "sum"),
                                                       max_job_s=("wall_s", "max"), cpu_s=("cpu_s", "sum"))
    per_stage = per_stage.reindex([stage for stage in stages if stage in per_stage.index]).reset_index()
    per_stage["share"] = (per_stage["wall_s"] / total["wall_s"]).map("{:.1%}".format)
    frame = pd.concat([frame, pd.DataFrame([total])], ignore_index=True)
    stage_md = ["# Time per stage", "", per_stage.to_markdown(index=False, floatfmt=".1f"), ""]
    write_table(frame, out_csv, out_md, "Time and memory per job", NOTES, markdown_before=stage_md)
    return frame
