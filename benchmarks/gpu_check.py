"""GPU check: every pretraining method for a few steps on one GPU, before a cluster run spends GPU-weeks.

    make gpu-check                                       # a GPU: ResNet-50, 224 px, AMP as in the paper config
    .venv/bin/python benchmarks/gpu_check.py --short     # CPU: ResNet-18, 64 px, batch 2 (tested in CI)

Per method, on procedural images (no dataset needed; `prepare/check_stores.py` gives the region-level methods
their proposals and region trees):
- `--steps` training steps after one warm-up step (`--short`: none) with the method's paper-scale settings (AMP
  where the paper config sets it): images/s of the steps alone (batches already on the device), peak GPU memory,
  a finite loss;
- on a GPU, one float32 step on the GPU against the same step on the CPU (same weights, same batch, TF32 off):
  the loss within `LOSS_RTOL`, every weight after the step within `WEIGHT_ATOL`;
- one step of DDP in a process group of one (NCCL and torch's SyncBatchNorm on a GPU; gloo and our CPU
  SyncBatchNorm on the CPU), finite.
DenseCL's images/s is set against the DenseCL README's 136.9 images/s per V100 (800 COCO epochs, 8 GPUs, 1.0 day).
CUDA determinism is not checked: the README promises bit-identical reruns on CPU only. Only torch, torchvision and
what the pretraining code imports are needed. Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import copy
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from prepare.check_stores import check_stores  # noqa: E402
from prepare.procedural import render, save_jpeg  # noqa: E402
from pretrain.distributed import World, data_parallel  # noqa: E402
from pretrain.methods import METHODS, build_method  # noqa: E402
from pretrain.optim import build_optimizer  # noqa: E402
from pretrain.runs import METHOD_PREPARED, run_config  # noqa: E402
from pretrain.train import apply_loss, training_images  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "workflow" / "config"
DENSECL_README_RATE = 136.9  # images/s per V100: 800 COCO epochs x 118,287 images in 1.0 day on 8 GPUs
LOSS_RTOL = 1e-3  # float32 GPU vs CPU: convolution and reduction orders differ (~1e-6 relative per layer)
WEIGHT_ATOL = 1e-4  # after one step: lr x the gradient difference


def make_images(folder: Path, count: int, size: int, seed: int) -> str:
    """`count` procedural photos (textured objects on textured ground) and their image list."""
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        path = folder / f"{index:03d}.jpg"
        save_jpeg(render(rng, size)[0], path)
        paths.append(str(path))
    listing = folder / "images.txt"
    listing.write_text("\n".join(paths) + "\n")
    return str(listing)


def batches(method: str, cfg: dict[str, Any], image_list: str, stores: dict[str, str], count: int) -> list[dict]:
    """`count` collated batches of the method's own samples (views, boxes, pixel pairs), in order."""
    dataset = training_images(method, image_list, cfg, 0, stores.get(METHOD_PREPARED.get(method, "")))
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg["batch_size"], drop_last=True)
    found = []
    for batch in loader:
        found.append(batch)
        if len(found) == count:
            return found
    raise SystemExit(f"{method}: {len(dataset)} images give fewer than {count} batches of {cfg['batch_size']}")


def step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, batch: dict,
         device: str, amp: bool, iteration: int) -> float:
    """One training step as `pretrain.train` takes it; the loss."""
    batch = {key: value.to(device) for key, value in batch.items()}
    with torch.autocast(device_type=device, enabled=amp):
        loss = model(**batch, iteration=iteration, total=1000)["loss"]
    apply_loss(optimizer, scaler, loss)
    return loss.item()


def throughput(method: str, cfg: dict[str, Any], data: list[dict], device: str, amp: bool,
               warm_up: bool) -> tuple[dict[str, Any], torch.nn.Module]:
    """Steps on `data`, the first one untimed when `warm_up` (cuDNN autotuning, the allocator's first blocks);
    the measurements and the trained network."""
    torch.manual_seed(0)
    net = build_method(method, cfg["arch"], cfg).to(device).train()
    optimizer, scaler = build_optimizer(net, cfg), torch.amp.GradScaler(device, enabled=amp)
    on_device = [{key: value.to(device) for key, value in batch.items()} for batch in data]
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    losses = [step(net, optimizer, scaler, on_device[0], device, amp, 0)] if warm_up else []
    timed = on_device[1:] if warm_up else on_device
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    losses += [step(net, optimizer, scaler, batch, device, amp, i) for i, batch in enumerate(timed, len(losses))]
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"images_per_s": cfg["batch_size"] * len(timed) / seconds,
            "peak_gib": torch.cuda.max_memory_allocated() / 2 ** 30 if device == "cuda" else float("nan"),
            "finite": all(np.isfinite(losses)), "loss": losses[-1]}, net


