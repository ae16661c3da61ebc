"""`python -m cluster gpu-plan`: GPU-hours per table at paper scale, from the real dry runs.

Tables are ours (results/table<N>.csv: the unified benchmark, tables 2, 3, 13) and each paper's own
(results/papers/<paper>/: one plan row per paper, all its tables; its experiments' pretraining included).
For each table target the paper dry run (`snakemake -n -p --profile slurm --config scale=paper`) lists
every job with its resources and shell command; each GPU job is estimated from its work and
workflow/config/throughput.yaml (cluster/estimate.py). Per table: GPU-hours by stage, the number of GPU
jobs and the requested wall-time bound (runtime x GPUs); jobs without GPUs count 0 GPU-hours and their
runtime x cores as an upper bound on CPU time. The last row is the union of the tables: a job several
tables need (a pretraining run) counts once. Dataset roots default to empty placeholders.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from analysis.paper_reproduction import paper_table_names, table_slug
from analysis.reference import PAPERS, load_reference
from analysis.table_specs import TABLES
from cluster.dryrun import REPO, dry_run
from cluster.estimate import JobPlan, plan_job
from cluster.jobs import parse_jobs
from cluster.placeholders import make_placeholders
from cluster.throughput import THROUGHPUT, Throughput
from core.errors import UserError
from core.io import write_text

# Every table target: the generic paper tables (paper_table rule) and the table2/table3/table13 rules (tables.smk).
ALL_TABLES = sorted({*TABLES, 2, 3, 13})
UNION = "all tables"
STAGES = ("pretrain", "transfer", "frozen eval/probes")
NUMBERS = ["gpu_hours", "requested_gpu_hours", "cpu_core_hours"]


def table_targets(tables: list[int], papers: list[str]) -> dict[str, list[str]]:
    """{plan row: its targets}: results/table<N>.csv per table of ours, then every table of each paper."""
    names = paper_table_names(load_reference())
    targets = {f"table{number}": [f"results/table{number}.csv"] for number in tables}
    targets.update({paper: [f"results/papers/{paper}/{table_slug(name)}.csv" for name in names[paper]]
                    for paper in papers})
    return targets


def plan_tables(targets: dict[str, list[str]], configfiles: list[Path], throughput: Throughput,
                workdir: Path) -> tuple[dict[str, list[JobPlan]], dict[str, float]]:
    """Job plans per plan row (table_targets) and the seconds each dry run took."""
    plans: dict[str, list[JobPlan]] = {}
    seconds: dict[str, float] = {}
    progress = tqdm(targets.items(), desc="paper dry runs", unit="table", file=sys.stderr)
    for name, files in progress:
        progress.set_postfix_str(name)
        text, seconds[name] = dry_run(files, configfiles, workdir)
        plans[name] = [plan_job(job, throughput) for job in parse_jobs(text)]
    return plans, seconds


def with_union(plans: dict[str, list[JobPlan]]) -> dict[str, list[JobPlan]]:
    """`plans` plus the union of all tables, each job (by its outputs) once."""
    union = {plan.output: plan for table_plans in plans.values() for plan in table_plans}
    return {**plans, UNION: list(union.values())}


def by_kind(plans: dict[str, list[JobPlan]]) -> pd.DataFrame:
    """One row per table, stage, rule and kind: jobs, GPU-hours, requested bound, CPU bound and sources."""
    frame = pd.DataFrame([{"table": table, "stage": plan.stage, "rule": plan.rule, "kind": plan.kind,
                           "output": plan.output, "gpus": plan.gpus, **{n: getattr(plan, n) for n in NUMBERS},
                           "basis": plan.basis, "source": plan.source}
                          for table, table_plans in plans.items() for plan in table_plans])
    grouped = frame.groupby(["table", "stage", "rule", "kind"], sort=False)
    rows = grouped.agg(jobs=("output", "size"), gpus_per_job=("gpus", "max"), **{n: (n, "sum") for n in NUMBERS},
                       basis=("basis", "first"), source=("source", "first"))
    return rows.reset_index()


def summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per table: GPU-hours by stage and in total, GPU jobs, requested GPU-hours, CPU jobs and core-hours."""
    out = []
    for table, group in rows.groupby("table", sort=False):
        gpu, cpu = group[group["stage"] != "cpu"], group[group["stage"] == "cpu"]
        out.append({"table": table,
                    **{f"{stage} GPU-h": gpu.loc[gpu["stage"] == stage, "gpu_hours"].sum() for stage in STAGES},
                    "total GPU-h (estimate)": gpu["gpu_hours"].sum(), "GPU jobs": int(gpu["jobs"].sum()),
                    "requested GPU-h (runtime x GPUs)": gpu["requested_gpu_hours"].sum(),
                    "CPU jobs": int(cpu["jobs"].sum()), "CPU core-h (upper bound)": cpu["cpu_core_hours"].sum()})
    return pd.DataFrame(out)


