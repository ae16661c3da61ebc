"""Let mmsegmentation import on mmcv-lite (no compiled ops) for CPU smoke runs.

mmseg 1.2.2 imports a few `mmcv.ops` names at module level without a guard (`point_sample` in
models/utils/point_sample.py, utils/mask_classification.py and decode_heads/san_head.py;
`sigmoid_focal_loss` in losses/focal_loss.py), so `import mmseg.models` fails when mmcv's
compiled extension `mmcv._ext` is missing. When - and only when - `import mmcv.ops` fails, a
stand-in module is installed as `mmcv.ops`: it provides a pure-torch `point_sample` and a
`sigmoid_focal_loss` that mmseg only calls on CUDA tensors (it has its own CPU fallback). Every
other op raises `MissingMmcvOpError`, which names the fix. A full mmcv install (with CUDA ops, as
on the GPU cluster) is used untouched.
"""

from __future__ import annotations

import importlib
import logging
import sys
import types
from typing import Any, NoReturn

import torch
import torch.nn.functional as F

from core.errors import UserError

_LOG = logging.getLogger(__name__)
_FIX = "install full mmcv 2.1.0 with its compiled ops as described in README section 'GPU cluster install'"


class MissingMmcvOpError(UserError, ModuleNotFoundError):
    """An `mmcv.ops` name that needs mmcv's compiled extension, which mmcv-lite lacks.

    It is a ModuleNotFoundError so mmseg's and mmcv's guarded imports
    (`try: from mmcv.ops import X except ModuleNotFoundError`) fall back as they would without
    the shim, and a UserError so the command line prints it as one clear line.
    """


def point_sample(input: torch.Tensor, points: torch.Tensor, align_corners: bool = False, **kwargs: Any) -> torch.Tensor:
    """Bilinearly sample `input` (N, C, H, W) at `points` given in [0, 1] image coordinates.

    Same contract as `mmcv.ops.point_sample`: points are (x, y) pairs shaped (N, P, 2), giving
    (N, C, P), or (N, Hg, Wg, 2), giving (N, C, Hg, Wg); extra keyword arguments go to
    `F.grid_sample`.
    """
    is_point_list = points.dim() == 3
    if is_point_list:
        points = points.unsqueeze(2)  # grid_sample wants a 2-D grid of points
    grid = points * 2.0 - 1.0  # grid_sample's coordinates span [-1, 1]
    output = F.grid_sample(input, grid, align_corners=align_corners, **kwargs)
    return output.squeeze(3) if is_point_list else output


def _missing_op(name: str) -> MissingMmcvOpError:
    return MissingMmcvOpError(f"mmcv.ops.{name} needs mmcv's compiled ops, but this environment has mmcv-lite; {_FIX}")


def sigmoid_focal_loss(*args: Any, **kwargs: Any) -> NoReturn:
    """Placeholder: mmseg's FocalLoss calls mmcv's kernel only on CUDA tensors."""
    raise _missing_op("sigmoid_focal_loss")


class _MmcvOpsShim(types.ModuleType):
    """The stand-in `mmcv.ops`: known pure-torch ops, a clear error for everything else."""

    def __getattr__(self, name: str) -> NoReturn:
        if name.startswith("__"):  # introspection (copy, pickle, inspect) must see a plain miss
            raise AttributeError(name)
        raise _missing_op(name)


def ensure_mmcv_ops() -> bool:
    """Make `import mmcv.ops` succeed; return True when the pure-torch stand-in is in use.

    Call before importing mmseg. Idempotent.
    """
    if isinstance(sys.modules.get("mmcv.ops"), _MmcvOpsShim):
        return True
    mmcv = importlib.import_module("mmcv")
    try:
        importlib.import_module("mmcv.ops")
    except ImportError as err:  # mmcv-lite: "No module named 'mmcv._ext'"
        shim = _MmcvOpsShim("mmcv.ops", __doc__)
        shim.point_sample = point_sample
        shim.sigmoid_focal_loss = sigmoid_focal_loss
        sys.modules["mmcv.ops"] = shim
        mmcv.ops = shim
        _LOG.warning("mmcv.ops is unusable (%s); using densebench's pure-torch point_sample instead", err)
        return True
    return False
