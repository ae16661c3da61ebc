"""Data-parallel pretraining: 2 gloo processes on CPU train as 1 process on the whole batch; launch prefixes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import yaml
from interpreter import PYTHON

import pretrain.train as train_mod
from core.errors import UserError
from core.launch import torch_launch_prefix
from core.preemption import StopRequest
from pretrain.checkpoints import STATE_FILE
from pretrain.distributed import (
    World,
    batch_shuffle,
    batch_unshuffle,
    concat_all_gather,
    data_parallel,
    mean_over_ranks,
    per_rank_batch,
    process_group,
    rank_indices,
)
from pretrain.methods import METHODS, build_method
from pretrain.optim import build_optimizer
from pretrain.runs import METHOD_PREPARED, run_config

REPO = Path(__file__).resolve().parents[1]
SMOKE_PRETRAIN = yaml.safe_load((REPO / "workflow" / "config" / "smoke.yaml").read_text())["pretrain"]
BATCH = 4  # global batch: 2 per process


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _spawn(fn: Callable[..., None], *args: object) -> None:
    """Run fn(*args) in 2 gloo processes, torchrun's environment variables set as it would. Forked: a
    spawned process would spend ~10 s importing torchvision and the methods again."""
    mp.start_processes(_join, args=(fn, _free_port(), args), nprocs=2, start_method="fork")


def _join(rank: int, fn: Callable[..., None], port: int, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2")
    torch.set_num_threads(1)
    with process_group("cpu") as world:
        fn(world, *args)


# --- helpers ------------------------------------------------------------------------------------

def test_rank_batches_concatenate_to_the_single_process_batches() -> None:
    order = [7, 3, 9, 0, 4, 8, 1, 6, 2, 5, 11]  # 2 global batches of 4 and 3 left over
    ranks = [rank_indices(order, 4, World(rank, 2)) for rank in range(2)]
    assert ranks == [[7, 3, 4, 8], [9, 0, 1, 6]]  # rank r: slice r of each batch, in batch order
    assert rank_indices(order, 4, World()) == order[:8]
    with pytest.raises(UserError, match="batch_size 6 .the global batch. does not split over 4 processes: set it "
                                        "to a multiple of 4"):
        per_rank_batch(6, World(0, 4))


def _check_collectives(world: World) -> None:
    x = torch.arange(6.0).reshape(3, 2) + 10 * world.rank  # rank-specific rows
    shuffled, unshuffle = batch_shuffle(x, seed=3, iteration=5)
    assert torch.equal(batch_unshuffle(shuffled, unshuffle), x)  # shuffle then unshuffle is the identity
    gathered = concat_all_gather(torch.stack([unshuffle, batch_shuffle(x, seed=3, iteration=5)[1]]))
    assert torch.equal(gathered[0], gathered[2]) and torch.equal(gathered[0], gathered[1])  # one permutation
    assert not torch.equal(concat_all_gather(shuffled), concat_all_gather(x))  # ... that moved rows across ranks
    assert not torch.equal(batch_shuffle(x, seed=3, iteration=6)[1], unshuffle)  # ... and changes per iteration
    assert torch.equal(concat_all_gather(x)[:3], torch.arange(6.0).reshape(3, 2))  # rank order
    stop = StopRequest()
    assert not stop.agreed()
    stop.signum = signal.SIGUSR1 if world.rank == 1 else None  # as if only rank 1 had been signalled
    assert stop.agreed() and stop.exit_code == 138  # the ranks agree on stopping and on the exit code
    assert mean_over_ranks(torch.tensor([float(world.rank)])).item() == 0.5


def test_shuffle_gather_and_agreement_across_two_processes() -> None:
    _spawn(_check_collectives)


def test_shuffle_is_a_no_op_in_one_process() -> None:
    x = torch.randn(4, 3)
    shuffled, unshuffle = batch_shuffle(x, seed=0, iteration=0)
    assert shuffled is x and unshuffle is None and batch_unshuffle(x, None) is x


# --- one process at batch B == two processes at B / 2 ----------------------------------------------

def _config(method: str) -> dict:
    # BYOL's 4096-wide MLPs would be most of its float64 steps; the width does not change what DDP computes.
    return run_config(SMOKE_PRETRAIN, method, {"batch_size": BATCH, "image_size": 64, "moco": {"queue_size": 16},
                                               "densecl": {"warmup_iters": 0},
                                               "byol": {"projector_hidden": 512, "predictor_hidden": 512}})


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _train_steps(world: World, method: str, steps: int, dtype: torch.dtype) -> dict:
    """`steps` training steps on a fixed batch of BATCH images in `dtype`; this rank's share under DDP."""
    with _default_dtype(dtype):  # the model, its queues and the views
        torch.manual_seed(0)
        cfg = _config(method)
        net = build_method(method, cfg["arch"], cfg)
        optimizer = build_optimizer(net, cfg)
        model = data_parallel(net, world, net.unused_parameters)
        gen = torch.Generator().manual_seed(1)
        views = {name: torch.randn(BATCH, 3, 64, 64, generator=gen) for name in ("view1", "view2")}
        own = rank_indices(list(range(BATCH)), BATCH, world)
        losses = []
        for iteration in range(steps):
            out = model(**{name: view[own] for name, view in views.items()}, geom1=None, geom2=None,
                        iteration=iteration, total=10)
            losses.append(mean_over_ranks(out["loss"].detach()).item())
            optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
            optimizer.step()
    return {"losses": losses, "state": net.state_dict()}


