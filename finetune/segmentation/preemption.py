"""Preemption for mmengine training: checkpoint and exit at the iteration a stop signal arrived in, and
resume as if never stopped."""

from __future__ import annotations

import os
from typing import Any

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.runner import Runner, find_latest_checkpoint

from core.io import write_text
from core.preemption import StopRequest


class PreemptionHook(Hook):
    """After each iteration: if any process received SIGTERM/SIGUSR1, save `iter_<n>.pth` and exit.

    The file is what mmengine's CheckpointHook would write after iteration n (work_dir, `iter_{}.pth`,
    `last_checkpoint` naming it), so the Runner's `resume=True` continues from iteration n + 1.
    """

    priority = "LOWEST"  # after ParamSchedulerHook (LOW) steps the schedule and CheckpointHook (VERY_LOW) saves

    def __init__(self, stop: StopRequest) -> None:
        self.stop = stop

    def after_train_iter(self, runner: Runner, batch_idx: int, data_batch: Any = None,
                         outputs: dict[str, Any] | None = None) -> None:
        if not self.stop.agreed():  # on every rank: the all-reduce needs them all
            return
        step = runner.iter + 1  # the loop counts this iteration after its hooks
        filename = f"iter_{step}.pth"
        path = os.path.join(runner.work_dir, filename)
        # CheckpointHook may have saved this very iteration: rewriting it in place could tear it.
        if find_latest_checkpoint(runner.work_dir) != path:
            runner.save_checkpoint(runner.work_dir, filename, meta=dict(epoch=runner.epoch, iter=step), by_epoch=False)
            if is_main_process():  # the checkpoint is complete: only now may a resume pick it
                write_text(os.path.join(runner.work_dir, "last_checkpoint"), path)
        self.stop.exit(path)


class RandomStateHook(Hook):
    """Checkpoints carry the torch RNG state, so a resumed run draws what an uninterrupted one would.

    On `resume=True` mmengine replays the data stream up to the checkpoint (with workers=0 the
    augmentations' numpy draws follow), but not the model's own draws (dropout in the heads): without
    this, a rerun after preemption would end with other weights than an uninterrupted run.
    """

    def __init__(self) -> None:
        self.resumed: dict[str, torch.Tensor] | None = None

    def before_save_checkpoint(self, runner: Runner, checkpoint: dict[str, Any]) -> None:
        state = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state()  # this process's device; the ranks share their seed
        checkpoint["torch_rng"] = state

    def after_load_checkpoint(self, runner: Runner, checkpoint: dict[str, Any]) -> None:
        self.resumed = checkpoint.get("torch_rng")

    def before_train_iter(self, runner: Runner, batch_idx: int, data_batch: Any = None) -> None:
        # The first iteration after resuming: the data stream is replayed and its batch loaded by now.
        if self.resumed is None:
            return
        torch.set_rng_state(self.resumed["cpu"].cpu())  # resume maps the checkpoint to the training device
        if "cuda" in self.resumed:
            torch.cuda.set_rng_state(self.resumed["cuda"].cpu())
        self.resumed = None
