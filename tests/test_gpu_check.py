"""benchmarks/gpu_check.py in its CPU mode (`--short`), on one method per kind of sample: views (MoCo v2), proposals
(SoCo) and region trees (hierarchical grouping); test_pretrain.py trains every method. `make gpu-check` runs all."""

from __future__ import annotations

import subprocess
from pathlib import Path

from interpreter import PYTHON

REPO = Path(__file__).resolve().parents[1]


METHODS = ["hiergroup", "mocov2", "soco"]


def test_short_mode_steps_each_method_alone_and_under_ddp() -> None:
    result = subprocess.run([PYTHON, str(REPO / "benchmarks" / "gpu_check.py"), "--short", "--methods", *METHODS],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and "| method |" not in line]
    assert [row.split(" | ")[0][2:] for row in rows] == METHODS
    for row in rows:
        cells = row.strip("| ").split(" | ")
        assert float(cells[2]) > 0 and cells[4] == "True"  # images/s, a finite loss
        assert cells[5] == cells[6] == "n/a (CPU)"  # the GPU-CPU comparison needs a GPU
        assert cells[7] == "True (CpuSyncBatchNorm)", row  # DDP over gloo, BatchNorms synchronised
    assert result.stdout.rstrip().endswith("all checks passed")