def entries_used(plans: list[JobPlan]) -> pd.DataFrame:
    """Each throughput entry the plan used, once, with its value, kind and source."""
    entries = {entry.key: entry for plan in plans for entry in plan.entries}
    return pd.DataFrame([{"entry": key, "value": entry.value, "kind": entry.kind, "source": entry.source}
                         for key, entry in sorted(entries.items())], columns=["entry", "value", "kind", "source"])


def markdown(rows: pd.DataFrame, union: list[JobPlan], seconds: dict[str, float], throughput: Path) -> str:
    """The summary per table, the union's GPU job kinds and CPU rules, and the throughput entries used."""
    union_rows = rows[rows["table"] == UNION]
    gpu = union_rows[union_rows["stage"] != "cpu"].sort_values(["stage", "gpu_hours"], ascending=[True, False])
    gpu = gpu[["stage", "kind", "jobs", "gpus_per_job", "gpu_hours", "requested_gpu_hours", "basis", "source"]]
    cpu = union_rows[union_rows["stage"] == "cpu"].sort_values("cpu_core_hours", ascending=False)
    slowest = max(seconds, key=seconds.get)
    return "\n".join([
        "# Paper-scale GPU-hour plan", "",
        summary(rows).to_markdown(index=False, floatfmt=",.1f"), "",
        f"- Estimates: each GPU job's work over the rates of {throughput.name} (V100 numbers; the entries are listed "
        "below with their kind: published, measured here (CPU ratios), or estimate). Linear scaling with GPUs assumed.",
        "- Requested GPU-h: the jobs' `runtime` x GPUs from the scale config, the scheduler's wall-time bound.",
        "- CPU jobs count 0 GPU-hours; their core-hours are requested runtime x cores, an upper bound.",
        f"- `{UNION}` counts a job that several tables share (e.g. a pretraining run) once.",
        f"- {len(seconds)} dry runs took {sum(seconds.values()):.0f} s (slowest: {slowest}, {seconds[slowest]:.0f} s).",
        "", f"## GPU jobs of {UNION} by kind", "",
        gpu.to_markdown(index=False, floatfmt=",.1f"), "",
        f"## CPU jobs of {UNION} by rule", "",
        cpu[["rule", "jobs", "cpu_core_hours"]].to_markdown(index=False, floatfmt=",.1f"), "",
        f"## Throughput entries used ({_shown(throughput)})", "",
        entries_used(union).to_markdown(index=False, floatfmt="g"), ""])


def _shown(path: Path) -> Path:
    """`path` relative to the repository when inside it (the default table), else as given."""
    return path.resolve().relative_to(REPO) if path.resolve().is_relative_to(REPO) else path


def _run(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    unknown = sorted(set(args.tables) - set(ALL_TABLES))
    if unknown:
        raise UserError(f"--tables: no table {', '.join(map(str, unknown))}; the tables are "
                        f"{', '.join(map(str, ALL_TABLES))}.")
    unknown_papers = sorted(set(args.papers) - set(PAPERS))
    if unknown_papers:
        raise UserError(f"--papers: no paper {', '.join(unknown_papers)}; the papers are {', '.join(PAPERS)}.")
    missing = [str(path) for path in args.configfile if not path.is_file()]
    if missing:
        raise UserError(f"--configfile not found: {', '.join(missing)}.")
    throughput = Throughput.load(args.throughput)
    with tempfile.TemporaryDirectory(prefix="gpu-plan-") as tmp:
        roots = make_placeholders(Path(tmp))
        configfiles = [roots, *[path.resolve() for path in args.configfile]]  # the user's roots win
        targets = table_targets(sorted(set(args.tables)), list(dict.fromkeys(args.papers)))
        plans, seconds = plan_tables(targets, configfiles, throughput, Path(tmp) / "work")
    plans = with_union(plans)
    rows = by_kind(plans)
    text = markdown(rows, plans[UNION], seconds, args.throughput)
    write_text(args.out_csv, rows.round(3).to_csv(index=False))
    write_text(args.out_md, text)
    print(text)
    print(f"dry runs: {', '.join(f'{name} {s:.1f} s' for name, s in seconds.items())}; whole command "
          f"{time.perf_counter() - start:.0f} s. Wrote {args.out_csv} and {args.out_md}.", file=sys.stderr)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("gpu-plan", help="GPU-hours per paper table from the paper-scale dry runs",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", type=int, nargs="+", default=ALL_TABLES, metavar="N",
                        help=f"table numbers (default: all, {ALL_TABLES[0]}-{ALL_TABLES[-1]})")
    parser.add_argument("--papers", nargs="*", default=list(PAPERS), metavar="PAPER",
                        help="papers whose own tables to plan, one row each (default: all five; none: --papers)")
    parser.add_argument("--configfile", type=Path, action="append", default=[],
                        help="extra Snakemake configfile (repeatable), after the placeholder roots: e.g. your real "
                             "dataset roots or changed protocols")
    parser.add_argument("--throughput", type=Path, default=THROUGHPUT, help="throughput table (YAML)")
    parser.add_argument("--out-csv", type=Path, required=True, help="per table and job kind (CSV)")
    parser.add_argument("--out-md", type=Path, required=True, help="summary + job kinds with sources (Markdown)")
    parser.set_defaults(func=_run)
