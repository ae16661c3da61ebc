"""BatchNorm over the global batch of all processes: torch's SyncBatchNorm on GPU, our own on CPU.

torch 2.14 has no CPU SyncBatchNorm: `nn.SyncBatchNorm` raises on CPU tensors (its kernels
`batch_norm_stats` and friends exist only for accelerators) and DDP refuses it in a CPU module. Yet
CPU runs under gloo are what the tests and laptops have. `CpuSyncBatchNorm` computes the same
statistics from differentiable all-reduces, so autograd gives the gradient of the summed loss of all
ranks, as torch's kernels do.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

_PLAIN_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class _AllReduceSum(torch.autograd.Function):
    """The sum over ranks, differentiable: the gradient of a sum over ranks is the sum of the ranks' gradients.
    (torch 2.14 deprecates torch.distributed.nn.functional.all_reduce, for a private module.)"""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        total = x.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        return _AllReduceSum.apply(grad)


class CpuSyncBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics span all ranks of the default process group (gloo, CPU)."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized()):
            return super().forward(input)
        self._check_input_dim(input)
        dims = [0, *range(2, input.ndim)]
        shape = [1, -1] + [1] * (input.ndim - 2)
        # Two passes (mean, then the centred squares) as BatchNorm's CPU kernel: E[x^2] - E[x]^2 cancels badly.
        count = torch.full((1,), input.numel() // input.shape[1], dtype=input.dtype)
        sums = _AllReduceSum.apply(torch.cat([input.sum(dims), count]))
        n = sums[-1]
        mean = sums[:-1] / n
        centred = input - mean.reshape(shape)
        var = _AllReduceSum.apply(centred.square().sum(dims)) / n
        out = centred * torch.rsqrt(var + self.eps).reshape(shape)
        if self.affine:
            out = out * self.weight.reshape(shape) + self.bias.reshape(shape)
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach() * n / (n - 1))  # unbiased, as BatchNorm
        return out

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        self.num_batches_tracked.add_(1)
        factor = 1.0 / self.num_batches_tracked.item() if self.momentum is None else self.momentum
        self.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
        self.running_var.mul_(1 - factor).add_(unbiased_var, alpha=factor)


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """`module` with every BatchNorm*d synchronised across ranks, parameters and buffers kept (the
    optimizer and the momentum pairs hold them): torch's SyncBatchNorm on GPU, `CpuSyncBatchNorm` on CPU."""
    if any(param.is_cuda for param in module.parameters()):
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for child in module.modules():
        if type(child) in _PLAIN_BATCHNORMS:
            # Same base class and state, other forward: re-classing keeps the very tensor objects.
            child.__class__ = CpuSyncBatchNorm
    return module