# Float32 agreement lasts 1-2 steps, by CPU: rounding differences of the BN sums flip near-ties of max
# pooling and ReLU on these noise images, after which the runs part (as two single-process runs would whose
# weights differed by 1e-7); on an AMD EPYC, mocov2 and densecl had parted by 2e-4 after the second step.
# Float64 shows the computation is the same over more steps.
PRECISIONS = {torch.float32: (1, 1e-5, 1e-4), torch.float64: (2, 1e-10, 1e-8)}  # steps, atol, rtol


def _initial_conv1(method: str, dtype: torch.dtype) -> torch.Tensor:
    with _default_dtype(dtype):
        torch.manual_seed(0)
        return build_method(method, "resnet18", _config(method)).backbone.conv1.weight.detach()


def _save_ddp_steps(world: World, method: str, out: str) -> None:
    results = _train_steps(world, method, PRECISIONS[torch.float64][0], torch.float64)
    if world.is_main:
        torch.save(results, out)


@pytest.mark.parametrize("method", ["mocov2", "densecl", "byol"])
def test_two_processes_train_as_one(method: str, tmp_path: Path) -> None:
    """Losses, weights (online and momentum networks), BN running statistics and queues after 2 float64 steps
    (float32 DDP runs, whose agreement lasts 1-2 steps, are checked end to end by the torchrun test below).

    Measured max |DDP - single| over the state dict (torch 2.14, CPU), float64 after 2 steps: <= 7.1e-15; float32
    after 1 step on an AMD EPYC (this test's former second half): mocov2 and densecl 7.6e-7 (queue keys), byol
    1.1e-6 (a running_var).
    """
    _spawn(_save_ddp_steps, method, str(tmp_path / "ddp.pth"))
    ddp = torch.load(tmp_path / "ddp.pth", weights_only=True)
    steps, atol, rtol = PRECISIONS[torch.float64]
    single = _train_steps(World(), method, steps, torch.float64)
    assert not torch.equal(ddp["state"]["backbone.conv1.weight"], _initial_conv1(method, torch.float64))  # it trained
    assert ddp["losses"] == pytest.approx(single["losses"], rel=rtol, abs=atol)
    assert ddp["state"].keys() == single["state"].keys()
    diff = {key: (ddp["state"][key].double() - value.double()).abs().max().item()
            for key, value in single["state"].items()}
    print(f"{method}: max |DDP - single| = {max(diff.values()):.2g} ({max(diff, key=diff.get)})")
    for key, value in single["state"].items():
        torch.testing.assert_close(ddp["state"][key], value, atol=atol, rtol=rtol, msg=key)


def test_unused_parameters_are_declared(image_list: str, prepared_stores: dict[str, str]) -> None:
    """DDP without find_unused_parameters waits forever for a gradient that never comes: every method
    whose step leaves a trainable parameter without one must say so."""
    for method in sorted(METHODS):
        cfg = run_config(SMOKE_PRETRAIN, method, {"image_size": 64, "moco": {"queue_size": 16}})
        prepared = prepared_stores.get(METHOD_PREPARED.get(method, ""))
        dataset = train_mod.training_images(method, image_list, cfg, 0, prepared)
        batch = torch.utils.data.default_collate([dataset[0], dataset[1]])
        torch.manual_seed(0)
        model = build_method(method, "resnet18", cfg)
        model(**batch, iteration=0, total=10)["loss"].backward()
        unused = [name for name, param in model.named_parameters() if param.requires_grad and param.grad is None]
        assert bool(unused) == model.unused_parameters, (method, unused)


