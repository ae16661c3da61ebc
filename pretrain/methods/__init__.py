"""Pretraining methods, registered by name; each file holds only what makes its method different.

The contract the training loop relies on (`PretrainMethod`):
- `__init__(arch, cfg)`: `cfg` is the run's whole `pretrain` config (method overrides already
  merged in); a method reads its own section, e.g. `cfg["byol"]`.
- the online encoder is the attribute `backbone` (a `ResNetTrunk`): export writes `backbone.*`.
- `view_configs(cfg)`: the two views' augmentations (default: MoCo v2's, twice).
- `make_sample(source, gen, cfg)`: one training sample as a dict of tensors, built in the
  data-loader workers (default: two views and their geometry, `view1, view2, geom1, geom2`).
  Region-level methods override it to carry boxes, masks or pixel samples; `source.record` is
  the image's record of the prepare-stage store named by `runs.METHOD_PREPARED` (proposals or
  region trees).
- `forward(**batch, iteration, total)` takes the collated sample dict as keyword arguments and
  returns a dict whose "loss" is back-propagated; other entries are detached components, logged
  per iteration. `geom*` are the views' recorded geometry ([B, 5], see `pretrain.views.make_view`);
  `iteration` counts from 0 to `total` - 1 (for warm-ups and momentum schedules). Momentum
  updates happen inside `forward`.
- a dense embedding head that evaluations read besides the backbone (hierarchical grouping's
  hypercolumn) is the attribute named in `runs.METHOD_EMBEDDING`; export writes it to embedding.pth.
- `unused_parameters`: True when some trainable parameters get no gradient (e.g. a backbone stage the
  loss never reaches); DDP then searches each step's graph for them (find_unused_parameters).
- Under DDP (`pretrain.distributed`) `forward` sees this process's slice of the global batch; a step
  equals the single-process one when the losses are means over the slice's samples and everything
  shared across samples (BatchNorm, queues) spans all processes.
"""

from __future__ import annotations

import abc
import importlib
import pkgutil
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from core.errors import UserError
from pretrain.data import SampleSource, two_views
from pretrain.views import ViewConfig


class PretrainMethod(nn.Module, abc.ABC):
    unused_parameters: ClassVar[bool] = False

    @classmethod
    def view_configs(cls, cfg: dict[str, Any]) -> tuple[ViewConfig, ViewConfig]:
        view = ViewConfig(size=cfg["image_size"])
        return view, view

    @classmethod
    def min_side(cls, cfg: dict[str, Any]) -> int:
        """Pixels per side a sample needs from the decoder: crops cover >= ~45 % of a side (scale >= 0.2),
        so 2x the largest view keeps them at full detail."""
        return 2 * max(view.size for view in cls.view_configs(cfg))

    @classmethod
    def make_sample(cls, source: SampleSource, gen: torch.Generator, cfg: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Two augmented views of the image and their geometry."""
        return two_views(source.image, cls.view_configs(cfg), gen)

    @abc.abstractmethod
    def forward(self, view1: torch.Tensor, view2: torch.Tensor, geom1: torch.Tensor, geom2: torch.Tensor,
                iteration: int, total: int) -> dict[str, torch.Tensor]:
        """The losses of one batch (see the module docstring); region methods take their own sample keys."""


METHODS: dict[str, type[PretrainMethod]] = {}


def register(name: str) -> Callable[[type[PretrainMethod]], type[PretrainMethod]]:
    def add(cls: type[PretrainMethod]) -> type[PretrainMethod]:
        METHODS[name] = cls
        return cls

    return add


def method_class(name: str) -> type[PretrainMethod]:
    if name not in METHODS:
        raise UserError(f"unknown pretraining method '{name}'; registered: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def build_method(name: str, arch: str, cfg: dict[str, Any]) -> PretrainMethod:
    """The method `name` with an `arch` backbone; `cfg` is the run's `pretrain` config."""
    return method_class(name)(arch, cfg)


def _import_methods() -> None:
    """Importing every module of this package fills the registry: a new method is one new file."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


_import_methods()
