"""Verifying an export: load the written file back from disk, run it on a batch of images
and compare its outputs with the engine's own encoder (fp32, eval mode).

The tolerance is relative to the size of the outputs: ``tolerance x max(1, largest |output|
of the engine)``, with 1e-4 for the torch formats (the same kernels run both sides) and
1e-3 for ONNX (onnxruntime runs its own kernels). Either catches any wrong weight.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from engine.export.formats import ExportError
from engine.export.loading import load_exported
from engine.models.encoder import Encoder

# Same kernels run the engine and the fp32 torch formats, so they agree almost exactly.
FP32_TOLERANCE = 1e-4
# onnxruntime runs its own convolution and GEMM kernels (other summation orders, other
# blocking), so fp32 rounding differs a little more; 1e-3 still catches any wrong weight.
ONNX_TOLERANCE = 1e-3
VERIFY_SEED = 0
VERIFY_BATCH = 4


def tolerance_of(fmt: str) -> float:
    return ONNX_TOLERANCE if fmt == "onnx" else FP32_TOLERANCE


def verify_batch(images: torch.Tensor | None, size: int) -> torch.Tensor:
    """The images to verify on: ``images`` as a CPU fp32 batch, or by default
    :data:`VERIFY_BATCH` seeded random normalised images of ``size``."""
    if images is None:
        generator = torch.Generator().manual_seed(VERIFY_SEED)
        return torch.randn(VERIFY_BATCH, 3, size, size, generator=generator)
    if (not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3
            or not images.is_floating_point() or images.shape[0] < 1):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
        raise ExportError(
            f"verify_images must be a float (N, 3, H, W) batch of normalised images; got "
            f"{shape}{'' if not isinstance(images, torch.Tensor) else ' ' + str(images.dtype)}")
    return images.detach().to("cpu", torch.float32).contiguous()


def compare(path: Path, model: Encoder, include_head: bool,
            images: torch.Tensor) -> tuple[float, float, str | None]:
    """(max |exported - engine| over h (and z), max(1, max |engine output|), error or None)."""
    with torch.no_grad():
        h, z = model(images)
        expected = [h, z] if include_head else [h]
        try:
            got = load_exported(path)(images)
        except Exception as exc:  # unloadable or unrunnable: a failed check
            return float("nan"), 1.0, f"{type(exc).__name__}: {exc}"
    got_list = list(got) if isinstance(got, (tuple, list)) else [got]
    if len(got_list) != len(expected) or any(
            g.shape != e.shape for g, e in zip(got_list, expected, strict=True)):
        return float("nan"), 1.0, (
            f"outputs have shapes {[tuple(g.shape) for g in got_list]}, expected "
            f"{[tuple(e.shape) for e in expected]}")
    diffs = [float((g.float() - e).abs().max()) for g, e in zip(got_list, expected, strict=True)]
    if any(math.isnan(d) for d in diffs):
        return float("nan"), 1.0, "the export produced NaN outputs"
    diff = max(diffs)
    scale = max(1.0, max(float(e.abs().max()) for e in expected))
    return diff, scale, None


def verify(path: Path, fmt: str, model: Encoder, include_head: bool, images: torch.Tensor,
           caller_images: bool) -> dict[str, Any]:
    """Load ``path`` back, compare it with ``model`` on ``images`` and return the
    metadata's ``verification`` record (``passed``, ``max_abs_diff``, ``tolerance``...)."""
    tolerance = tolerance_of(fmt)
    max_diff, scale, error = compare(path, model, include_head, images)
    limit = tolerance * scale
    return {
        "passed": error is None and max_diff <= limit,
        "max_abs_diff": max_diff if error is None else None,
        "tolerance": limit,
        "tolerance_rule": (f"{tolerance:g} x max(1, largest |output| of the engine); "
                           + ("onnxruntime uses other kernels than PyTorch"
                              if fmt == "onnx" else "fp32, same kernels as PyTorch")),
        "images": (f"{images.shape[0]} caller-supplied images" if caller_images
                   else f"{images.shape[0]} random normalised images (seed {VERIFY_SEED})"),
        "image_shape": list(images.shape[1:]),
        "compared": ["h", "z"] if include_head else ["h"],
        **({"error": error} if error is not None else {}),
    }
