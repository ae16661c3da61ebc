"""Benchmark: where a DAG run's wall time goes, per rule and per stage, and its critical path.

    .venv/bin/python benchmarks/demo_profile.py [--log .snakemake/log/<run>.snakemake.log] [--top 15]

Reads the Snakemake log of a run (default: the newest under .snakemake/log) for each job's rule,
inputs, outputs, start and finish, and the job's benchmark file (results/benchmarks/*.tsv) for its
wall seconds. Prints the jobs and wall-second sums per stage (the workflow/rules/<stage>.smk file that
defines the rule) and per rule, the sum of job times, the run's wall time (first start to last
finish), their ratio (the parallelism reached), and the critical path: the chain of dependent jobs
with the largest summed job time, which bounds the run's wall time at any core count.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
_RULE = re.compile(r"^\s*(?:local)?(?:checkpoint|rule) (\w+):$")
_FINISHED = re.compile(r"^Finished jobid: (\d+)")
_FIELD = re.compile(r"^    (input|output|jobid|benchmark): (.*)$")


@dataclass
class Job:
    rule: str
    start: datetime
    end: datetime | None = None
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    benchmark: Path | None = None

    @property
    def seconds(self) -> float:
        """The benchmark file's wall seconds; the log's (1 s resolution) for jobs without one."""
        if self.benchmark and self.benchmark.is_file():
            lines = self.benchmark.read_text().splitlines()
            return float(lines[-1].split("\t")[0])
        return (self.end - self.start).total_seconds() if self.end else 0.0


def parse_log(path: Path, workdir: Path = ROOT) -> dict[int, Job]:
    """Every job the log started, by jobid (a rerun's jobs only: the log is one Snakemake call); benchmark
    paths are relative to the run's `workdir`."""
    jobs: dict[int, Job] = {}
    stamp: datetime | None = None
    current: Job | None = None
    for line in path.read_text().splitlines():
        if match := _STAMP.match(line):
            stamp = datetime.strptime(match.group(1), "%a %b %d %H:%M:%S %Y")
            current = None
        elif (match := _RULE.match(line)) and stamp is not None:
            current = Job(match.group(1), stamp)
        elif current is not None and (match := _FIELD.match(line)):
            key, value = match.groups()
            if key == "jobid":
                jobs[int(value)] = current
            elif key == "benchmark":
                current.benchmark = workdir / value
            else:
                getattr(current, f"{key}s").extend(part.strip() for part in value.split(","))
        elif (match := _FINISHED.match(line)) and stamp is not None and int(match.group(1)) in jobs:
            jobs[int(match.group(1))].end = stamp
    return jobs


def rule_stages() -> dict[str, str]:
    """rule -> the stage file that defines it (workflow/rules/<stage>.smk); Snakefile rules are `targets`."""
    stages = {}
    for smk in [ROOT / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]:
        stage = "targets" if smk.name == "Snakefile" else smk.stem
        for line in smk.read_text().splitlines():
            if match := _RULE.match(line):
                stages[match.group(1)] = stage
    return stages


def critical_path(jobs: dict[int, Job]) -> list[int]:
    """The dependency chain with the largest summed job time (jobs in start order: a topological order)."""
    producer = {out: jobid for jobid, job in jobs.items() for out in job.outputs}
    order = sorted(jobs, key=lambda jobid: jobs[jobid].start)
    best: dict[int, float] = {}
    parent: dict[int, int | None] = {}
    for jobid in order:
        deps = {producer[i] for i in jobs[jobid].inputs if i in producer and producer[i] != jobid}
        prev = max(deps, key=lambda d: best.get(d, 0.0), default=None)
        parent[jobid] = prev
        best[jobid] = jobs[jobid].seconds + (best.get(prev, 0.0) if prev is not None else 0.0)
    node: int | None = max(best, key=best.get)
    path = []
    while node is not None:
        path.append(node)
        node = parent[node]
    return path[::-1]


def _table(title: str, rows: dict[str, list[float]], total: float) -> None:
    print(f"\n{title:<28} {'jobs':>5} {'sum s':>9} {'share':>6} {'mean s':>8} {'max s':>8}")
    for name, times in sorted(rows.items(), key=lambda item: -sum(item[1])):
        print(f"{name:<28} {len(times):>5} {sum(times):>9.0f} {sum(times) / total:>6.1%} "
              f"{sum(times) / len(times):>8.1f} {max(times):>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log", type=Path, help="a .snakemake/log/*.snakemake.log (default: the newest)")
    parser.add_argument("--top", type=int, default=15, help="rules to list (the slowest by summed time)")
    args = parser.parse_args()
    if args.log:
        log, jobs = args.log, parse_log(args.log)
    else:  # the newest run that started jobs (`make demo` ends with a `--report` call, which starts none)
        logs = sorted((ROOT / ".snakemake" / "log").glob("*.snakemake.log"), key=lambda p: p.stat().st_mtime)
        log, jobs = next(((path, found) for path in reversed(logs) if (found := parse_log(path))), (None, {}))
    if not jobs:
        sys.exit(f"{log or 'no Snakemake log'} started no job: run `make demo` first, or pass --log "
                 ".snakemake/log/<run>.snakemake.log")
    stages = rule_stages()
    by_stage: dict[str, list[float]] = defaultdict(list)
    by_rule: dict[str, list[float]] = defaultdict(list)
    for job in jobs.values():
        by_stage[stages.get(job.rule, "?")].append(job.seconds)
        by_rule[job.rule].append(job.seconds)
    total = sum(job.seconds for job in jobs.values())
    finished = [job.end for job in jobs.values() if job.end]
    wall = (max(finished) - min(job.start for job in jobs.values())).total_seconds() if finished else float("nan")
    print(f"log: {log.relative_to(ROOT) if log.is_relative_to(ROOT) else log}")
    print(f"jobs {len(jobs)} ({len(finished)} finished); sum of job times {total:.0f} s; "
          f"DAG wall {wall:.0f} s; parallelism {total / wall:.2f}")
    _table("stage", by_stage, total)
    _table(f"rule (top {args.top})", dict(sorted(by_rule.items(), key=lambda i: -sum(i[1]))[: args.top]), total)
    path = critical_path(jobs)
    length = sum(jobs[j].seconds for j in path)
    print(f"\ncritical path: {len(path)} jobs, {length:.0f} s ({length / wall:.0%} of the DAG wall)")
    for jobid in path:
        job = jobs[jobid]
        print(f"  {job.seconds:>7.1f} s  {job.rule:<24} {job.outputs[0] if job.outputs else ''}")


if __name__ == "__main__":
    main()
