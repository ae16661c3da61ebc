"""The settings of one segmentation transfer protocol (a finetune.<section> of workflow/config), checked.

One launcher serves every mmseg protocol; these keys select what differs between them:

- `dataset`: "voc" (VOC 2012 train[+aug] -> val, 21 classes) or "cityscapes" (train -> val, 19 classes).
- `head`: "fcn" (mmseg FCNHead, LC-loss Table 3/4) or "aspp" (mmseg ASPPHead, DeepLabV3's ASPP;
  hierarchical grouping Table 1); `head_input` is the ResNet stage it reads ("layer3" = Res4,
  "layer4" = Res5); `auxiliary_head` adds mmseg's FCN auxiliary head (weight 0.4) on the stage before.
- `frozen_backbone`: the pretrained ResNet is frozen, weights and BN statistics; only the heads train.
- `lr_steps`: [] for mmseg's PolyLR, else a MultiStepLR dividing the rate by 10 at these iterations.
- `resize_scale` [long, short]: mmseg's (Random)Resize scale, for training (x0.5-2.0) and testing.
- `slide_stride`: null for whole-image testing, else sliding-window testing with crop_size windows.
- `align_corners`: the heads' `align_corners` when they upsample logits (mmseg: true for its 769 crops).
- `eval_images`: null evaluates the whole val split (every paper); N, the first N images of it (a smoke
  run's time, not a protocol of the papers).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from core.errors import UserError
from finetune.common import parse_protocol_json

DATASETS = ("voc", "cityscapes")
HEADS = ("fcn", "aspp")
STAGES = ("layer1", "layer2", "layer3", "layer4")  # ResNet stages as named by torchvision and mmseg's ResNet


def _is_int(value: Any, minimum: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= minimum  # bool is an int subclass


@dataclass(frozen=True)
class SegmentationProtocol:
    """A finetune.<section> of the segmentation launcher, without threads (given by --threads)."""

    dataset: str
    head: str
    head_input: str
    auxiliary_head: bool
    frozen_backbone: bool
    max_iters: int
    batch_size: int  # the total over all processes (the paper's); config.per_process_batch divides it
    crop_size: int
    resize_scale: tuple[int, int]
    base_lr: float
    lr_steps: tuple[int, ...]
    slide_stride: int | None
    align_corners: bool
    checkpoint_interval: int
    train_aug: bool  # VOC only: add SBD's aug.txt / SegmentationClassAug to train.txt ("train_aug2012")
    eval_images: int | None  # null: the whole val split; N: its first N images (mmengine's `indices`)

    @classmethod
    def from_json(cls, text: str, section: str = "<segmentation protocol>") -> SegmentationProtocol:
        """Parse --protocol-json: a JSON object with exactly these fields; UserError otherwise."""
        return cls(**parse_protocol_json(text, frozenset(field.name for field in fields(cls)), section))

    def __post_init__(self) -> None:
        for name in ("resize_scale", "lr_steps"):  # JSON arrays -> tuples: the protocol stays immutable
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        choices = (("dataset", DATASETS), ("head", HEADS), ("head_input", STAGES[2:]))
        for name, allowed in choices:
            if getattr(self, name) not in allowed:
                raise UserError(f"protocol {name} must be one of {list(allowed)}, got {getattr(self, name)!r}.")
        for name in ("auxiliary_head", "frozen_backbone", "align_corners", "train_aug"):
            if not isinstance(getattr(self, name), bool):
                raise UserError(f"protocol {name} must be true or false, got {getattr(self, name)!r}.")
        for name, minimum in (("max_iters", 1), ("batch_size", 1), ("checkpoint_interval", 1), ("crop_size", 32)):
            if not _is_int(getattr(self, name), minimum):
                raise UserError(f"protocol {name} must be an integer >= {minimum}, got {getattr(self, name)!r}.")
        if self.eval_images is not None and not _is_int(self.eval_images, 1):
            raise UserError(f"protocol eval_images must be null (the whole val split) or an integer >= 1, "
                            f"got {self.eval_images!r}.")
        lr = self.base_lr
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (math.isfinite(lr) and lr > 0):
            raise UserError(f"protocol base_lr must be a positive number, got {lr!r}.")
        scale = self.resize_scale
        if not (isinstance(scale, tuple) and len(scale) == 2 and all(_is_int(v, 1) for v in scale)):
            raise UserError(f"protocol resize_scale must be [long, short], two positive integers, got {scale!r}.")
        self._check_schedule()
        self._check_combinations()

    def _check_schedule(self) -> None:
        steps = self.lr_steps
        if not (isinstance(steps, tuple) and all(_is_int(step, 1) for step in steps)
                and list(steps) == sorted(set(steps)) and all(step < self.max_iters for step in steps)):
            raise UserError(
                f"protocol lr_steps must be [] (PolyLR) or increasing iterations below max_iters "
                f"{self.max_iters}, got {steps!r}."
            )
        stride = self.slide_stride
        if stride is not None and not (_is_int(stride, 1) and stride <= self.crop_size):
            raise UserError(
                f"protocol slide_stride must be null (whole-image test) or an integer in [1, crop_size "
                f"{self.crop_size}], got {stride!r}."
            )

    def _check_combinations(self) -> None:
        if self.head == "fcn" and self.head_input != "layer4":
            raise UserError("protocol head 'fcn' reads layer4 (mmseg fcn_r50-d8); set head_input to \"layer4\".")
        if self.train_aug and self.dataset != "voc":
            raise UserError(f"protocol train_aug adds VOC's SBD masks; set it to false for dataset {self.dataset!r}.")
        if self.head == "aspp" and self.batch_size < 2:
            # ASPPHead's image-pooling branch normalises a 1x1 map: BatchNorm needs 2+ values per channel.
            raise UserError("protocol head 'aspp' needs batch_size >= 2 (its image-pooling BatchNorm); raise it.")

    @property
    def head_stage(self) -> int:
        """0-based index of `head_input` among the ResNet stages (mmseg's `in_index`)."""
        return STAGES.index(self.head_input)

    def as_dict(self) -> dict[str, Any]:
        """The protocol as JSON values (lists for the tuples), e.g. for provenance."""
        values = asdict(self)
        return {key: list(value) if isinstance(value, tuple) else value for key, value in values.items()}
