"""The mmengine Config for FCN semantic segmentation on PASCAL VOC 2012.

Starting point: mmseg's `configs/fcn/fcn_r50-d8_4xb4-20k_voc12aug-512x512.py` (with
`_base_/models/fcn_r50-d8.py`, `_base_/datasets/pascal_voc12.py`, `_base_/schedules/schedule_20k.py`,
`_base_/default_runtime.py`). Values that differ, and why:

- backbone `ResNet` (torchvision layout, as mmseg's `fcn_r18b`/`fcn_r50b` configs) instead of
  `ResNetV1c`: our checkpoints are torchvision ResNets. Depth 18 or 50 from `--arch`; for ResNet-18
  the heads follow mmseg's `fcn_r18b-d8`: FCN head in_channels 512 / channels 128, auxiliary head
  in_channels 256 / channels 64.
- norm `BN` instead of `SyncBN`: one process (SyncBN needs a distributed group).
- pretrained weights through the backbone's `init_cfg` (`Pretrained`, prefix "backbone.") from
  `python -m finetune convert-mmseg`, or mmseg's default random init with `--weights none`.
- train set `ImageSets/Segmentation/train.txt`, plus SBD's `aug.txt` / `SegmentationClassAug`
  (mmseg's voc12aug ConcatDataset) when the protocol's `train_aug` is true: paper scale. The smoke
  VOC root built from COCO has no SBD masks, so smoke runs train on train.txt alone.
- crop size, iterations, batch size and learning rate from the protocol (mmseg: 512, 20k, 4 per
  GPU x 4 GPUs, 0.01). The resize scale keeps mmseg's ratio to the crop, (4 * crop, crop) for
  (2048, 512), for training and testing, so small crops also mean cheap evaluation.
- PolyLR `eta_min` = base_lr / 100 (mmseg: 1e-4 for lr 0.01), so it stays below any base_lr.
- no validation during training; mIoU, mAcc, aAcc are computed once by the test loop on
  `ImageSets/Segmentation/val.txt` after training (also after resuming a finished run).
- `num_workers=0`: augmentation runs in the seeded main process (reproducible, and 2 shared CPUs).
- checkpoints every `checkpoint_interval` iterations, keeping the last 2 (mmseg keeps all); log
  every 10 iterations (mmseg: 50) so short runs still report progress; `resume=True`.
- `randomness=dict(seed, deterministic=True)` and cudnn_benchmark off: same seed, same result.
- no `SegVisualizationHook`/`SegLocalVisualizer`: no prediction images are needed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

from mmengine.config import Config

from core.errors import UserError
from finetune.common import abbreviate, parse_protocol_json
from finetune.segmentation.convert import DEPTHS, PREFIX

NUM_CLASSES = 21  # background + 20 VOC classes; 255 is void
IMG_DIR = "JPEGImages"
SEG_DIR = "SegmentationClass"
TRAIN_SPLIT = "ImageSets/Segmentation/train.txt"
VAL_SPLIT = "ImageSets/Segmentation/val.txt"
# SBD's extra masks, as mmseg's voc12aug config adds them (tools/dataset_converters/voc_aug.py layout).
AUG_SEG_DIR = "SegmentationClassAug"
AUG_SPLIT = "ImageSets/Segmentation/aug.txt"


@dataclass(frozen=True)
class SegmentationProtocol:
    """The finetune.voc_segmentation settings of workflow/config, without threads (given by --threads)."""

    max_iters: int
    batch_size: int
    crop_size: int
    base_lr: float
    checkpoint_interval: int
    train_aug: bool  # add SBD's aug.txt / SegmentationClassAug to train.txt ("train_aug2012")

    @classmethod
    def from_json(cls, text: str) -> SegmentationProtocol:
        """Parse --protocol-json: a JSON object with exactly these fields; UserError otherwise."""
        keys = frozenset(field.name for field in fields(cls))
        return cls(**parse_protocol_json(text, keys, "voc_segmentation"))

    def __post_init__(self) -> None:
        for name, minimum in (("max_iters", 1), ("batch_size", 1), ("checkpoint_interval", 1), ("crop_size", 32)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:  # bool is an int subclass
                raise UserError(f"protocol {name} must be an integer >= {minimum}, got {value!r}.")
        if not isinstance(self.train_aug, bool):
            raise UserError(f"protocol train_aug must be true or false, got {self.train_aug!r}.")
        lr = self.base_lr
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (math.isfinite(lr) and lr > 0):
            raise UserError(f"protocol base_lr must be a positive number, got {lr!r}.")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Heads(NamedTuple):
    in_channels: int
    channels: int
    aux_in_channels: int
    aux_channels: int


# mmseg's fcn_r50-d8 and fcn_r18b-d8 head widths.
_HEADS = {18: _Heads(512, 128, 256, 64), 50: _Heads(2048, 512, 1024, 256)}


def _fcn_head(
    norm_cfg: dict[str, Any],
    *,
    in_channels: int,
    in_index: int,
    channels: int,
    num_convs: int,
    concat_input: bool,
    loss_weight: float,
) -> dict[str, Any]:
    return dict(
        type="FCNHead",
        in_channels=in_channels,
        in_index=in_index,
        channels=channels,
        num_convs=num_convs,
        concat_input=concat_input,
        dropout_ratio=0.1,
        num_classes=NUM_CLASSES,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=loss_weight),
    )


def _model(arch: str, weights: Path | None, crop: int) -> dict[str, Any]:
    depth = DEPTHS[arch]
    heads = _HEADS[depth]
    norm_cfg = dict(type="BN", requires_grad=True)
    backbone = dict(
        type="ResNet",
        depth=depth,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        dilations=(1, 1, 2, 4),
        strides=(1, 2, 1, 1),
        norm_cfg=norm_cfg,
        norm_eval=False,
        style="pytorch",
        contract_dilation=True,
    )
    if weights is not None:
        backbone["init_cfg"] = dict(type="Pretrained", checkpoint=str(weights), prefix=PREFIX)
    return dict(
        type="EncoderDecoder",
        data_preprocessor=dict(
            type="SegDataPreProcessor",
            mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375],
            bgr_to_rgb=True,
            pad_val=0,
            seg_pad_val=255,
            size=(crop, crop),
        ),
        backbone=backbone,
        decode_head=_fcn_head(
            norm_cfg,
            in_channels=heads.in_channels,
            in_index=3,
            channels=heads.channels,
            num_convs=2,
            concat_input=True,
            loss_weight=1.0,
        ),
        auxiliary_head=_fcn_head(
            norm_cfg,
            in_channels=heads.aux_in_channels,
            in_index=2,
            channels=heads.aux_channels,
            num_convs=1,
            concat_input=False,
            loss_weight=0.4,
        ),
        train_cfg=dict(),
        test_cfg=dict(mode="whole"),
    )


def _dataset(voc2012: Path, split: str, seg_dir: str, pipeline: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(
        type="PascalVOCDataset",
        data_root=str(voc2012),
        data_prefix=dict(img_path=IMG_DIR, seg_map_path=seg_dir),
        ann_file=split,
        pipeline=pipeline,
    )


def _train_dataset(voc2012: Path, train_aug: bool, pipeline: list[dict[str, Any]]) -> dict[str, Any]:
    train = _dataset(voc2012, TRAIN_SPLIT, SEG_DIR, pipeline)
    if not train_aug:
        return train
    # mmseg's pascal_voc12_aug.py: ConcatDataset of train.txt and SBD's aug.txt.
    return dict(type="ConcatDataset", datasets=[train, _dataset(voc2012, AUG_SPLIT, AUG_SEG_DIR, pipeline)])


def _dataloader(dataset: dict[str, Any], **loader: Any) -> dict[str, Any]:
    return dict(num_workers=0, persistent_workers=False, dataset=dataset, **loader)


def build_config(
    *, voc2012: Path, weights: Path | None, arch: str, protocol: SegmentationProtocol, seed: int, work_dir: Path
) -> Config:
    """The Runner config of one FCN fine-tuning run on `voc2012` (a VOCdevkit/VOC2012 folder)."""
    crop = (protocol.crop_size, protocol.crop_size)
    scale = (4 * protocol.crop_size, protocol.crop_size)
    train_pipeline = [
        dict(type="LoadImageFromFile"),
        dict(type="LoadAnnotations"),
        dict(type="RandomResize", scale=scale, ratio_range=(0.5, 2.0), keep_ratio=True),
        dict(type="RandomCrop", crop_size=crop, cat_max_ratio=0.75),
        dict(type="RandomFlip", prob=0.5),
        dict(type="PhotoMetricDistortion"),
        dict(type="PackSegInputs"),
    ]
    test_pipeline = [
        dict(type="LoadImageFromFile"),
        dict(type="Resize", scale=scale, keep_ratio=True),
        dict(type="LoadAnnotations"),  # after Resize: the metric compares at the original size
        dict(type="PackSegInputs"),
    ]
    return Config(
        dict(
            default_scope="mmseg",
            work_dir=str(work_dir),
            model=_model(arch, weights, protocol.crop_size),
            train_dataloader=_dataloader(
                _train_dataset(voc2012, protocol.train_aug, train_pipeline),
                batch_size=protocol.batch_size,
                sampler=dict(type="InfiniteSampler", shuffle=True),
            ),
            test_dataloader=_dataloader(
                _dataset(voc2012, VAL_SPLIT, SEG_DIR, test_pipeline),
                batch_size=1,
                sampler=dict(type="DefaultSampler", shuffle=False),
            ),
            test_evaluator=dict(type="IoUMetric", iou_metrics=["mIoU"]),
            train_cfg=dict(type="IterBasedTrainLoop", max_iters=protocol.max_iters),
            test_cfg=dict(type="TestLoop"),
            optim_wrapper=dict(
                type="OptimWrapper",
                optimizer=dict(type="SGD", lr=protocol.base_lr, momentum=0.9, weight_decay=0.0005),
                clip_grad=None,
            ),
            param_scheduler=[
                dict(
                    type="PolyLR",
                    eta_min=protocol.base_lr / 100,
                    power=0.9,
                    begin=0,
                    end=protocol.max_iters,
                    by_epoch=False,
                )
            ],
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
        )
    )


def check_voc2012(voc_root: Path, train_aug: bool = False) -> Path:
    """The VOC2012 folder of the VOCdevkit `voc_root`; UserError listing what is missing."""
    voc2012 = voc_root / "VOC2012"
    expected = [voc2012 / IMG_DIR, voc2012 / SEG_DIR, voc2012 / TRAIN_SPLIT, voc2012 / VAL_SPLIT]
    if train_aug:
        expected += [voc2012 / AUG_SEG_DIR, voc2012 / AUG_SPLIT]
    if missing := [str(path) for path in expected if not path.exists()]:
        raise UserError(
            f"{voc_root} is not a VOCdevkit folder with the VOC2012 segmentation layout: missing {', '.join(missing)} "
            f"(expected {', '.join(map(str, expected))}); build it with `python -m prepare voc` or fix --voc-root."
        )
    splits = [(TRAIN_SPLIT, SEG_DIR), (VAL_SPLIT, SEG_DIR)] + ([(AUG_SPLIT, AUG_SEG_DIR)] if train_aug else [])
    for split, seg_dir in splits:
        ids = (voc2012 / split).read_text().split()
        if not ids:
            raise UserError(f"{voc2012 / split} lists no images; rebuild the VOC root with `python -m prepare voc`.")
        absent = [
            str(path)
            for image_id in ids
            for path in (voc2012 / IMG_DIR / f"{image_id}.jpg", voc2012 / seg_dir / f"{image_id}.png")
            if not path.is_file()
        ]
        if absent:
            raise UserError(
                f"{voc2012 / split} lists images whose files are missing: {abbreviate(absent)}; "
                "rebuild the VOC root with `python -m prepare voc`."
            )
    return voc2012
