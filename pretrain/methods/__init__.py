"""Pretraining methods, registered by name; each file holds only what makes its method different."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from core.errors import UserError

METHODS: dict[str, type[nn.Module]] = {}


def register(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    def add(cls: type[nn.Module]) -> type[nn.Module]:
        METHODS[name] = cls
        return cls

    return add


def build_method(name: str, arch: str, cfg: dict[str, Any]) -> nn.Module:
    """The method `name` with an `arch` backbone; `cfg` is the config's `pretrain` section."""
    if name not in METHODS:
        raise UserError(f"unknown pretraining method '{name}'; registered: {', '.join(sorted(METHODS))}")
    return METHODS[name](arch, cfg)


# Importing the method modules fills the registry.
from pretrain.methods import densecl, mocov2  # noqa: E402,F401
