"""Preemption for Detectron2 training: checkpoint and exit at the iteration a stop signal arrived in."""

from __future__ import annotations

from pathlib import Path

from detectron2.engine import HookBase

from core.preemption import StopRequest


class PreemptionHook(HookBase):
    """After each step: if any process received SIGTERM/SIGUSR1, save `model_<iter>.pth` and exit.

    Registered after DefaultTrainer's hooks, so the saved state includes this step's LR-scheduler step
    and precise-BN update. The name is PeriodicCheckpointer's and `save` retags `last_checkpoint`, so
    `resume_or_load(resume=True)` continues from the next iteration.
    """

    def __init__(self, stop: StopRequest) -> None:
        self.stop = stop

    def after_step(self) -> None:
        if not self.stop.agreed():  # on every rank: the all-reduce needs them all
            return
        checkpointer = self.trainer.checkpointer
        name = f"model_{self.trainer.iter:07d}"
        path = Path(checkpointer.save_dir) / f"{name}.pth"
        # PeriodicCheckpointer may have saved this very iteration: rewriting it in place could tear it.
        if checkpointer.get_checkpoint_file() != str(path):
            checkpointer.save(name, iteration=self.trainer.iter)  # rank 0 writes, the others skip
        self.stop.exit(str(path))
