"""The mmengine Config of one segmentation transfer run (FCN or DeepLabV3-ASPP, VOC or Cityscapes).

Starting points, mmseg 1.2.2 configs (all with `_base_/default_runtime.py`):
- FCN on VOC: `configs/fcn/fcn_r50-d8_4xb4-20k_voc12aug-512x512.py` (`_base_/models/fcn_r50-d8.py`,
  `_base_/datasets/pascal_voc12_aug.py`, `_base_/schedules/schedule_20k.py`).
- FCN on Cityscapes: `configs/fcn/fcn_r50-d8_4xb2-40k_cityscapes-769x769.py` (`_base_/datasets/
  cityscapes_769x769.py`, `_base_/schedules/schedule_40k.py`; heads with align_corners=True, slide test
  with 769 windows at stride 513).
- ASPP: `configs/deeplabv3/deeplabv3_r50-d8_4xb4-20k_voc12aug-512x512.py` (`_base_/models/deeplabv3_r50-d8.py`:
  ASPPHead channels 512, dilations (1, 12, 24, 36)); the protocol's schedule replaces PolyLR.

Values that differ from those configs, and why:
- backbone `ResNet` (torchvision layout, as mmseg's `fcn_r18b`/`fcn_r50b` configs) instead of
  `ResNetV1c`: our checkpoints are torchvision ResNets. Depth 18 or 50 from `--arch`; for ResNet-18
  the heads follow mmseg's `fcn_r18b-d8`/`deeplabv3_r18b-d8`: head channels 128, auxiliary head 64.
- the backbone has `num_stages` up to the stage the head reads: a head on layer3 (Res4) drops layer4,
  whose pretrained weights `Pretrained` then skips (it loads non-strictly).
- a frozen backbone: `frozen_stages` = all stages (no gradients, BN in eval mode) and `norm_eval=True`,
  so neither weights nor BN statistics change (LC-loss Table 4, hierarchical grouping Sec. 4.2).
- norm `SyncBN` (as mmseg) only under torchrun with several processes; `BN` in one process, where
  SyncBN has no process group to synchronise over.
- `launcher='pytorch'` under torchrun (WORLD_SIZE > 1), else 'none'. The protocol's batch_size is the
  total batch of the paper (e.g. 16 = mmseg's 4xb4); the dataloader's is per process: batch_size / processes.
- pretrained weights through the backbone's `init_cfg` (`Pretrained`, prefix "backbone.") from
  `python -m finetune convert-mmseg`, or mmseg's default random init with `--weights none`.
- crop, resize scale, iterations, learning rate and schedule from the protocol.
  PolyLR `eta_min` = base_lr / 100 (mmseg: 1e-4 for lr 0.01), so it stays below any base_lr.
- no validation during training; mIoU, mAcc, aAcc are computed once by the test loop on the
  dataset's val split after training (also after resuming a finished run).
- `num_workers=0`: augmentation runs in the seeded main process (reproducible, and 2 shared CPUs).
- checkpoints every `checkpoint_interval` iterations, keeping the last 2 (mmseg keeps all); log
  every 10 iterations (mmseg: 50) so short runs still report progress; `resume=True`.
- `randomness=dict(seed, deterministic=True)` and cudnn_benchmark off: same seed, same result.
- no `SegVisualizationHook`/`SegLocalVisualizer`: no prediction images are needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from mmengine.config import Config

from core.errors import UserError
from finetune.segmentation import datasets
from finetune.segmentation.convert import DEPTHS, PREFIX
from finetune.segmentation.protocol import SegmentationProtocol

# mmseg's "d8" ResNet: output stride 8, stages 3 and 4 dilated instead of strided.
_DILATIONS = (1, 1, 2, 4)
_STRIDES = (1, 2, 1, 1)
ASPP_DILATIONS = (1, 12, 24, 36)  # mmseg deeplabv3_r50-d8 (DeepLabV3's rates 6/12/18 doubled for stride 8)


class _Widths(NamedTuple):
    stages: tuple[int, int, int, int]  # output channels of layer1..layer4
    channels: int  # decode head
    aux_channels: int  # auxiliary head


# mmseg's fcn_r50-d8 / deeplabv3_r50-d8 and their r18(b) variants.
_WIDTHS = {18: _Widths((64, 128, 256, 512), 128, 64), 50: _Widths((256, 512, 1024, 2048), 512, 256)}


def _head(kind: str, *, in_channels: int, in_index: int, channels: int, protocol: SegmentationProtocol,
          norm_cfg: dict[str, Any], **extra: Any) -> dict[str, Any]:
    loss_weight = extra.pop("loss_weight", 1.0)
    return dict(
        type=kind,
        in_channels=in_channels,
        in_index=in_index,
        channels=channels,
        dropout_ratio=0.1,
        num_classes=datasets.NUM_CLASSES[protocol.dataset],
        norm_cfg=norm_cfg,
        align_corners=protocol.align_corners,
        loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=loss_weight),
        **extra,
    )


def _backbone(depth: int, weights: Path | None, protocol: SegmentationProtocol, norm_cfg: dict[str, Any]
              ) -> dict[str, Any]:
    stages = protocol.head_stage + 1
    backbone = dict(
        type="ResNet",
        depth=depth,
        num_stages=stages,
        out_indices=tuple(range(stages)),
        dilations=_DILATIONS[:stages],
        strides=_STRIDES[:stages],
        norm_cfg=norm_cfg,
        # mmseg's ResNet.train() re-applies both after every model.train(): frozen stages stay in eval mode.
        frozen_stages=stages if protocol.frozen_backbone else -1,
        norm_eval=protocol.frozen_backbone,
        style="pytorch",
        contract_dilation=True,
    )
    if weights is not None:
        backbone["init_cfg"] = dict(type="Pretrained", checkpoint=str(weights), prefix=PREFIX)
    return backbone


def build_model(arch: str, weights: Path | None, protocol: SegmentationProtocol, norm: str = "BN") -> dict[str, Any]:
    """The EncoderDecoder config: d8 ResNet, FCN or ASPP decode head, optional FCN auxiliary head; every
    norm layer of type `norm` ("BN" or "SyncBN")."""
    depth = DEPTHS[arch]
    widths = _WIDTHS[depth]
    norm_cfg = dict(type=norm, requires_grad=True)
    index = protocol.head_stage
    common = dict(in_channels=widths.stages[index], in_index=index, channels=widths.channels, protocol=protocol,
                  norm_cfg=norm_cfg)
    if protocol.head == "fcn":
        decode_head = _head("FCNHead", num_convs=2, concat_input=True, **common)
    else:
        decode_head = _head("ASPPHead", dilations=ASPP_DILATIONS, **common)
    crop = (protocol.crop_size, protocol.crop_size)
    if protocol.slide_stride is None:
        test_cfg = dict(mode="whole")
    else:
        test_cfg = dict(mode="slide", crop_size=crop, stride=(protocol.slide_stride, protocol.slide_stride))
    model = dict(
        type="EncoderDecoder",
        data_preprocessor=dict(
            type="SegDataPreProcessor",
            mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375],
            bgr_to_rgb=True,
            pad_val=0,
            seg_pad_val=255,
            size=crop,
        ),
        backbone=_backbone(depth, weights, protocol, norm_cfg),
        decode_head=decode_head,
        train_cfg=dict(),
        test_cfg=test_cfg,
    )
    if protocol.auxiliary_head:
        model["auxiliary_head"] = _head(
            "FCNHead", in_channels=widths.stages[index - 1], in_index=index - 1, channels=widths.aux_channels,
            protocol=protocol, norm_cfg=norm_cfg, num_convs=1, concat_input=False, loss_weight=0.4,
        )
    return model


def _pipelines(protocol: SegmentationProtocol) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """mmseg's train and test pipelines of pascal_voc12.py / cityscapes_769x769.py with the protocol's sizes."""
    crop = (protocol.crop_size, protocol.crop_size)
    scale = tuple(protocol.resize_scale)
    train = [
        dict(type="LoadImageFromFile"),
        dict(type="LoadAnnotations"),
        dict(type="RandomResize", scale=scale, ratio_range=(0.5, 2.0), keep_ratio=True),
        dict(type="RandomCrop", crop_size=crop, cat_max_ratio=0.75),
        dict(type="RandomFlip", prob=0.5),
        dict(type="PhotoMetricDistortion"),
        dict(type="PackSegInputs"),
    ]
    test = [
        dict(type="LoadImageFromFile"),
        dict(type="Resize", scale=scale, keep_ratio=True),
        dict(type="LoadAnnotations"),  # after Resize: the metric compares at the original size
        dict(type="PackSegInputs"),
    ]
    return train, test


def _schedule(protocol: SegmentationProtocol) -> dict[str, Any]:
    end = dict(begin=0, end=protocol.max_iters, by_epoch=False)
    if protocol.lr_steps:  # hierarchical grouping Sec. 4.2: "decays by 0.1 at 10K and 15K iterations"
        return dict(type="MultiStepLR", milestones=list(protocol.lr_steps), gamma=0.1, **end)
    return dict(type="PolyLR", eta_min=protocol.base_lr / 100, power=0.9, **end)


def _dataloader(dataset: dict[str, Any], **loader: Any) -> dict[str, Any]:
    return dict(num_workers=0, persistent_workers=False, dataset=dataset, **loader)


def per_process_batch(protocol: SegmentationProtocol, world_size: int) -> int:
    """The dataloader's batch_size (mmseg's is per GPU) that gives the protocol's total batch over `world_size`."""
    if protocol.batch_size % world_size:
        counts = [n for n in range(1, protocol.batch_size + 1) if protocol.batch_size % n == 0]
        raise UserError(
            f"protocol batch_size {protocol.batch_size} is the total over all processes and does not split over "
            f"{world_size}: launch one of {counts} processes (torchrun --nproc-per-node x nodes)."
        )
    return protocol.batch_size // world_size


