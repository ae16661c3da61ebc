"""Preemption: SIGTERM / SIGUSR1 stop `python -m pretrain train` at an iteration boundary with a resume
state; the rerun exports what an uninterrupted run does, bit for bit."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from interpreter import PYTHON
from torch.utils.data import DataLoader, Dataset

import pretrain.train as train_mod
from core.preemption import ignore_stop_signals
from pretrain.checkpoints import STATE_FILE
from pretrain.export import load_training_state

REPO = Path(__file__).resolve().parents[1]
# 12 iterations of 2 images; one data-loader worker, which the signal reaches too (as SLURM's, below).
CFG = {"arch": "resnet18", "epochs": 6, "batch_size": 2, "image_size": 32, "optimizer": "sgd", "base_lr": 0.03,
       "lr_scaling": "none", "lr_schedule": "cosine", "warmup_epochs": 0, "momentum": 0.9, "weight_decay": 1e-4,
       "amp": False, "workers": 1, "checkpoint_every": 1000,  # so a state.pth can only come from the stop
       "moco": {"dim": 16, "queue_size": 16, "momentum": 0.99, "temperature": 0.2}}
TOTAL = 12


@pytest.fixture(scope="module")
def uninterrupted(image_list: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    train_mod.train("mocov2", image_list, CFG, seed=0, out_dir=out, data_name="test")
    return out


def _logged_iterations(log: Path) -> int:
    lines = log.read_text().splitlines(keepends=True) if log.exists() else []
    return sum(line.endswith("\n") for line in lines[1:])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1], ids=lambda signum: signum.name)
def test_signal_saves_state_and_the_rerun_matches(signum: signal.Signals, image_list: str, uninterrupted: Path,
                                                  tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    k = random.Random(int(signum)).randint(1, 4)  # signal once k iterations are logged
    with (tmp_path / "stderr.txt").open("w") as stderr:
        # A session of its own, signalled as a whole: SLURM signals every process of the job step.
        proc = subprocess.Popen([PYTHON, "-m", "pretrain", "train", "--method", "mocov2", "--image-list",
                                 image_list, "--config-json", json.dumps(CFG), "--data-name", "test",
                                 "--out", str(tmp_path)], cwd=REPO, stderr=stderr, start_new_session=True)
        deadline = time.monotonic() + 120
        while _logged_iterations(tmp_path / "train_log.csv") < k:
            assert proc.poll() is None and time.monotonic() < deadline, "training ended or stalled before the signal"
            time.sleep(0.01)
        os.killpg(proc.pid, signum)
        code = proc.wait(timeout=120)
    assert code == 128 + signum, (tmp_path / "stderr.txt").read_text()[-2000:]
    stopped_at = load_training_state(tmp_path / STATE_FILE)["iteration"]
    assert k <= stopped_at < TOTAL and stopped_at == _logged_iterations(tmp_path / "train_log.csv")
    assert not (tmp_path / "backbone.pth").exists()
    assert f"stopped by {signum.name}; resume state saved to" in (tmp_path / "stderr.txt").read_text()

    with caplog.at_level("INFO", logger="pretrain"):
        train_mod.train("mocov2", image_list, CFG, seed=0, out_dir=tmp_path, data_name="test")
    assert f"resuming from iteration {stopped_at} of {TOTAL}" in caplog.text
    full = torch.load(uninterrupted / "backbone.pth", weights_only=True)
    resumed = torch.load(tmp_path / "backbone.pth", weights_only=True)
    assert full.keys() == resumed.keys() and all(torch.equal(full[key], resumed[key]) for key in full)
    assert (tmp_path / "meta.json").read_text() == (uninterrupted / "meta.json").read_text()
    assert (tmp_path / "train_log.csv").read_text() == (uninterrupted / "train_log.csv").read_text()


class _SignalledInWorker(Dataset):
    """Item 0 sends the worker SIGTERM and SIGUSR1, from itself rather than from its parent (as SLURM's)."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> int:
        if index == 0:
            for signum in (signal.SIGTERM, signal.SIGUSR1):
                os.kill(os.getpid(), signum)
        return index


def test_data_loader_workers_survive_stop_signals() -> None:
    """torch's workers die of a SIGTERM their parent did not send, and the main process then fails on the next
    batch ("DataLoader worker ... exited unexpectedly") instead of checkpointing."""
    loader = DataLoader(_SignalledInWorker(), num_workers=1, worker_init_fn=ignore_stop_signals)
    assert [batch.item() for batch in loader] == [0, 1]