# --- torchrun ------------------------------------------------------------------------------------

def test_torchrun_trains_as_one_process(image_list: str, tmp_path: Path) -> None:
    """`torchrun --nproc-per-node 2 -m pretrain train` exports the single-process backbone, meta.json and loss
    log: 3 iterations of a global batch of 4.

    A small learning rate keeps float32 rounding apart from divergence (see PRECISIONS): at lr 0.03 a 1e-7
    relative change of the initial weights alone moves this backbone by 4e-4 within 2 iterations. The BN running
    statistics, which the lr does not scale, still check the synchronised BatchNorm. Measured max |DDP - single|:
    7e-7 (a running_var).
    """
    cfg = _config("mocov2") | {"epochs": 3, "base_lr": 1e-4}
    train_mod.train("mocov2", image_list, cfg, seed=0, out_dir=tmp_path / "single", data_name="test")
    args = ["--method", "mocov2", "--image-list", image_list, "--config-json", json.dumps(cfg),
            "--data-name", "test", "--out", str(tmp_path / "ddp")]
    # --no-python with the tests' interpreter: under `make test` the workers start as prefork forks too.
    subprocess.run([PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "--no-python",
                    PYTHON, "-m", "pretrain", "train", *args], check=True, cwd=REPO, capture_output=True)
    single = torch.load(tmp_path / "single" / "backbone.pth", weights_only=True)
    ddp = torch.load(tmp_path / "ddp" / "backbone.pth", weights_only=True)
    assert ddp.keys() == single.keys()
    _, atol, rtol = PRECISIONS[torch.float32]
    for key, value in single.items():
        torch.testing.assert_close(ddp[key], value, atol=atol, rtol=rtol, msg=key)
    assert (tmp_path / "ddp" / "meta.json").read_text() == (tmp_path / "single" / "meta.json").read_text()
    logs = [(tmp_path / run / "train_log.csv").read_text().splitlines() for run in ("single", "ddp")]
    assert logs[0][0] == logs[1][0] and len(logs[0]) == len(logs[1]) == 4
    for row, ddp_row in zip(logs[0][1:], logs[1][1:], strict=True):
        assert [float(v) for v in ddp_row.split(",")] == pytest.approx([float(v) for v in row.split(",")], rel=1e-5)
    assert not (tmp_path / "ddp" / STATE_FILE).exists()


# --- launch prefixes -----------------------------------------------------------------------------

def test_torch_launch_prefix() -> None:
    signals = "--signals-to-handle SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"
    assert torch_launch_prefix(0, 1) == "python"
    assert torch_launch_prefix(1, 1) == "python"
    assert torch_launch_prefix(8, 1) == f"torchrun --standalone --nproc-per-node 8 {signals}"
    assert torch_launch_prefix(4, 2) == (
        "srun --nodes 2 --ntasks-per-node 1 torchrun --nnodes 2 --nproc-per-node 4 --rdzv-id $SLURM_JOB_ID "
        "--rdzv-backend c10d --rdzv-endpoint $(scontrol show hostnames $SLURM_JOB_NODELIST | head -n 1):29500 "
        f"{signals}")
    with pytest.raises(UserError, match="set nodes >= 1"):
        torch_launch_prefix(1, 0)
    with pytest.raises(UserError, match="set gpus per node >= 1 or nodes to 1"):
        torch_launch_prefix(0, 2)


def test_torchrun_accepts_the_prefix_flags() -> None:
    """The flags of the prefixes, spelt as the installed torchrun parses them."""
    from torch.distributed.run import get_args_parser

    for prefix in (torch_launch_prefix(8, 1), torch_launch_prefix(4, 2)):
        flags = prefix.split("torchrun ", 1)[1].replace("$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n 1)",
                                                       "node1").split()
        args = get_args_parser().parse_args([*flags, "train.py"])
        assert args.nproc_per_node == flags[flags.index("--nproc-per-node") + 1]
        assert "SIGUSR1" in args.signals_to_handle
