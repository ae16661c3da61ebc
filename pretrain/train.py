"""The pretraining loop: SGD with a cosine schedule, checkpoints that resume exactly, export.

A run is fully determined by (config, seed): the model is initialised from the seed, the data
order of epoch e from (seed, e), and each sample's views from (seed, e, index). The resume state
holds model, optimizer and iteration, so a killed run that restarts reproduces the uninterrupted
run bit for bit on CPU; it is deleted once the backbone is exported. SIGTERM / SIGUSR1 (the
scheduler's preemption) end the run at an iteration boundary with that state saved.

Under torchrun the processes split every global batch (`pretrain.distributed`); rank 0 alone writes
the log, the state and the export, whose keys are those of a single-process run, so either resumes
the other.
"""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from core.errors import UserError
from core.preemption import StopRequest, ignore_stop_signals
from core.provenance import provenance
from prepare.image_list import read_image_list
from prepare.shards import ShardedStore, image_list_hash
from pretrain.checkpoints import ResumeState, run_key
from pretrain.data import PretrainImages
from pretrain.distributed import (
    World,
    data_parallel,
    mean_over_ranks,
    per_rank_batch,
    process_group,
    rank_indices,
)
from pretrain.export import export
from pretrain.methods import build_method, method_class
from pretrain.optim import build_optimizer, lr_at
from pretrain.runs import METHOD_EMBEDDING, METHOD_PREPARED

log = logging.getLogger("pretrain")

