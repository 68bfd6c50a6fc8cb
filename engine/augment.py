"""Batched augmentations with independent random parameters per image and per view.

``make_pairs`` turns a uint8 batch into the two views of every image (the positive pairs);
the trainer calls it on the training device and the app's preview calls exactly it, so what
a person sees is what the trainer gets.

The pipeline is SimCLR's (Chen et al. 2020, appendix A), in torchvision's semantics:
random resized crop -> horizontal flip -> colour jitter (random order) -> grayscale ->
Gaussian blur -> solarisation -> normalisation. torchvision.transforms.v2 would draw one set
of parameters for a whole batch, so each operation here takes per-sample parameters.

Every random number is drawn from a CPU ``torch.Generator``, whatever the device: a seed gives
the same views on the CPU and on a GPU, and the draws are a fixed number per call, whatever
fires. Subsets (for example the samples that get jittered) are chosen on the CPU and applied
with index operations, so the device never has to report back to the host.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from engine.config import AugmentConfig

_GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


def resolved_blur_p(cfg: AugmentConfig, size: int) -> float:
    """The blur probability; automatic: 0.5 above 64 px, 0 at 64 px and below (SimCLR used
    no blur on CIFAR-10, where it hurt)."""
    if cfg.blur_p is not None:
        return cfg.blur_p
    return 0.5 if size > 64 else 0.0


def blur_kernel_size(cfg: AugmentConfig, size: int) -> int:
    """Odd kernel side, about ``blur_kernel_fraction`` of the image side (SimCLR: 10%)."""
    k = int(round(cfg.blur_kernel_fraction * size))
    return max(3, k if k % 2 == 1 else k + 1)


# --- per-sample colour operations (float images in [0, 1], shape (M, 3, H, W)) ---------------

def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(M, 3, H, W) -> (M, 1, H, W), torchvision's luma weights."""
    r, g, b = x.unbind(dim=-3)
    return (r * _GRAY[0] + g * _GRAY[1] + b * _GRAY[2]).unsqueeze(-3)


def _per_sample(f: torch.Tensor) -> torch.Tensor:
    return f.to(torch.float32).view(-1, 1, 1, 1)


