"""Run Detectron2 on today's numpy/Pillow, and without its compiled ops on CPU-only machines.

Detectron2 releases before 0.6 use numpy aliases removed in numpy 1.24 (`np.int`, `np.float`, ...)
and `PIL.Image.LINEAR`, removed in Pillow 10; pure-Python installs (e.g. the `detectron2-cdo`
sdist) also lack the C++ extension `detectron2._C`, which `detectron2.layers` imports eagerly
although a Faster R-CNN C4 never calls it. Every patch here applies only when the thing is
missing, so upstream Detectron2 built with its C++ ops runs untouched.
"""

from __future__ import annotations

import builtins
import importlib.util
import sys
import types
import warnings

import numpy as np
from PIL import Image

from core.errors import UserError

_NUMPY_ALIASES = ("bool", "int", "float", "complex", "object", "str")


class MissingDetectron2OpError(UserError, AttributeError):
    """A `detectron2._C` op used on an install without C++ ops.

    An AttributeError, as `__getattr__` must raise, so `hasattr`/`getattr(..., default)` probes
    fall back; a UserError, so the command line prints it as one line naming the fix.
    """


class _MissingCppOps(types.ModuleType):
    """Stands in for `detectron2._C`: importing it works, using any op fails with the fix."""

    def __getattr__(self, name: str) -> object:
        # Dunder look-ups come from the import machinery and introspection, not from an op call.
        if name.startswith("__"):
            raise AttributeError(name)
        raise MissingDetectron2OpError(
            f"detectron2._C.{name} is a compiled Detectron2 op (rotated boxes, deformable conv, fast COCO eval) "
            "and this Detectron2 install has no C++ ops; install upstream Detectron2 built with its C++ ops "
            '(see README "GPU cluster install").'
        )


def _restore_numpy_aliases() -> None:
    for name in _NUMPY_ALIASES:
        with warnings.catch_warnings():
            # numpy 2 warns when probing `np.object`/`np.str`, which it plans to reintroduce.
            warnings.simplefilter("ignore", FutureWarning)
            present = hasattr(np, name)
        if not present:
            setattr(np, name, getattr(builtins, name))


def _restore_pil_linear() -> None:
    if not hasattr(Image, "LINEAR"):
        Image.LINEAR = Image.BILINEAR  # the alias Pillow 10 removed


def _provide_placeholder_cpp_ops() -> None:
    if "detectron2._C" in sys.modules or importlib.util.find_spec("detectron2._C") is not None:
        return
    placeholder = _MissingCppOps("detectron2._C", "Placeholder for Detectron2's missing C++ ops.")
    sys.modules["detectron2._C"] = placeholder
    sys.modules["detectron2"]._C = placeholder  # find_spec above imported the package


def install() -> None:
    """Apply the patches this environment needs; idempotent, and a no-op on up-to-date installs."""
    if importlib.util.find_spec("detectron2") is None:
        return  # e.g. the mmseg environment, which imports this package only for its CLI
    _restore_numpy_aliases()
    _restore_pil_linear()
    _provide_placeholder_cpp_ops()
