"""The settings of `linear-eval` and `few-shot` (config finetune.linear_eval / finetune.few_shot, minus
threads), parsed from --protocol-json and checked, each bad value a UserError naming the key."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from core.errors import UserError
from finetune.common import parse_protocol_json


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # bool is an int subclass


def _check_int(name: str, value: Any, minimum: int) -> None:
    if not _is_int(value) or value < minimum:
        raise UserError(f"protocol {name} must be an integer >= {minimum}, got {value!r}.")


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise UserError(f"protocol {name} must be a positive number, got {value!r}.")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise UserError(f"protocol {name} must be true or false, got {value!r}.")


def _check_resize(value: Any) -> None:
    # torchvision Resize semantics: an int is the shorter side, [height, width] an exact size.
    sizes = value if isinstance(value, list) and len(value) == 2 else [value]
    if not all(_is_int(size) and size >= 1 for size in sizes):
        raise UserError(f"protocol resize must be a positive integer (shorter side) or [height, width], got {value!r}.")


def _from_json(cls: type, text: str, section: str) -> Any:
    return cls(**parse_protocol_json(text, frozenset(field.name for field in fields(cls)), section))


@dataclass(frozen=True)
class LinearProtocol:
    """Linear evaluation: a linear layer on frozen, globally average-pooled layer4 features."""

    epochs: int
    batch_size: int  # of the classifier's steps and of feature extraction
    lr: float  # Adam, betas (0.5, 0.999) (Wang & Isola's linear_eval.py)
    lr_decay_epochs: list[int]  # MultiStepLR milestones
    lr_decay_rate: float  # MultiStepLR gamma
    augment: bool  # RandomResizedCrop(crop, scale (0.08, 1)) + flip per step; False: cached centre crops
    resize: int | list[int]  # test (and augment=False train) images: resize, then centre crop
    crop: int
    max_per_class: int | None  # the first N images of each class per split (None: all)
    workers: int  # data-loader processes (0: the main process)

    @classmethod
    def from_json(cls, text: str) -> LinearProtocol:
        return _from_json(cls, text, "linear_eval")

    def __post_init__(self) -> None:
        for name, minimum in (("epochs", 1), ("batch_size", 1), ("crop", 1), ("workers", 0)):
            _check_int(name, getattr(self, name), minimum)
        _check_positive("lr", self.lr)
        _check_positive("lr_decay_rate", self.lr_decay_rate)
        if not isinstance(self.lr_decay_epochs, list):
            raise UserError(f"protocol lr_decay_epochs must be a list of epochs, got {self.lr_decay_epochs!r}.")
        for epoch in self.lr_decay_epochs:
            _check_int("lr_decay_epochs[]", epoch, 1)
        _check_bool("augment", self.augment)
        _check_resize(self.resize)
        if self.max_per_class is not None:
            _check_int("max_per_class", self.max_per_class, 1)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FewShotProtocol:
    """N-way K-shot episodes, logistic regression on frozen pooled features."""

    split: str  # the split episodes are drawn from ('.' for an imagefolder root of class folders)
    ways: int
    shots: int
    queries: int  # per class
    episodes: int
    resize: int | list[int]
    crop: int
    l2_normalize: bool  # features divided by their L2 norm before the classifier
    batch_size: int  # of feature extraction
    workers: int

    @classmethod
    def from_json(cls, text: str) -> FewShotProtocol:
        return _from_json(cls, text, "few_shot")

    def __post_init__(self) -> None:
        if not isinstance(self.split, str) or not self.split:
            raise UserError(f"protocol split must be a folder name (or '.'), got {self.split!r}.")
        for name, minimum in (("ways", 2), ("shots", 1), ("queries", 1), ("episodes", 1), ("crop", 1),
                              ("batch_size", 1), ("workers", 0)):
            _check_int(name, getattr(self, name), minimum)
        _check_resize(self.resize)
        _check_bool("l2_normalize", self.l2_normalize)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
