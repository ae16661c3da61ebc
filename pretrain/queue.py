"""MoCo's queue of negative keys."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from pretrain.distributed import concat_all_gather


class FeatureQueue(nn.Module):
    """A FIFO of L2-normalised keys, kept as a buffer so it is saved and restored with the model."""

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def push(self, keys: torch.Tensor) -> None:
        """Replace the oldest entries with `keys` [B, dim], wrapping around the end. Under DDP every rank
        pushes the keys of all ranks in rank order (each rank's are its slice of the global batch), so the
        queues stay equal to each other and to the single-process queue."""
        keys = concat_all_gather(keys)
        size = self.keys.shape[0]
        idx = (self.ptr + torch.arange(keys.shape[0], device=keys.device)) % size
        self.keys[idx] = keys.detach()
        self.ptr.copy_((self.ptr + keys.shape[0]) % size)
