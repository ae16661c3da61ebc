"""`python -m finetune detection --gpus N`: one training process per GPU through Detectron2's launcher.

As Detectron2's tools/train_net.py: `detectron2.engine.launch` starts N processes per machine
(NCCL, one GPU each) and each runs `train.run`; SOLVER.IMS_PER_BATCH stays the protocol's total
batch, which Detectron2 divides among the processes, and the norms become SyncBN (train.build_cfg).
`--gpus 0` runs one process on --device, as without the launcher.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import torch
from detectron2.engine import launch
from torch.multiprocessing import ProcessExitedException

from core.errors import UserError
from core.preemption import STOP_EXIT_CODES, ForwardedStop
from finetune.detection import train


def _check(gpus: int, num_machines: int, machine_rank: int, dist_url: str, device: str | None) -> str:
    """The device of the training processes; UserError for a layout the launcher cannot start."""
    if gpus == 0:
        if num_machines > 1:
            raise UserError(f"--num-machines {num_machines} needs GPUs (one process per GPU); pass --gpus N.")
        return device or "cpu"
    if device == "cpu":
        raise UserError(f"--gpus {gpus} trains on GPUs: drop --device cpu, or pass --gpus 0 for one CPU process.")
    if gpus > torch.cuda.device_count():
        raise UserError(f"--gpus {gpus} but {torch.cuda.device_count()} GPUs are visible; lower --gpus.")
    if not 0 <= machine_rank < num_machines:
        raise UserError(f"--machine-rank {machine_rank} is not in [0, --num-machines {num_machines}); "
                        "number the machines 0 to N-1.")
    if num_machines > 1 and dist_url == "auto":
        raise UserError("--dist-url auto works on one machine only; pass --dist-url tcp://<machine 0's host>:<port> "
                        "on every machine.")
    return "cuda"


def _main(run_args: dict[str, Any]) -> None:
    """One training process (module level: the launcher pickles it for the processes it spawns)."""
    train.run(**run_args)


def launch_detection(*, gpus: int, num_machines: int, machine_rank: int, dist_url: str, device: str | None,
                     **run_args: Any) -> None:
    """Train `train.run(**run_args)` in `gpus` processes on each of `num_machines` machines.

    The launcher process waits for its training processes: it passes stop signals on to them and
    exits with their 128 + signal number once they have checkpointed, as one process would.
    """
    run_args["device"] = _check(gpus, num_machines, machine_rank, dist_url, device)
    processes = max(gpus, 1)
    with ForwardedStop() if processes * num_machines > 1 else contextlib.nullcontext():
        try:
            launch(_main, processes, num_machines=num_machines, machine_rank=machine_rank, dist_url=dist_url,
                   args=(run_args,))
        except ProcessExitedException as err:
            if err.exit_code not in STOP_EXIT_CODES:
                raise
            sys.exit(err.exit_code)