def _blend(a: torch.Tensor, b: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    r = _per_sample(ratio)
    return (r * a + (1.0 - r) * b).clamp_(0.0, 1.0)


def adjust_brightness(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    return (x * _per_sample(factors)).clamp_(0.0, 1.0)


def adjust_contrast(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    mean = grayscale(x).mean(dim=(-3, -2, -1), keepdim=True)  # (M, 1, 1, 1)
    return _blend(x, mean, factors)


def adjust_saturation(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    return _blend(x, grayscale(x), factors)


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, _ = x.unbind(dim=-3)
    minc, maxc = torch.aminmax(x, dim=-3)
    eqc = maxc == minc
    span = maxc - minc
    ones = torch.ones_like(maxc)
    s = span / torch.where(eqc, ones, maxc)
    rc, gc, bc = ((maxc.unsqueeze(-3) - x) / torch.where(eqc, ones, span).unsqueeze(-3)).unbind(
        dim=-3)
    max_is_r = maxc == r
    max_is_g = (maxc == g) & ~max_is_r
    max_is_b = ~max_is_r & ~max_is_g
    h = (bc - gc) * max_is_r + (2.0 + rc - bc) * max_is_g + (4.0 + gc - rc) * max_is_b
    h = (h / 6.0 + 1.0).fmod(1.0)
    return torch.stack((h, s, maxc), dim=-3)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(dim=-3)
    h6 = h * 6
    i = torch.floor(h6)
    f = h6 - i
    i = i.to(torch.long).remainder(6)
    p = ((1.0 - s) * v).clamp(0.0, 1.0)
    q = ((1.0 - s * f) * v).clamp(0.0, 1.0)
    t = ((1.0 - s * (1.0 - f)) * v).clamp(0.0, 1.0)
    vpqt = torch.stack((v, p, q, t), dim=-3)  # (M, 4, H, W)
    # For each hue sector i, which of (v, p, q, t) is red, green and blue.
    select = torch.tensor([[0, 2, 1, 1, 3, 0], [3, 0, 0, 2, 1, 1], [1, 1, 3, 0, 0, 2]],
                          device=x.device)
    return vpqt.gather(-3, select[:, i].movedim(0, -3))


def adjust_hue(x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by ``shifts`` (in turns, |shift| <= 0.5), as torchvision does."""
    hsv = _rgb_to_hsv(x)
    h = (hsv[:, 0] + shifts.to(torch.float32).view(-1, 1, 1)).remainder(1.0)
    return _hsv_to_rgb(torch.stack((h, hsv[:, 1], hsv[:, 2]), dim=-3))


def gaussian_kernels(sigmas: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """(M,) sigmas -> (M, kernel_size) normalised 1-D Gaussian kernels."""
    d = torch.arange(kernel_size, dtype=torch.float32, device=sigmas.device) - (kernel_size - 1) / 2
    w = torch.exp(-(d.view(1, -1) ** 2) / (2 * sigmas.to(torch.float32).view(-1, 1) ** 2))
    return w / w.sum(dim=1, keepdim=True)


def gaussian_blur(x: torch.Tensor, sigmas: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per sample and reflect padding (torchvision's).

    The M samples' channels become the groups of one grouped convolution.
    """
    m, c, h, w = x.shape
    k = gaussian_kernels(sigmas, kernel_size).repeat_interleave(c, dim=0)  # (M*C, ks)
    pad = kernel_size // 2
    y = F.pad(x.reshape(1, m * c, h, w), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, k.view(m * c, 1, 1, kernel_size), groups=m * c)
    y = F.conv2d(y, k.view(m * c, 1, kernel_size, 1), groups=m * c)
    return y.view(m, c, h, w)


def solarize(x: torch.Tensor, threshold: float) -> torch.Tensor:
    return torch.where(x >= threshold, 1.0 - x, x)


# --- random parameters -----------------------------------------------------------------------

def sample_crop_boxes(n: int, height: int, width: int, cfg: AugmentConfig,
                      generator: torch.Generator, attempts: int = 10) -> torch.Tensor:
    """(n, 4) crop boxes (x0, y0, x1, y1) in pixels, sampled as torchvision's
    RandomResizedCrop.get_params does for each sample: up to 10 tries of an area fraction
    uniform in [scale_min, scale_max] and a log-uniform aspect ratio, the first that fits
    wins; otherwise the whole image, cropped to the nearest allowed ratio, centred."""
    area = height * width
    scale = torch.empty(n, attempts).uniform_(cfg.crop_scale_min, cfg.crop_scale_max,
                                              generator=generator)
    log_r = torch.empty(n, attempts).uniform_(math.log(cfg.crop_ratio_min),
                                              math.log(cfg.crop_ratio_max), generator=generator)
    pos = torch.rand(n, 2, generator=generator)
    ratio = torch.exp(log_r)
    w = torch.round(torch.sqrt(area * scale * ratio))
    h = torch.round(torch.sqrt(area * scale / ratio))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # index of the first fit
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)
    top = torch.floor(pos[:, 0] * (height - h + 1)).clamp_(max=height - h)
    left = torch.floor(pos[:, 1] * (width - w + 1)).clamp_(max=width - w)

    in_ratio = width / height
    if in_ratio < cfg.crop_ratio_min:
        fw, fh = width, int(round(width / cfg.crop_ratio_min))
    elif in_ratio > cfg.crop_ratio_max:
        fw, fh = int(round(height * cfg.crop_ratio_max)), height
    else:
        fw, fh = width, height
    fallback = ~fits.any(dim=1)
    w = torch.where(fallback, float(fw), w)
    h = torch.where(fallback, float(fh), h)
    top = torch.where(fallback, float((height - fh) // 2), top)
    left = torch.where(fallback, float((width - fw) // 2), left)
    return torch.stack([left, top, left + w, top + h], dim=1)


def _uniform(n: int, amount: float, g: torch.Generator) -> torch.Tensor:
    """torchvision's jitter factor: uniform in [max(0, 1 - a), 1 + a]."""
    return torch.empty(n).uniform_(max(0.0, 1.0 - amount), 1.0 + amount, generator=g)


def _indices(mask: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    idx = mask.nonzero().flatten()  # a CPU mask: no device sync
    return idx.to(device, non_blocking=True) if idx.numel() else None


def _apply(x: torch.Tensor, mask: torch.Tensor, fn, *params: torch.Tensor) -> torch.Tensor:
    """x[mask] = fn(x[mask], params[mask]) with a CPU mask and index operations."""
    idx = _indices(mask, x.device)
    if idx is None:
        return x
    selected = [p[mask].to(x.device, non_blocking=True) for p in params]
    return x.index_copy(0, idx, fn(x.index_select(0, idx), *selected))


# --- the pipeline ----------------------------------------------------------------------------

def _views(images: torch.Tensor, source: torch.Tensor, cfg: AugmentConfig, size: int,
           generator: torch.Generator, normalize: bool) -> torch.Tensor:
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be uint8 (N, 3, H, W); got {images.dtype} "
                         f"{tuple(images.shape)}")
    device = images.device
    m = source.numel()
    _, _, height, width = images.shape
    g = generator

    # Every parameter is drawn, always in this order, whether or not its operation fires.
    boxes = sample_crop_boxes(m, height, width, cfg, g)
    flip = torch.rand(m, generator=g) < cfg.flip_p
    jitter = torch.rand(m, generator=g) < cfg.jitter_p
    s = cfg.jitter_strength
    factors = [_uniform(m, cfg.jitter_brightness * s, g), _uniform(m, cfg.jitter_contrast * s, g),
               _uniform(m, cfg.jitter_saturation * s, g),
               torch.empty(m).uniform_(-cfg.jitter_hue * s, cfg.jitter_hue * s, generator=g)]
    order = torch.rand(m, 4, generator=g).argsort(dim=1)  # ColorJitter's randperm(4), per sample
    gray = torch.rand(m, generator=g) < cfg.grayscale_p
    blur = torch.rand(m, generator=g) < resolved_blur_p(cfg, size)
    sigmas = torch.empty(m).uniform_(cfg.blur_sigma_min, cfg.blur_sigma_max, generator=g)
    solar = torch.rand(m, generator=g) < cfg.solarize_p

    # Crop + resize with roi_align: each output pixel averages an adaptive grid of bilinear
    # samples over its footprint, which antialiases when shrinking (like torchvision's
    # antialias=True) and is plain bilinear when enlarging. Boxes index the source image, so
    # the two views of an image are cut from one copy of it.
    rois = torch.cat([source.to(torch.float32).view(-1, 1), boxes], dim=1).to(device)
    x = roi_align(images.float(), rois, output_size=(size, size), spatial_scale=1.0,
                  sampling_ratio=-1, aligned=True)  # (M, 3, size, size), 0..255
    x = x.div_(255.0).clamp_(0.0, 1.0)

    x = _apply(x, flip, lambda v: v.flip(-1))
    ops = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
    active = [cfg.jitter_brightness * s > 0, cfg.jitter_contrast * s > 0,
              cfg.jitter_saturation * s > 0, cfg.jitter_hue * s > 0]
    for position in range(4):
        for op_index, op in enumerate(ops):
            if active[op_index]:
                chosen = jitter & (order[:, position] == op_index)
                x = _apply(x, chosen, op, factors[op_index])
    x = _apply(x, gray, lambda v: grayscale(v).expand(-1, 3, -1, -1))
    kernel = blur_kernel_size(cfg, size)
    if kernel < size:  # reflect padding needs the kernel to fit inside the image
        x = _apply(x, blur, lambda v, sg: gaussian_blur(v, sg, kernel), sigmas)
    x = _apply(x, solar, lambda v: solarize(v, cfg.solarize_threshold))
    if normalize:
        mean = torch.tensor(cfg.normalize_mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(cfg.normalize_std, device=device).view(1, 3, 1, 1)
        x = (x - mean) / std
    return x


def make_views(images: torch.Tensor, cfg: AugmentConfig, size: int,
               generator: torch.Generator, *, normalize: bool = True) -> torch.Tensor:
    """One random view of every image: uint8 (N, 3, H, W) -> float32 (N, 3, size, size),
    on the images' device; normalised with cfg's mean/std unless ``normalize=False``
    (then in [0, 1])."""
    return _views(images, torch.arange(images.shape[0]), cfg, size, generator, normalize)


def make_pairs(images: torch.Tensor, cfg: AugmentConfig, size: int, generator: torch.Generator,
               *, normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The positive pairs: two independent views of every image, made in one pass over 2N."""
    n = images.shape[0]
    views = _views(images, torch.arange(n).repeat(2), cfg, size, generator, normalize)
    return views[:n], views[n:]


def denormalize(views: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """Normalised views back to [0, 1] for display."""
    mean = torch.tensor(cfg.normalize_mean, device=views.device).view(1, 3, 1, 1)
    std = torch.tensor(cfg.normalize_std, device=views.device).view(1, 3, 1, 1)
    return (views * std + mean).clamp(0.0, 1.0)


def to_uint8_hwc(views: torch.Tensor) -> np.ndarray:
    """Views in [0, 1], (N, 3, H, W) -> uint8 (N, H, W, 3) numpy, for display or saving."""
    return (views.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
