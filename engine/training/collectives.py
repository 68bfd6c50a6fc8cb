"""Collectives inside the model, for training on several processes: gathering rows of every
rank (with and without gradient) and batch norm over the global batch on the CPU.

Every function here is the identity, or plain batch norm, in a single process
(``world_size() == 1``); engine.training.distributed starts the process group.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn


def world_size() -> int:
    """Processes training together: 1 unless a process group of several is running."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def rank() -> int:
    return dist.get_rank() if world_size() > 1 else 0


# --- gathering across ranks --------------------------------------------------------------------

class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sends every rank's gradient back to the rank that owns the
    rows: the gradient of a rank's input is the sum over ranks of the gradients of its
    rows of their gathered copies (an all_reduce, supported by every backend)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        ctx.rows = x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad)
        start = dist.get_rank() * ctx.rows
        return grad[start:start + ctx.rows]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Rows of every rank, in rank order: (world x N, ...) from (N, ...); differentiable.
    ``x`` itself when alone."""
    if world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


@torch.no_grad()
def gather(x: torch.Tensor) -> torch.Tensor:
    """Rows of every rank, in rank order, without gradient; ``x`` itself when alone."""
    if world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


# --- synchronised batch norm -------------------------------------------------------------------

def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    dist.all_reduce(t)
    return t


class _GlobalBatchNorm(torch.autograd.Function):
    """Batch norm of each process's rows with the statistics of every process's rows, and
    its gradient, in the form torch's SyncBatchNorm uses: with g = dL/dy over all N rows,
    dL/dx = w / sigma * (g - mean(g) - x_hat * mean(g * x_hat)), the means taken over the
    global batch (two sums per channel, summed over the processes). Sums accumulate in
    float64, as torch's CPU batch norm does: the gradient subtracts nearly equal terms, and
    float32 sums lose whole percent of it (measured on a ResNet-18 here)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor | None,  # type: ignore[override]
                bias: torch.Tensor | None, eps: float
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = float(x.numel() // x.shape[1])
        sums = _all_reduce_sum(torch.cat([x.sum(dims, dtype=torch.float64),
                                          torch.tensor([count], dtype=torch.float64)]))
        n = float(sums[-1])
        mean = sums[:-1] / n  # (C,) float64
        xmu = x - mean.to(x.dtype).view(shape)
        var = _all_reduce_sum(xmu.square().sum(dims, dtype=torch.float64)) / n  # biased
        invstd = torch.rsqrt(var + eps)
        x_hat = xmu * invstd.to(x.dtype).view(shape)
        y = x_hat
        if weight is not None:
            y = torch.addcmul(bias.view(shape), x_hat, weight.view(shape))  # type: ignore[union-attr]
        ctx.save_for_backward(x_hat, invstd, weight)
        ctx.n, ctx.dims, ctx.shape = n, dims, shape
        unbiased = var * (n / max(n - 1.0, 1.0))  # for the running statistics, as BN
        ctx.mark_non_differentiable(mean, unbiased)
        return y, mean, unbiased

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor, *_: Any  # type: ignore[override]
                 ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, None]:
        x_hat, invstd, weight = ctx.saved_tensors
        dims, shape = ctx.dims, ctx.shape
        sum_dy = grad.sum(dims, dtype=torch.float64)
        sum_dy_xhat = (grad * x_hat).sum(dims, dtype=torch.float64)
        # This process's share of dL/dw and dL/db (DDP sums the processes' shares).
        grad_weight = sum_dy_xhat.to(grad.dtype) if weight is not None else None
        grad_bias = sum_dy.to(grad.dtype) if weight is not None else None
        means = _all_reduce_sum(torch.cat([sum_dy, sum_dy_xhat])) / ctx.n
        mean_dy, mean_dy_xhat = means.chunk(2)
        scale = invstd if weight is None else invstd * weight.double()
        grad_x = (grad - mean_dy.to(grad.dtype).view(shape)
                  - x_hat * mean_dy_xhat.to(grad.dtype).view(shape)) * scale.to(
                      grad.dtype).view(shape)
        return grad_x, grad_weight, grad_bias, None


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Synchronised batch norm on the CPU (gloo), where torch.nn.SyncBatchNorm has no
    kernels (and DDP refuses it on CPU modules).

    In training with several processes the statistics are those of the global batch, every
    process's rows together, as one device would compute them (see _GlobalBatchNorm).
    Otherwise it is plain batch norm. The parameters and buffers are BatchNorm's, so a
    checkpoint loads into the plain model.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or world_size() == 1:
            return super().forward(input)
        self._check_input_dim(input)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                momentum = 1.0 / float(self.num_batches_tracked.item())
        x = input.float() if input.dtype in (torch.float16, torch.bfloat16) else input
        weight = self.weight if self.affine else None
        bias = self.bias if self.affine else None
        y, mean, unbiased = _GlobalBatchNorm.apply(x, weight, bias, self.eps)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.running_mean.mul_(1 - momentum).add_(mean.to(self.running_mean.dtype),
                                                          alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(unbiased.to(self.running_var.dtype),
                                                         alpha=momentum)
        return y.to(input.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm*d in ``module`` made synchronised across the processes, keeping its
    parameters and buffers: torch.nn.SyncBatchNorm on GPUs, :class:`CpuSyncBatchNorm` on
    the CPU."""
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
            module, CpuSyncBatchNorm):
        out = CpuSyncBatchNorm(module.num_features, module.eps, module.momentum,
                               module.affine, module.track_running_stats)
        if module.affine:
            out.weight = module.weight
            out.bias = module.bias
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, convert_sync_batchnorm(child, device))
    return out
