"""Preemption tests: `python -m finetune <detection|segmentation> ...` stopped by a real signal at a known iteration.

Run as a module (`python -m stop_at_iteration <k> <finetune arguments>`, tests/ on PYTHONPATH), this is
`python -m finetune` whose training holds before iteration k (0-based) and prints PAUSED until a stop signal
has arrived, so the test sends the signal from outside while iteration k is under way. `run_stopped` does both.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from interpreter import PYTHON

REPO = Path(__file__).resolve().parents[1]
PAUSED = "PAUSED before iteration"


def run_stopped(argv: list[str], iteration: int, signum: int = signal.SIGTERM) -> tuple[int, str]:
    """Run `python -m finetune *argv`, send `signum` once it reaches `iteration`; its exit code and output."""
    pythonpath = os.pathsep.join([str(REPO), str(Path(__file__).parent)])
    proc = subprocess.Popen([PYTHON, "-m", Path(__file__).stem, str(iteration), *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONPATH": pythonpath})
    assert proc.stdout is not None
    output = []
    for line in proc.stdout:
        output.append(line)
        if line.startswith(PAUSED):
            proc.send_signal(signum)
            break
    output.append(proc.stdout.read())
    return proc.wait(timeout=120), "".join(output)


def _hold(stop: Any, current: int, iteration: int) -> None:
    if current == iteration:
        print(f"{PAUSED} {iteration}", flush=True)
        while not stop.requested:
            time.sleep(0.01)


def _install_pause(command: str, iteration: int) -> None:
    """Hold in the preemption hook of `command`'s framework: before the step (Detectron2), after the
    batch is loaded (mmengine)."""
    if command == "detection":
        from finetune.detection.preemption import PreemptionHook

        PreemptionHook.before_step = lambda self: _hold(self.stop, self.trainer.iter, iteration)
    else:
        from finetune.segmentation.preemption import PreemptionHook

        PreemptionHook.before_train_iter = lambda self, runner, **_: _hold(self.stop, runner.iter, iteration)


if __name__ == "__main__":
    from core.errors import run_cli
    from finetune.__main__ import main

    _install_pause(sys.argv[2], int(sys.argv[1]))
    run_cli(main, sys.argv[2:])
