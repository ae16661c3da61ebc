"""benchmarks/demo_profile.py on a hand-written Snakemake log: per-rule sums and the critical path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("demo_profile", REPO / "benchmarks" / "demo_profile.py")
demo_profile = sys.modules["demo_profile"] = importlib.util.module_from_spec(_spec)  # dataclasses look it up
_spec.loader.exec_module(demo_profile)

# prepare_coco (jobid 1) feeds pretrain_run (2) and proposals_shard (3); pretrain_run feeds
# detection_transfer (4). Wall seconds in the benchmark files: 2, 30, 9, 20 (3 has none: the log's 9 s).
LOG = """Building DAG of jobs...
[Mon Dec  7 10:00:00 2026]
localrule prepare_coco:
    output: results/prepare/coco/manifest.json
    jobid: 1
    benchmark: results/benchmarks/prepare_coco.tsv
[Mon Dec  7 10:00:02 2026]
Finished jobid: 1 (Rule: prepare_coco)
[Mon Dec  7 10:00:02 2026]
localrule pretrain_run:
    input: results/prepare/coco/manifest.json, results/prepare/pretrain-coco/images.txt
    output: results/pretrain/a/backbone.pth, results/pretrain/a/meta.json
    jobid: 2
    benchmark: results/benchmarks/pretrain/a.tsv
[Mon Dec  7 10:00:02 2026]
localrule proposals_shard:
    input: results/prepare/coco/manifest.json
    output: results/prepare/proposals/coco/shard-0.npz
    jobid: 3
[Mon Dec  7 10:00:11 2026]
Finished jobid: 3 (Rule: proposals_shard)
[Mon Dec  7 10:00:32 2026]
Finished jobid: 2 (Rule: pretrain_run)
[Mon Dec  7 10:00:32 2026]
localrule detection_transfer:
    input: results/prepare/VOCdevkit/manifest.json, results/pretrain/a/backbone.pth
    output: results/finetune/voc_detection/a/s0/metrics.json
    jobid: 4
    benchmark: results/benchmarks/voc_detection/a-s0.tsv
[Mon Dec  7 10:00:52 2026]
Finished jobid: 4 (Rule: detection_transfer)
"""


def test_rules_stages_and_critical_path_from_a_log(tmp_path: Path) -> None:
    for name, seconds in (("prepare_coco", 2.0), ("pretrain/a", 30.0), ("voc_detection/a-s0", 20.0)):
        path = tmp_path / "results" / "benchmarks" / f"{name}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:00\t1.0\n")
    log = tmp_path / "run.snakemake.log"
    log.write_text(LOG)
    jobs = demo_profile.parse_log(log, tmp_path)
    assert {jobid: (job.rule, job.seconds) for jobid, job in jobs.items()} == {
        1: ("prepare_coco", 2.0), 2: ("pretrain_run", 30.0), 3: ("proposals_shard", 9.0),
        4: ("detection_transfer", 20.0)}
    assert demo_profile.critical_path(jobs) == [1, 2, 4]  # 52 s; through the proposals it would be 11 s
    stages = demo_profile.rule_stages()
    assert [stages[jobs[j].rule] for j in (1, 2, 3, 4)] == ["prepare", "pretrain", "prepare", "finetune"]
