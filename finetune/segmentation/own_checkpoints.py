"""What mmengine's own checkpoints pickle besides tensors, allow-listed for `torch.load(weights_only=True)`.

mmengine 0.10.7 saves the Runner's message hub, whose HistoryBuffers hold numpy arrays and a table of their
statistics methods pickled as `getattr(HistoryBuffer, name)` (open-mmlab/mmengine#1655: its resume fails under
torch >= 2.6, whose `torch.load` defaults to weights_only). Allowing `getattr` itself would let a checkpoint
call any attribute of any allowed class; `getattr` here resolves only those four methods.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer

HISTORY_BUFFER_STATISTICS = ("min", "max", "current", "mean")  # mmengine's own; densebench registers none


def _history_buffer_statistic(owner: object, name: str) -> Callable:
    if owner is not HistoryBuffer or name not in HISTORY_BUFFER_STATISTICS:
        raise pickle.UnpicklingError(f"an mmengine checkpoint may name HistoryBuffer's {HISTORY_BUFFER_STATISTICS} "
                                     f"only, not {getattr(owner, '__qualname__', owner)!r}.{name}")
    return getattr(HistoryBuffer, name)


def _numpy_globals() -> list:
    multiarray = np._core.multiarray  # numpy 2 (all envs pin 2.4.6): the module numpy arrays pickle under
    dtypes = [getattr(np.dtypes, name) for name in np.dtypes.__all__]
    return [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype, *dtypes]


@contextmanager
def mmengine_checkpoint_globals() -> Iterator[None]:
    """Within it, `torch.load` (weights_only, torch's default) reads mmengine's resume checkpoints."""
    with torch.serialization.safe_globals([HistoryBuffer, *_numpy_globals(),
                                           (_history_buffer_statistic, "builtins.getattr")]):
        yield