def gpu_against_cpu(method: str, cfg: dict[str, Any], batch: dict) -> tuple[float, float]:
    """(relative loss difference, max |weight difference| after the step) of one float32 step, GPU vs CPU."""
    torch.manual_seed(0)
    cpu = build_method(method, cfg["arch"], cfg).train()
    gpu = copy.deepcopy(cpu).cuda()
    results = []
    for net, device in ((cpu, "cpu"), (gpu, "cuda")):
        optimizer, scaler = build_optimizer(net, cfg), torch.amp.GradScaler(device, enabled=False)
        results.append(step(net, optimizer, scaler, batch, device, False, 0))
    weights = max((a - b.cpu()).abs().max().item() for a, b in zip(cpu.state_dict().values(),
                                                                     gpu.state_dict().values(), strict=True)
                  if a.is_floating_point())
    return abs(results[1] - results[0]) / max(abs(results[0]), 1e-12), weights


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ddp_step(net: torch.nn.Module, cfg: dict[str, Any], batch: dict, device: str, amp: bool) -> tuple[bool, str]:
    """One more step of `net` under DDP in a process group of one (its BatchNorms synchronised): (the step is
    finite and went through DDP, the SyncBatchNorm class)."""
    dist.init_process_group("nccl" if device == "cuda" else "gloo", init_method=f"tcp://127.0.0.1:{free_port()}",
                            rank=0, world_size=1)
    try:
        model = data_parallel(net, World(), net.unused_parameters)
        syncbn = sorted({type(m).__name__ for m in net.modules() if "Sync" in type(m).__name__})
        optimizer, scaler = build_optimizer(net, cfg), torch.amp.GradScaler(device, enabled=amp)
        loss = step(model, optimizer, scaler, batch, device, amp, 0)
        return bool(np.isfinite(loss)) and type(model).__name__ == "DistributedDataParallel", ", ".join(syncbn)
    finally:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true",
                        help="CPU mode: smoke config, ResNet-18, 64 px, batch 2, one step without warm-up")
    parser.add_argument("--steps", type=int, help="timed steps per method (default 5; --short: 1)")
    parser.add_argument("--batch-size", type=int, help="images per step (default 32, the papers' per-GPU batch)")
    parser.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=sorted(METHODS))
    args = parser.parse_args()
    device = "cpu" if args.short else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no GPU is visible: run on a GPU machine, or pass --short for the CPU mode")
    steps = args.steps or (1 if args.short else 5)
    scale = "smoke" if args.short else "paper"
    overrides = {"arch": "resnet18", "image_size": 64, "batch_size": args.batch_size or 2, "workers": 0,
                 "moco": {"queue_size": 64}} if args.short else {"batch_size": args.batch_size or 32, "workers": 0}
    pretrain_section = yaml.safe_load((CONFIG / f"{scale}.yaml").read_text())["pretrain"]
    if device == "cuda":  # the float32 comparison against the CPU needs true float32 matmuls
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    torch.set_num_threads(1 if args.short else torch.get_num_threads())

    rows, failed = [], []
    with tempfile.TemporaryDirectory() as tmp:
        batch_size = overrides["batch_size"]
        batch_count = steps if args.short else steps + 1  # + the warm-up step
        image_list = make_images(Path(tmp), batch_size * batch_count, 96 if args.short else 256, seed=0)
        stores = check_stores(image_list, Path(tmp) / "stores")
        for method in args.methods:
            cfg = run_config(pretrain_section, method, overrides)
            amp = bool(cfg["amp"]) and device == "cuda"
            data = batches(method, cfg, image_list, stores, batch_count)
            measured, net = throughput(method, cfg, data, device, amp, not args.short)
            row = {"method": method, "amp": amp, **measured}
            if device == "cuda":
                small = {key: value[:4] for key, value in data[0].items()}  # a CPU step at batch 4 stays short
                row["loss_rdiff"], row["weight_diff"] = gpu_against_cpu(method, {**cfg, "batch_size": 4}, small)
            row["ddp"], row["syncbn"] = ddp_step(net, cfg, data[0], device, amp)
            ok = (row["finite"] and row["ddp"] and row.get("loss_rdiff", 0) <= LOSS_RTOL
                  and row.get("weight_diff", 0) <= WEIGHT_ATOL)
            failed += [] if ok else [method]
            rows.append(row)
            print(f"{method}: {row}", flush=True)

    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"\n{scale} settings, {overrides}, {steps} timed steps per method, on {name}")
    print("| method | AMP | images/s | peak GiB | loss finite | GPU-CPU loss rel. diff | GPU-CPU max weight diff "
          "| DDP step (SyncBN) |\n|---|---|---|---|---|---|---|---|")
    for row in rows:
        gpu_cpu = [f"{row[key]:.1e}" if key in row else "n/a (CPU)" for key in ("loss_rdiff", "weight_diff")]
        print(f"| {row['method']} | {row['amp']} | {row['images_per_s']:.1f} | {row['peak_gib']:.2f} | "
              f"{row['finite']} | {' | '.join(gpu_cpu)} | {row['ddp']} ({row['syncbn'] or 'none'}) |")
    print(f"tolerances: loss relative {LOSS_RTOL}, weights absolute {WEIGHT_ATOL} (float32, TF32 off)")
    densecl = next((row for row in rows if row["method"] == "densecl"), None)
    if densecl and not args.short:
        print(f"DenseCL: {densecl['images_per_s']:.1f} images/s here / {DENSECL_README_RATE} per V100 (DenseCL "
              f"README) = {densecl['images_per_s'] / DENSECL_README_RATE:.2f}x")
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")
    print("all checks passed")


if __name__ == "__main__":
    main()
