"""Stop requests from the scheduler: SIGTERM (SLURM preemption, time limit, `scancel`) and SIGUSR1
(`sbatch --signal=USR1@<seconds>`, a warning before the time limit).

A training loop polls `StopRequest.requested` (one process) or `StopRequest.agreed()` (every
process of a distributed job) once per iteration, saves its resume checkpoint at that iteration
boundary and exits with `exit_code` (128 + signal number, the shell's convention), so Snakemake
marks the job failed and its rerun, or SLURM's requeue, resumes from the checkpoint. Saving inside
the handler itself could interleave with an optimizer step and write a torn state.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
from types import FrameType, TracebackType
from typing import NoReturn

import torch
import torch.distributed as dist

log = logging.getLogger("preemption")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
STOP_EXIT_CODES = frozenset(128 + signum for signum in STOP_SIGNALS)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class StopRequest:
    """Context manager: while active, SIGTERM/SIGUSR1 set `requested` instead of killing the process."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or 0)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            log.warning("received %s: checkpointing at the end of this iteration, then exiting",
                        signal.Signals(signum).name)
        self.signum = signum

    def __enter__(self) -> StopRequest:
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def agreed(self) -> bool:
        """Whether any process of the job was asked to stop; all of them must call this at the same iteration.

        The scheduler may signal only some ranks, and a rank that stops alone leaves the others waiting
        in a collective: the signal numbers are max-reduced, so every rank also exits with the same code.
        """
        if not _distributed():
            return self.requested
        # NCCL reduces CUDA tensors only; every other backend takes CPU tensors.
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        signum = torch.tensor([self.signum or 0], device=device)
        dist.all_reduce(signum, op=dist.ReduceOp.MAX)
        if signum.item():
            self.signum = self.signum or int(signum.item())
        return self.requested

    def exit(self, checkpoint: str) -> NoReturn:
        """Leave the process after the checkpoint `checkpoint` is saved.

        Distributed, only rank 0 writes the checkpoint: the ranks wait for each other first, as a
        launcher ends the remaining processes as soon as one exits.
        """
        if _distributed():
            dist.barrier()
        log.warning("stopped by %s; resume state saved to %s; rerun the job to resume",
                    signal.Signals(self.signum or signal.SIGTERM).name, checkpoint)
        sys.exit(self.exit_code)


class ForwardedStop(StopRequest):
    """StopRequest of a launcher process waiting on the training processes it started (multiprocessing):
    passes each stop signal on to them, so they checkpoint and exit, and records it.

    A scheduler may signal the launcher alone (`kill <pid>`, `sbatch --signal=B:USR1`); without this
    the launcher would die at once and leave its training processes running unsupervised.
    """

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        children = multiprocessing.active_children()
        log.warning("received %s: passing it on to %d training processes", signal.Signals(signum).name, len(children))
        for child in children:
            if child.pid is not None:
                os.kill(child.pid, signum)


def ignore_stop_signals(worker_id: int = 0) -> None:
    """A DataLoader `worker_init_fn`: the worker ignores SIGTERM/SIGUSR1 and leaves stopping to the main
    process (torch's workers otherwise die of a SIGTERM not sent by their parent, and the main process
    raises "DataLoader worker ... is killed by signal")."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
