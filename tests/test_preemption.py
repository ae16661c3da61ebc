"""core.preemption: a stop signal becomes a flag and the shell's exit code; a launcher passes it on."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from multiprocessing.synchronize import Event

import pytest

from core.preemption import ForwardedStop, StopRequest


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_a_stop_signal_sets_the_flag_and_the_handler_is_restored(signum: int) -> None:
    before = signal.getsignal(signum)
    with StopRequest() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signum)
        assert stop.requested and stop.exit_code == 128 + signum  # 143 / 138, as a shell reports it
    assert signal.getsignal(signum) is before


def _worker(ready: Event) -> None:
    """A training process: runs until asked to stop, then exits as after its checkpoint."""
    with StopRequest() as stop:
        ready.set()
        deadline = time.monotonic() + 30
        while not stop.requested and time.monotonic() < deadline:
            time.sleep(0.01)
        stop.exit("(no checkpoint in this test)")


def test_a_launcher_passes_the_stop_signal_to_its_workers() -> None:
    context = multiprocessing.get_context("spawn")  # what Detectron2's launch uses
    ready = context.Event()
    worker = context.Process(target=_worker, args=(ready,))
    with ForwardedStop() as launcher:
        worker.start()
        assert ready.wait(30)
        os.kill(os.getpid(), signal.SIGTERM)  # the scheduler signals the launcher only
        worker.join(30)
    assert launcher.signum == signal.SIGTERM
    assert worker.exitcode == 143