def epoch_order(num_images: int, seed: int, epoch: int) -> list[int]:
    """The shuffled image order of one epoch, a function of (seed, epoch) only."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(num_images, generator=gen).tolist()


def training_images(method: str, image_list: str, cfg: dict[str, Any], seed: int,
                    prepared: str | Path | None = None) -> PretrainImages:
    """The samples `method` trains on; `prepared` is the index.json of the prepare-stage store it reads
    (`runs.METHOD_PREPARED`), which must have been made from `image_list`."""
    store_kind = METHOD_PREPARED.get(method)
    if store_kind and prepared is None:
        raise UserError(f"{method} reads the prepare stage's {store_kind}: pass --prepared "
                        f"<results>/prepare/{store_kind}/<image set>/index.json.")
    store = ShardedStore(prepared, read_image_list(image_list)) if store_kind else None
    cls = method_class(method)
    return PretrainImages(image_list, functools.partial(cls.make_sample, cfg=cfg), cls.min_side(cfg), seed, store)


def _batches(dataset: PretrainImages, cfg: dict[str, Any], epoch: int, first_batch: int, world: World) -> DataLoader:
    batch = cfg["batch_size"]
    dataset.set_epoch(epoch)
    order = epoch_order(len(dataset), dataset.seed, epoch)[first_batch * batch:]
    return DataLoader(dataset, batch_size=per_rank_batch(batch, world), sampler=rank_indices(order, batch, world),
                      drop_last=True, num_workers=cfg["workers"], worker_init_fn=ignore_stop_signals)


class LossLog:
    """Per-iteration losses as CSV (for curves); on resume, rows past the restart are dropped."""

    def __init__(self, path: Path, start: int) -> None:
        self.path = path
        kept = path.read_text().splitlines()[: start + 1] if start and path.exists() else []
        path.write_text("".join(line + "\n" for line in kept))
        self.header = bool(kept)

    def write(self, iteration: int, lr: float, losses: dict[str, float]) -> None:
        with self.path.open("a") as f:
            if not self.header:
                f.write(",".join(["iteration", "lr", *losses]) + "\n")
                self.header = True
            f.write(",".join([str(iteration), f"{lr:.6g}", *(f"{v:.6g}" for v in losses.values())]) + "\n")


def _global_values(losses: dict[str, torch.Tensor]) -> dict[str, float]:
    """The losses averaged over the ranks: rank 0 logs the global loss, and all ranks see the same
    non-finite value and stop together rather than leave the others waiting in a collective."""
    means = mean_over_ranks(torch.stack([value.detach().float() for value in losses.values()]))
    return dict(zip(losses, means.tolist(), strict=True))


def apply_loss(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, loss: torch.Tensor) -> None:
    """Back-propagate `loss` (scaled under AMP) and step the optimizer: one update of the network."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def train(method: str, image_list: str, cfg: dict[str, Any], seed: int, out_dir: str | Path, data_name: str,
          device: str = "cpu", threads: int = 1, prepared: str | Path | None = None) -> None:
    """Pretrain `method` on the images of `image_list` and export the backbone to `out_dir`; under torchrun,
    as one of its processes."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' requested but no GPU is visible; set `device: cpu` in the config.")

    if cfg["lr_schedule"] == "step" and not cfg.get("lr_step_epochs"):
        raise UserError("pretrain.lr_schedule is 'step' but lr_step_epochs is empty or missing: list the epochs "
                        "at which the learning rate drops x0.1 (method_overrides or pretrain).")
    dataset = training_images(method, image_list, cfg, seed, prepared)
    iters_per_epoch = len(dataset) // cfg["batch_size"]
    if iters_per_epoch == 0:
        raise UserError(f"{len(dataset)} images in {image_list} is fewer than one batch of "
                        f"{cfg['batch_size']}; lower pretrain.batch_size or add images.")
    total = cfg["epochs"] * iters_per_epoch
    warmup = cfg["warmup_epochs"] * iters_per_epoch

    with process_group(device) as world, StopRequest() as stop:
        per_rank_batch(cfg["batch_size"], world)  # fail before building anything
        on = world.device(device)
        net = build_method(method, cfg["arch"], cfg).to(on)
        optimizer = build_optimizer(net, cfg)
        amp = cfg["amp"] and device == "cuda"  # mixed precision where the protocol asks for it (LC-loss), GPU only
        scaler = torch.amp.GradScaler(device, enabled=amp)
        images_hash = image_list_hash(dataset.paths)
        state = ResumeState(out, run_key(method, cfg, seed, images_hash))
        start = state.load(net, optimizer, scaler, total)
        model = data_parallel(net, world, net.unused_parameters)  # `net` stays the module that is saved

        loss_log = LossLog(out / "train_log.csv", start) if world.is_main else None
        model.train()
        progress = tqdm(total=total, initial=start, desc=f"pretrain {method}", unit="it", dynamic_ncols=True,
                        disable=not world.is_main)
        iteration = start
        while iteration < total:
            epoch, first_batch = divmod(iteration, iters_per_epoch)
            for batch in _batches(dataset, cfg, epoch, first_batch, world):
                lr = lr_at(cfg, iteration, total, warmup)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                batch = {key: value.to(on) for key, value in batch.items()}
                with torch.autocast(device_type=device, enabled=amp):
                    losses = model(**batch, iteration=iteration, total=total)
                values = _global_values(losses)
                if not math.isfinite(values["loss"]):
                    last = state.drop_if_poisoned(iteration) if world.is_main else "on rank 0"
                    raise UserError(f"{method}: loss is {values['loss']} at iteration {iteration}; last good "
                                    f"checkpoint: {last}. Lower pretrain.base_lr (now {cfg['base_lr']}) or check the "
                                    "input images, then rerun (a run under an unchanged config resumes from that "
                                    "checkpoint; a changed config starts over).")
                apply_loss(optimizer, scaler, losses["loss"])
                iteration += 1
                if loss_log is not None:
                    loss_log.write(iteration, lr, values)
                progress.update(1)
                progress.set_postfix(loss=f"{values['loss']:.4f}", lr=f"{lr:.4f}")
                stopping = stop.agreed()  # all ranks stop after the same iteration
                checkpoint = iteration % cfg["checkpoint_every"] == 0 or iteration == total or stopping
                if checkpoint and world.is_main:
                    state.save(net, optimizer, scaler, iteration)
                if stopping:
                    stop.exit(str(state.path))  # once rank 0 has saved
        progress.close()
    if not world.is_main:
        return

    meta = {
        "method": method,
        "arch": cfg["arch"],
        "pretrain_data": {"name": data_name, "images": len(dataset), "image_list_hash": images_hash},
        "epochs": cfg["epochs"],
        "iterations": total,
        "provenance": provenance(cfg, seed),
    }
    export(net.state_dict(), meta, out, METHOD_EMBEDDING.get(method))
    # The resume states (2-3 copies of the weights with the optimizer's) serve only an interrupted run.
    state.discard()
    log.info("exported %s", out / "backbone.pth")
