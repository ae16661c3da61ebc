"""Checks shared by the dense-evaluation protocol settings (one clear UserError per bad value)."""

from __future__ import annotations

import math
from typing import Any

from core.errors import UserError
from finetune.dense_eval.features import check_layer


def require_int(name: str, value: Any, minimum: int) -> None:
    # bool is an int subclass: reject it explicitly.
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"protocol {name} must be an integer >= {minimum}, got {value!r}.")


def require_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise UserError(f"protocol {name} must be true or false, got {value!r}.")


def require_number(name: str, value: Any, *, positive: bool) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        raise UserError(f"protocol {name} must be a {'positive' if positive else 'non-negative'} number, "
                        f"got {value!r}.")


def check_image_settings(max_side: Any, layer: Any, stride: Any) -> None:
    """max_side (an integer >= 32, or null for the original size), the feature layer and its stride."""
    if max_side is not None:
        require_int("max_side", max_side, 32)
    require_int("stride", stride, 1)
    check_layer(layer, stride)
