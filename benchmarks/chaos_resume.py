"""Benchmark: kill -9 the smoke DAG at random moments, rerun, and compare with an uninterrupted run.

    .venv/bin/python benchmarks/chaos_resume.py --out /tmp/chaos [--kills 3] [--seed 0] [--cores 2]

Runs the smoke `results/table1.csv` (11 rows, 50 jobs; the method list cannot shrink without editing every
protocol's and probe's rows) twice from an empty folder under `--out`: once uninterrupted, timed; once killed with
SIGKILL (Snakemake and every job it started, as a lost node or an OOM kill does) at `--kills` moments drawn
uniformly within the uninterrupted run's duration (the k-th kill after the k-th moment's worth of work: the
reruns resume), each kill followed by `snakemake --unlock` and a rerun,
the last rerun going to the end. It prints each kill's moment and the jobs it cut, then whether the tables
and every pretraining export and transfer result are equal byte for byte, and exits 1 when they are not.
About 2.5 x the uninterrupted run's time.
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = "results/table1.csv"
CONFIG = (f"datasets={{source_root: {ROOT.parent / 'shared' / 'datasets'}}}",)
# Products compared byte for byte (logs, benchmarks and timings differ from run to run by nature).
COMPARED = ("results/table1.csv", "results/table1.md", "results/pretrain/*/backbone.pth",
            "results/pretrain/*/meta.json", "results/finetune/*/*/*/metrics.json")


def _snakemake(workdir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
            "--profile", str(ROOT / "workflow" / "profiles" / "default"), *args]


def _run(workdir: Path, cores: int, kill_after: float | None = None) -> tuple[float, bool]:
    """Run the target in `workdir`; kill its whole process group after `kill_after` s. (seconds, finished)."""
    command = _snakemake(workdir, "--cores", str(cores), TARGET, "--config", *CONFIG)
    log = (workdir / "chaos.log").open("a")
    start = time.perf_counter()
    # Jobs run in `workdir`: the repository on their import path, this interpreter as their `python`.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        code = process.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        subprocess.run(_snakemake(workdir, "--unlock"), cwd=ROOT, capture_output=True, check=True)
        return time.perf_counter() - start, False
    finally:
        log.close()
    if code:
        sys.exit(f"snakemake failed in {workdir} (exit {code}); see {workdir / 'chaos.log'}")
    return time.perf_counter() - start, True


def _cut_jobs(workdir: Path) -> list[str]:
    """The outputs Snakemake had marked incomplete when it was killed."""
    marks = workdir / ".snakemake" / "incomplete"
    if not marks.is_dir():
        return []
    return sorted(base64.urlsafe_b64decode(path.name).decode(errors="replace")
                  for path in marks.rglob("*") if path.is_file())


def _products(workdir: Path) -> dict[str, bytes]:
    return {str(path.relative_to(workdir)): path.read_bytes()
            for pattern in COMPARED for path in sorted(workdir.glob(pattern))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="empty or new folder for the two run folders")
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    reference, chaos = args.out / "uninterrupted", args.out / "killed"
    for folder in (reference, chaos):
        if folder.exists() and any(folder.iterdir()):
            sys.exit(f"{folder} is not empty; pass a new --out.")
        folder.mkdir(parents=True, exist_ok=True)

    seconds, _ = _run(reference, args.cores)
    print(f"uninterrupted: {seconds:.0f} s")
    # Moments on the uninterrupted run's clock: as reruns resume, the k-th kill lands near that much work done.
    rng = random.Random(args.seed)
    moments = sorted(rng.uniform(0.05, 0.95) * seconds for _ in range(args.kills))
    total, previous = 0.0, 0.0
    for kill, moment in enumerate(moments, 1):
        into = moment - previous
        elapsed, finished = _run(chaos, args.cores, kill_after=into)
        total, previous = total + elapsed, moment
        cut = _cut_jobs(chaos)
        state = "finished before the kill" if finished else f"cut {len(cut)} job(s): {', '.join(cut) or '-'}"
        print(f"kill {kill}: {into:.0f} s into a rerun (at {moment:.0f} s of the uninterrupted clock): {state}")
    elapsed, _ = _run(chaos, args.cores)
    total += elapsed
    print(f"killed {args.kills} times: {total:.0f} s in all ({total / seconds:.2f} x the uninterrupted run)")

    expected, got = _products(reference), _products(chaos)
    differing = sorted(name for name in expected.keys() | got.keys() if expected.get(name) != got.get(name))
    print(f"{len(expected)} products compared byte for byte (tables, exports, transfer results): "
          f"{'all equal' if not differing else f'{len(differing)} differ: ' + ', '.join(differing)}")
    sys.exit(1 if differing else 0)


if __name__ == "__main__":
    main()
