"""Train a segmentation protocol with mmseg's Runner and evaluate mIoU on its val split: one launcher
for FCN / DeepLabV3-ASPP on VOC 2012 or Cityscapes, fine-tuned or on a frozen backbone."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner, find_latest_checkpoint

from core.errors import UserError
from core.io import write_json
from core.preemption import StopRequest
from core.provenance import config_hash, provenance
from finetune.common import abbreviate, check_resumable, keep_final_weights
from finetune.segmentation.compat import ensure_mmcv_ops
from finetune.segmentation.config import build_config
from finetune.segmentation.convert import read_arch
from finetune.segmentation.datasets import check_root
from finetune.segmentation.own_checkpoints import mmengine_checkpoint_globals
from finetune.segmentation.preemption import PreemptionHook, RandomStateHook
from finetune.segmentation.protocol import SegmentationProtocol

METRICS = ("mIoU", "mAcc", "aAcc")


class FiniteLossHook(Hook):
    """Stop at the first non-finite loss with the fix, instead of training on NaNs."""

    def __init__(self, base_lr: float, work_dir: Path) -> None:
        self.base_lr = base_lr
        self.work_dir = work_dir

    def after_train_iter(
        self, runner: Runner, batch_idx: int, data_batch: Any = None, outputs: dict[str, Any] | None = None
    ) -> None:
        loss = outputs["loss"].item()
        if not math.isfinite(loss):
            raise UserError(
                f"the loss became {loss} at iteration {runner.iter + 1}; lower base_lr in the protocol "
                f"(now {self.base_lr}), then delete {self.work_dir} and rerun."
            )


class FrozenBackboneHook(Hook):
    """Fail the run if a frozen backbone changed: every parameter and buffer (BN statistics included)
    must end training bit-identical to how it started, or the frozen-backbone numbers mean nothing."""

    @staticmethod
    def _backbone(runner: Runner) -> torch.nn.Module:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model  # DDP on several GPUs
        return model.backbone

    def before_train(self, runner: Runner) -> None:
        self.start = {key: value.detach().clone() for key, value in self._backbone(runner).state_dict().items()}

    def after_train(self, runner: Runner) -> None:
        end = self._backbone(runner).state_dict()
        if changed := sorted(key for key, value in self.start.items() if not torch.equal(value, end[key])):
            raise RuntimeError(f"the frozen backbone changed during training: {abbreviate(changed)}")
        runner.logger.info(f"frozen backbone unchanged: {len(end)} tensors bit-identical")


class _Runner(Runner):
    """mmengine's Runner, able to resume from its own checkpoints under torch >= 2.6: `torch.load` keeps
    weights_only, with what mmengine's checkpoints pickle allow-listed (own_checkpoints.py)."""

    def resume(self, filename: str, *args: Any, **kwargs: Any) -> None:
        with mmengine_checkpoint_globals():
            super().resume(filename, *args, **kwargs)


def _check_device(device: str, world_size: int) -> None:
    # mmengine's Runner puts the model on the GPU whenever one is visible, whatever we ask.
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but no GPU is visible; pass --device cpu.")
    if device == "cpu" and torch.cuda.is_available():
        raise UserError("--device cpu but a GPU is visible; hide it with CUDA_VISIBLE_DEVICES= or pass --device cuda.")
    # mmengine's launcher binds each process to GPU LOCAL_RANK, and torch's SyncBN runs on GPUs only.
    if world_size > 1 and device == "cpu":
        raise UserError(f"torchrun started {world_size} processes but --device is cpu: distributed training needs "
                        "--device cuda; run one CPU process without torchrun.")
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if world_size > 1 and local_processes > torch.cuda.device_count():
        raise UserError(f"torchrun started {local_processes} processes on this node but {torch.cuda.device_count()} "
                        "GPUs are visible; pass --nproc-per-node <= the GPU count.")


def run(
    *,
    data_root: Path,
    weights: Path | None,
    arch: str,
    name: str,
    protocol: SegmentationProtocol,
    seed: int,
    threads: int,
    device: str,
    out: Path,
    keep_checkpoints: bool = False,
) -> dict[str, Any] | None:
    """Train, evaluate and write `out`/metrics.json (last, atomically); return what it holds (None on the
    ranks other than 0 under torchrun).

    `name` is the protocol's config section, recorded as metrics.json's "protocol". Unless
    `keep_checkpoints`, the work dir then keeps only the final weights (`keep_final_weights`). On a
    stop signal (core.preemption), training saves a resume checkpoint and exits with 128 + signal number.
    """
    data_dir = check_root(protocol.dataset, data_root, protocol.train_aug)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun
    _check_device(device, world_size)
    if weights is not None and (weights_arch := read_arch(weights)) != arch:
        raise UserError(f"{weights} holds a {weights_arch} backbone but --arch is {arch}; pass --arch {weights_arch}.")
    torch.set_num_threads(threads)
    ensure_mmcv_ops()  # before the Runner imports mmseg's modules

    work_dir = out / "work"
    weights_str = None if weights is None else str(weights)
    run_key = config_hash(
        {"protocol": protocol.as_dict(), "seed": seed, "weights": weights_str, "arch": arch, "data": str(data_root)}
    )
    check_resumable(work_dir, run_key, has_checkpoint=find_latest_checkpoint(str(work_dir)) is not None)
    cfg = build_config(data_dir=data_dir, weights=weights, arch=arch, protocol=protocol, seed=seed, work_dir=work_dir,
                       world_size=world_size)
    runner = _Runner.from_cfg(cfg)
    runner.register_hook(FiniteLossHook(protocol.base_lr, work_dir))
    runner.register_hook(RandomStateHook())
    if protocol.frozen_backbone:
        runner.register_hook(FrozenBackboneHook())
    latest = find_latest_checkpoint(str(work_dir))
    runner.logger.info(f"resuming from {latest}" if latest else "no checkpoint in the work dir: training from scratch")
    with StopRequest() as stop:
        runner.register_hook(PreemptionHook(stop))
        runner.train()
    results = runner.test_loop.run()  # not runner.test(): it would reload the checkpoint just written
    if not is_main_process():
        return None  # every rank gets the gathered metrics; rank 0 writes the outputs

    metrics = {key: round(float(results[key]), 2) for key in METRICS}  # mmseg rounds in float32: drop the noise
    if not all(math.isfinite(value) for value in metrics.values()):
        raise UserError(f"{name}: evaluation gave non-finite metrics {metrics}; check the val masks of {data_dir}.")
    summary = {
        "protocol": name,
        "metrics": metrics,
        "weights": weights_str,
        "iterations": protocol.max_iters,
        "provenance": provenance(protocol.as_dict(), seed),
    }
    write_json(out / "metrics.json", summary)
    if not keep_checkpoints:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        keep_final_weights(work_dir, model.state_dict(), "state_dict", "iter_*.pth")
    scores = ", ".join(f"{key} {value:.2f}" for key, value in metrics.items())
    runner.logger.info(f"{name} ({protocol.dataset} val): {scores}")
    return summary
