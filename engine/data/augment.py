"""Batched augmentations with independent random parameters per image and per view.

``make_pairs`` turns a uint8 batch into the two views of every image (the positive pairs of
SimCLR and MoCo v2); the trainer calls it on the training device and the app's preview calls
exactly it, so what a person sees is what the trainer gets.

The pipeline is SimCLR's (Chen et al. 2020, "A Simple Framework for Contrastive Learning of
Visual Representations", appendix A), which MoCo v2 (Chen et al. 2020, "Improved Baselines
with Momentum Contrastive Learning") adopts with a milder jitter and crop, in torchvision's
semantics:

    random resized crop -> horizontal flip -> colour jitter (random order per view)
    -> grayscale -> Gaussian blur -> solarisation -> normalisation

torchvision.transforms.v2 draws one set of parameters per call, i.e. per batch; here every
operation takes a tensor of per-sample parameters instead, and the colour functions
match torchvision.transforms.v2.functional sample by sample.

The parts: :mod:`engine.data.view_params` draws every view's random parameters on the CPU
(a seed gives the same parameters on the CPU and on a GPU), :mod:`engine.data.view_ops`
holds the per-sample operations, and this module runs the pipeline. Which samples an
operation touches is decided on the CPU and applied with index operations on the device, so
the device never has to report back to the host (no synchronisation).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from engine.config.train_config import AugmentConfig
from engine.data.view_ops import (
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    crop_resize,
    gaussian_blur,
    gaussian_kernels,
    gray3,
    grayscale,
    hflip,
    solarize,
    to_device,
)
from engine.data.view_params import (
    ViewParams,
    blur_kernel_size,
    resolved_blur_p,
    sample_crop_boxes,
    sample_view_params,
)

__all__ = [
    "ViewParams", "adjust_brightness", "adjust_contrast", "adjust_hue", "adjust_saturation",
    "blur_kernel_size", "crop_resize", "denormalize", "gaussian_blur", "gaussian_kernels",
    "grayscale", "make_pairs", "make_views", "resolved_blur_p", "sample_crop_boxes",
    "sample_view_params", "solarize", "to_uint8_hwc"]

# Views are made in chunks of about this many float32 values. On the CPU a chunk (with the
# temporaries of the colour operations) then stays in the last-level cache instead of
# streaming through memory: at 224 px the whole pipeline runs 1.1x (2 threads) to 1.3x
# (1 thread) faster than in one chunk (2-core EPYC, 32 MB L3). On a GPU the chunk only
# bounds the temporaries' memory (N=512 pairs at 224 px: 3 chunks).
_CPU_CHUNK_VALUES = 2**22  # 16 MB: about 24 views at 224 px, 1365 at 32 px
_DEVICE_CHUNK_VALUES = 2**26  # 256 MB: about 445 views at 224 px

Op = Callable[..., torch.Tensor]


# --- the pipeline ----------------------------------------------------------------------------

def _apply(x: torch.Tensor, mask: torch.Tensor, op: Op, *params: torch.Tensor) -> torch.Tensor:
    """x[mask] = op(x[mask], *(p[mask] for p in params)), with a CPU mask; x is updated in
    place where only some samples are chosen, and the result is returned."""
    if not mask.any():
        return x
    if mask.all():
        return op(x, *params)
    index = mask.nonzero().squeeze(1)  # CPU: the device need not report which samples
    on_device = to_device(index, x.device)
    # x[i] rather than index_select: the latter is many times slower on the CPU (PyTorch 2.x).
    x.index_copy_(0, on_device, op(x[on_device], *(p[index] for p in params)))
    return x


def _colour_jitter(x: torch.Tensor, p: ViewParams, cfg: AugmentConfig) -> torch.Tensor:
    """ColorJitter with per-view factors and a per-view order of its four operations.

    At each of the four positions in the order, the views whose op at that position is
    brightness (contrast, ...) get it; ops whose amount is 0 are skipped, as ColorJitter does.
    """
    s = cfg.jitter_strength
    ops = ((adjust_brightness, cfg.jitter_brightness), (adjust_contrast, cfg.jitter_contrast),
           (adjust_saturation, cfg.jitter_saturation), (adjust_hue, cfg.jitter_hue))
    for position in range(4):
        for op_index, (op, amount) in enumerate(ops):
            if amount * s > 0:
                chosen = p.jitter & (p.order[:, position] == op_index)
                x = _apply(x, chosen, op, p.factors[:, op_index])
    return x


def _augment(x: torch.Tensor, p: ViewParams, cfg: AugmentConfig) -> torch.Tensor:
    """Steps 2 to 6 on (M, 3, S, S) float views in [0, 1]; returns views in [0, 1]."""
    x = _apply(x, p.flip, hflip)
    x = _colour_jitter(x, p, cfg)
    x = _apply(x, p.gray, gray3)
    kernel = blur_kernel_size(cfg, x.shape[-1])
    if kernel // 2 < x.shape[-1]:  # reflect padding needs the image wider than the pad
        # Clamped: a normalised kernel can overshoot 1 by a rounding error.
        x = _apply(x, p.blur, lambda v, sg: gaussian_blur(v, sg, kernel).clamp_(0.0, 1.0),
                   p.sigmas)
    threshold = cfg.solarize_threshold
    return _apply(x, p.solarize, lambda v: solarize(v, threshold))


def _normalize_(x: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    mean = to_device(torch.tensor(cfg.normalize_mean).view(1, 3, 1, 1), x.device)
    std = to_device(torch.tensor(cfg.normalize_std).view(1, 3, 1, 1), x.device)
    return x.sub_(mean).div_(std)


def _check(images: torch.Tensor, size: int) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be uint8 (N, 3, H, W); got {images.dtype} "
                         f"{tuple(images.shape)}")
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer; got {size!r}")


def _make_chunk(images: torch.Tensor, views: torch.Tensor, p: ViewParams, cfg: AugmentConfig,
                size: int, normalize: bool) -> torch.Tensor:
    """The views of a chunk of source images: ``views`` (M',) holds each view's source index
    into ``images`` (uint8 (B, 3, H, W)), ``p`` their parameters -> (M', 3, size, size)."""
    # roi_align wants contiguous float input: convert (and undo channels_last) once per
    # source image, not once per view.
    source = images.to(torch.float32, memory_format=torch.contiguous_format)
    x = crop_resize(source, p.boxes, views, size).div_(255.0).clamp_(0.0, 1.0)
    x = _augment(x, p, cfg)
    return _normalize_(x, cfg) if normalize else x


def _make(images: torch.Tensor, repeats: int, cfg: AugmentConfig, size: int,
          generator: torch.Generator, normalize: bool, global_batch: int | None = None,
          offset: int = 0) -> torch.Tensor:
    """``repeats`` views of every image: (repeats * N, 3, size, size), view r * N + i of
    image i. The views are made in chunks of source images (see _CPU_CHUNK_VALUES).

    ``global_batch``: the images are rows ``offset`` to ``offset + N`` of a batch of that
    many (one process's share); parameters are drawn for the whole batch, so the generator
    advances alike in every process, and those rows' parameters are used.
    """
    _check(images, size)
    n, _, height, width = images.shape
    total = n if global_batch is None else global_batch
    if not 0 <= offset <= total - n:
        raise ValueError(f"rows {offset}..{offset + n} are not inside a batch of {total}")
    # View r * total + i is view r of image i: views from ``total`` on are second views.
    params = sample_view_params(repeats * total, height, width, cfg, size, generator,
                                second=total if repeats == 2 else None)
    if total != n:
        own = torch.arange(offset, offset + n)
        params = params.select((torch.arange(repeats).view(-1, 1) * total + own).flatten())
    budget = _CPU_CHUNK_VALUES if images.device.type == "cpu" else _DEVICE_CHUNK_VALUES
    per_chunk = max(1, budget // (repeats * 3 * size * size))  # source images per chunk
    if per_chunk >= n:  # one chunk: every view, already in order
        sources = torch.arange(n).repeat(repeats)
        return _make_chunk(images, sources, params, cfg, size, normalize)
    out = torch.empty(repeats, n, 3, size, size, device=images.device)
    for start in range(0, n, per_chunk):
        stop = min(n, start + per_chunk)
        chunk = torch.arange(stop - start).repeat(repeats)  # sources, relative to start
        views = chunk + start + torch.arange(repeats).repeat_interleave(stop - start) * n
        x = _make_chunk(images[start:stop], chunk, params.select(views), cfg, size, normalize)
        out[:, start:stop] = x.view(repeats, stop - start, 3, size, size)
    return out.view(repeats * n, 3, size, size)


def make_views(images: torch.Tensor, cfg: AugmentConfig, size: int,
               generator: torch.Generator, *, normalize: bool = True) -> torch.Tensor:
    """One random view of every image, SimCLR / MoCo v2 style (see the module docstring).

    ``images`` is uint8 (N, 3, H, W), possibly channels_last-strided, on any device; the
    result is float32 (N, 3, size, size) on the same device, normalised with cfg's
    mean and std, or in [0, 1] with ``normalize=False``. Random parameters come from the CPU
    ``generator``; the same generator state, images and cfg always give the same views.
    """
    return _make(images, 1, cfg, size, generator, normalize)


def make_pairs(images: torch.Tensor, cfg: AugmentConfig, size: int, generator: torch.Generator,
               *, normalize: bool = True, global_batch: int | None = None,
               offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The positive pairs of SimCLR / MoCo v2 / BYOL: two independent views of every image.

    One pass over the batch repeated twice (2N views, as make_views would make of
    ``images.repeat(2, 1, 1, 1)``, without copying the images), then split: views[:N] and
    views[N:], each float32 (N, 3, size, size).

    With several processes, ``images`` is rows ``offset`` to ``offset + N`` of a global
    batch of ``global_batch`` images, and the views are exactly those rows of the views a
    single process would make of the whole batch from the same generator state.

    The second views (``views[N:]``) blur and solarise with ``cfg.blur_p2`` and
    ``cfg.solarize_p2`` where those are set (BYOL's asymmetric pair); the random draws are
    the same whatever they are, so the first views never change with them.
    """
    n = images.shape[0]
    views = _make(images, 2, cfg, size, generator, normalize, global_batch, offset)
    return views[:n], views[n:]


def denormalize(views: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """Normalised views back to [0, 1]: x * std + mean, clamped (for display)."""
    mean = to_device(torch.tensor(cfg.normalize_mean).view(1, 3, 1, 1), views.device)
    std = to_device(torch.tensor(cfg.normalize_std).view(1, 3, 1, 1), views.device)
    return (views * std + mean).clamp_(0.0, 1.0)


def to_uint8_hwc(views_01: torch.Tensor) -> np.ndarray:
    """Views in [0, 1], (N, 3, H, W) -> uint8 numpy (N, H, W, 3), rounded, for display."""
    x = views_01.detach().clamp(0.0, 1.0).mul(255.0).round_().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()