def build_config(
    *, data_dir: Path, weights: Path | None, arch: str, protocol: SegmentationProtocol, seed: int, work_dir: Path,
    world_size: int = 1,
) -> Config:
    """The Runner config of one run on `world_size` processes (torchrun's WORLD_SIZE); `data_dir` is what
    `datasets.check_root` returned for the protocol."""
    train_pipeline, test_pipeline = _pipelines(protocol)
    distributed = world_size > 1
    return Config(
        dict(
            default_scope="mmseg",
            work_dir=str(work_dir),
            launcher="pytorch" if distributed else "none",
            model=build_model(arch, weights, protocol, norm="SyncBN" if distributed else "BN"),
            train_dataloader=_dataloader(
                datasets.train_dataset(protocol.dataset, data_dir, protocol.train_aug, train_pipeline),
                batch_size=per_process_batch(protocol, world_size),
                sampler=dict(type="InfiniteSampler", shuffle=True),
            ),
            test_dataloader=_dataloader(
                datasets.eval_dataset(protocol.dataset, data_dir, test_pipeline, protocol.eval_images),
                batch_size=1,
                sampler=dict(type="DefaultSampler", shuffle=False),
            ),
            test_evaluator=dict(type="IoUMetric", iou_metrics=["mIoU"]),
            train_cfg=dict(type="IterBasedTrainLoop", max_iters=protocol.max_iters),
            test_cfg=dict(type="TestLoop"),
            optim_wrapper=dict(
                type="OptimWrapper",
                # mmseg schedules and hierarchical grouping Sec. 4.2 alike: momentum 0.9, weight decay 5e-4.
                optimizer=dict(type="SGD", lr=protocol.base_lr, momentum=0.9, weight_decay=0.0005),
                clip_grad=None,
            ),
            param_scheduler=[_schedule(protocol)],
            default_hooks=dict(
                timer=dict(type="IterTimerHook"),
                logger=dict(type="LoggerHook", interval=10, log_metric_by_epoch=False),
                param_scheduler=dict(type="ParamSchedulerHook"),
                # mmengine deletes the oldest checkpoint before writing the next: keeping two, the one
                # named by work/last_checkpoint survives a kill during a save.
                checkpoint=dict(
                    type="CheckpointHook", by_epoch=False, interval=protocol.checkpoint_interval, max_keep_ckpts=2
                ),
                sampler_seed=dict(type="DistSamplerSeedHook"),
            ),
            env_cfg=dict(
                cudnn_benchmark=False,
                mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
                dist_cfg=dict(backend="nccl"),
            ),
            randomness=dict(seed=seed, deterministic=True),
            log_processor=dict(by_epoch=False),
            log_level="INFO",
            load_from=None,
            resume=True,
        ),
        # The config is dumped to the work dir, logged and stored in every checkpoint: unformatted, because
        # yapf's formatting costs ~0.5 s per dump (~2.5 s of a smoke job).
        format_python_code=False,
    )
