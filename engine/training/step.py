"""One training step: forward both views, backward, optimiser step.

The one copy of it: train(), ``contrastive-engine bench`` and the benchmarks all call
:func:`train_step`.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from engine.methods.base import BatchInfo, StepOutput


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The forward pass's autocast: none for fp32, bf16 or fp16 on ``device`` otherwise."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """Loss scaling for fp16 (whose small gradients would underflow); a no-op otherwise."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, x1: torch.Tensor, x2: torch.Tensor, *,
               device: torch.device, precision: str, channels_last: bool,
               batch: BatchInfo | None = None) -> StepOutput:
    """One optimiser step of ``model`` (a method module, maybe wrapped in DDP or compiled)
    on the views ``x1`` and ``x2`` (float (N, 3, S, S)) of the images ``batch`` describes
    (their cache rows and labels, for the methods that read them). Returns the step's
    output as device tensors: nothing here waits for the device."""
    if channels_last:
        x1 = x1.contiguous(memory_format=torch.channels_last)
        x2 = x2.contiguous(memory_format=torch.channels_last)
    with autocast(device, precision):
        out = model(x1, x2, batch)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(out.loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return out
