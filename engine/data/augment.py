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
operation takes a tensor of per-sample parameters instead, and the colour functions below
match torchvision.transforms.v2.functional sample by sample.

Randomness: every parameter is drawn from a CPU ``torch.Generator``, whatever the device, so
a seed gives the same parameters on the CPU and on a GPU. Each call draws a fixed number of
values per view (``sample_view_params``), whichever operations then fire. Which samples an
operation touches is decided on the CPU and applied with index operations on the device, so
the device never has to report back to the host (no synchronisation).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from engine.config.train_config import AugmentConfig

_GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights
_CROP_ATTEMPTS = 10  # torchvision's RandomResizedCrop.get_params

# Views are made in chunks of about this many float32 values. On the CPU a chunk (with the
# temporaries of the colour operations) then stays in the last-level cache instead of
# streaming through memory: at 224 px the whole pipeline runs 1.1x (2 threads) to 1.3x
# (1 thread) faster than in one chunk (2-core EPYC, 32 MB L3). On a GPU the chunk only
# bounds the temporaries' memory (N=512 pairs at 224 px: 3 chunks).
_CPU_CHUNK_VALUES = 2**22  # 16 MB: about 24 views at 224 px, 1365 at 32 px
_DEVICE_CHUNK_VALUES = 2**26  # 256 MB: about 445 views at 224 px

Op = Callable[..., torch.Tensor]


def resolved_blur_p(cfg: AugmentConfig, size: int) -> float:
    """The blur probability: ``cfg.blur_p``, or when it is None (auto) 0.5 above 64 px and
    0 at 64 px and below (SimCLR blurs ImageNet views but not CIFAR-10 ones, appendix B.9)."""
    if cfg.blur_p is not None:
        return cfg.blur_p
    return 0.5 if size > 64 else 0.0


def blur_kernel_size(cfg: AugmentConfig, size: int) -> int:
    """Odd kernel side, about ``blur_kernel_fraction`` of the view side (SimCLR: 10%), >= 3."""
    k = round(cfg.blur_kernel_fraction * size)
    return max(3, k if k % 2 == 1 else k + 1)


# --- per-sample colour operations: float images in [0, 1], (M, 3, H, W), factors (M,) -------

def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A (small, CPU) parameter tensor on ``device`` without making the host wait for it.

    A non_blocking copy from pageable memory may still wait for the GPU stream, so the
    parameters go through pinned memory first; PyTorch keeps the pinned block until the
    copy is done.
    """
    if t.device == device:
        return t
    if t.device.type == "cpu" and device.type == "cuda":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(M,) -> (M, 1, 1, 1) float32 on ``like``'s device, to broadcast over an image batch."""
    return _to_device(values, like.device).to(torch.float32).view(-1, 1, 1, 1)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(M, 3, H, W) -> (M, 1, H, W) luma, computed as torchvision's rgb_to_grayscale."""
    r, g, b = x.unbind(dim=-3)
    return r.mul(_GRAY[0]).add_(g, alpha=_GRAY[1]).add_(b, alpha=_GRAY[2]).unsqueeze(-3)


def _blend(a: torch.Tensor, b: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """ratio * a + (1 - ratio) * b, clamped to [0, 1] (torchvision's _blend), per sample."""
    r = _per_sample(ratio, a)
    return a.mul(r).addcmul_(b, 1.0 - r).clamp_(0.0, 1.0)


def adjust_brightness(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Scale each sample by its factor (blend with black), clamped: F.adjust_brightness."""
    return x.mul(_per_sample(factors, x)).clamp_(0.0, 1.0)


def adjust_contrast(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Blend each sample with the mean of its grayscale image: F.adjust_contrast."""
    mean = grayscale(x).mean(dim=(-3, -2, -1), keepdim=True)  # (M, 1, 1, 1)
    return _blend(x, mean, factors)


def adjust_saturation(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Blend each sample with its grayscale image: F.adjust_saturation."""
    return _blend(x, grayscale(x), factors)


def _rgb_to_hsv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(M, 3, H, W) RGB -> h, s, v, each (M, H, W); torchvision's _rgb_to_hsv step by step
    (the in-place updates of bc and gc happen in its order, so results agree bit for bit)."""
    r, g, _ = x.unbind(dim=-3)
    minc, maxc = torch.aminmax(x, dim=-3)
    eqc = maxc == minc  # gray pixels: hue and saturation are 0, avoid dividing by 0
    channels_range = maxc - minc
    ones = torch.ones_like(maxc)
    s = channels_range / torch.where(eqc, ones, maxc)
    divisor = torch.where(eqc, ones, channels_range).unsqueeze_(-3)
    rc, gc, bc = ((maxc.unsqueeze(-3) - x) / divisor).unbind(dim=-3)
    max_neq_r = maxc != r
    max_eq_g = maxc == g
    hg = rc.add(2.0).sub_(bc).mul_(max_eq_g & max_neq_r)
    hr = bc.sub_(gc).mul_(~max_neq_r)
    hb = gc.add_(4.0).sub_(rc).mul_(max_neq_r.logical_and_(max_eq_g.logical_not_()))
    h = hr.add_(hg).add_(hb).mul_(1.0 / 6.0).add_(1.0).fmod_(1.0)
    return h, s, maxc


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """h, s, v (M, H, W) -> (M, 3, H, W) RGB; torchvision's _hsv_to_rgb."""
    h6 = h.mul(6)
    i = torch.floor(h6)
    f = h6.sub_(i)
    i = i.to(torch.int64).remainder_(6)  # hue sector
    sxf = s * f
    one_minus_s = 1.0 - s
    q = (1.0 - sxf).mul_(v).clamp_(0.0, 1.0)
    t = sxf.add_(one_minus_s).mul_(v).clamp_(0.0, 1.0)
    p = one_minus_s.mul_(v).clamp_(0.0, 1.0)
    vpqt = torch.stack((v, p, q, t), dim=-3)  # (M, 4, H, W)
    # For each hue sector, which of (v, p, q, t) is red, green and blue.
    select = torch.tensor([[0, 2, 1, 1, 3, 0], [3, 0, 0, 2, 1, 1], [1, 1, 3, 0, 0, 2]])
    select = _to_device(select, h.device)  # (3, 6); torch.tensor(device=cuda) would sync
    return vpqt.gather(-3, select[:, i].movedim(0, -3))  # (M, 3, H, W)


def adjust_hue(x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Rotate each sample's hue by its shift (in turns, |shift| <= 0.5): F.adjust_hue."""
    h, s, v = _rgb_to_hsv(x)
    h.add_(_per_sample(shifts, x).view(-1, 1, 1)).remainder_(1.0)
    return _hsv_to_rgb(h, s, v)


def gaussian_kernels(sigmas: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """(M,) sigmas -> (M, kernel_size) normalised 1-D Gaussians, torchvision's
    _get_gaussian_kernel1d (exp(-d^2 / 2 sigma^2) over d = -(k-1)/2 .. (k-1)/2)."""
    lim = (kernel_size - 1) / (2.0 * math.sqrt(2.0))
    d = torch.linspace(-lim, lim, steps=kernel_size, device=sigmas.device).view(1, -1)
    return torch.softmax(d.div(sigmas.to(torch.float32).view(-1, 1)).pow(2).neg(), dim=1)


def gaussian_blur(x: torch.Tensor, sigmas: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Gaussian blur with one sigma per sample and reflect padding, as
    F.gaussian_blur(x[i], [k, k], [sigmas[i]] * 2) computes each sample.

    torchvision convolves with the 2-D outer product of the 1-D kernel; two 1-D passes give
    the same result with k times fewer operations. The samples' channels become the groups
    of one grouped convolution, so each sample gets its own kernel in a single call.
    """
    m, c, h, w = x.shape
    pad = kernel_size // 2
    if pad >= min(h, w):
        raise ValueError(f"blur kernel {kernel_size} too large for a {h} x {w} image "
                         "(reflect padding must be smaller than the image)")
    k = gaussian_kernels(_to_device(sigmas, x.device), kernel_size)  # (M, k)
    k = k.unsqueeze(1).expand(m, c, kernel_size).reshape(m * c, kernel_size)  # per channel
    y = F.pad(x.reshape(1, m * c, h, w), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, k.view(m * c, 1, 1, kernel_size), groups=m * c)  # along the width
    y = F.conv2d(y, k.view(m * c, 1, kernel_size, 1), groups=m * c)  # along the height
    return y.view(m, c, h, w)


def solarize(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """Invert the values at or above the threshold (F.solarize): x >= t -> 1 - x."""
    return torch.where(x >= threshold, 1.0 - x, x)


def _gray3(x: torch.Tensor) -> torch.Tensor:
    """RandomGrayscale's output: 3 equal channels (a real copy: later steps work in place)."""
    return grayscale(x).repeat(1, 3, 1, 1)


def _hflip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-1)


# --- random parameters (all on the CPU) ------------------------------------------------------

def sample_crop_boxes(n: int, height: int, width: int, cfg: AugmentConfig,
                      generator: torch.Generator) -> torch.Tensor:
    """(n, 4) float crop boxes (x0, y0, x1, y1) in whole pixels, each drawn as torchvision's
    RandomResizedCrop.get_params draws one: up to 10 attempts of an area fraction uniform in
    [crop_scale_min, crop_scale_max] and an aspect ratio (width / height) log-uniform in
    [crop_ratio_min, crop_ratio_max], the first that fits inside the image wins, at a
    uniformly random position; if none fits, the centred crop of the whole image with its
    ratio clamped to the allowed range. The 10 attempts of all n samples are drawn at once.
    """
    g = generator
    scale = torch.empty(n, _CROP_ATTEMPTS).uniform_(cfg.crop_scale_min, cfg.crop_scale_max,
                                                    generator=g)
    log_ratio = torch.empty(n, _CROP_ATTEMPTS).uniform_(
        math.log(cfg.crop_ratio_min), math.log(cfg.crop_ratio_max), generator=g)
    position = torch.rand(n, 2, generator=g)
    # torchvision rounds sqrt(area * ratio) in Python floats: float64 here too.
    target = scale.double() * (height * width)
    ratio = log_ratio.double().exp()
    w = torch.round(torch.sqrt(target * ratio))  # (n, attempts); round half to even, as Python
    h = torch.round(torch.sqrt(target / ratio))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # first attempt that fits
    w = w.gather(1, first).squeeze(1)  # (n,)
    h = h.gather(1, first).squeeze(1)
    # torch.randint(0, height - h + 1): a uniform integer offset.
    top = torch.floor(position[:, 0].double() * (height - h + 1)).clamp_(max=height - h)
    left = torch.floor(position[:, 1].double() * (width - w + 1)).clamp_(max=width - w)

    in_ratio = width / height
    if in_ratio < cfg.crop_ratio_min:
        fw, fh = width, round(width / cfg.crop_ratio_min)
    elif in_ratio > cfg.crop_ratio_max:
        fw, fh = round(height * cfg.crop_ratio_max), height
    else:
        fw, fh = width, height
    fallback = ~fits.any(dim=1)
    w = torch.where(fallback, float(fw), w)
    h = torch.where(fallback, float(fh), h)
    top = torch.where(fallback, float((height - fh) // 2), top)
    left = torch.where(fallback, float((width - fw) // 2), left)
    return torch.stack([left, top, left + w, top + h], dim=1).float()


def _jitter_factors(n: int, amount: float, g: torch.Generator) -> torch.Tensor:
    """ColorJitter's factor: uniform in [max(0, 1 - amount), 1 + amount]."""
    return torch.empty(n).uniform_(max(0.0, 1.0 - amount), 1.0 + amount, generator=g)


@dataclass
class ViewParams:
    """The random parameters of n views, on the CPU; row i describes view i."""

    boxes: torch.Tensor  # (n, 4) float: crop box x0, y0, x1, y1 in source pixels
    flip: torch.Tensor  # (n,) bool
    jitter: torch.Tensor  # (n,) bool: colour jitter applied
    factors: torch.Tensor  # (n, 4) float: brightness, contrast, saturation factor; hue shift
    order: torch.Tensor  # (n, 4) long: jitter order, a permutation of 0..3 (ops as above)
    gray: torch.Tensor  # (n,) bool
    blur: torch.Tensor  # (n,) bool
    sigmas: torch.Tensor  # (n,) float: blur sigma in pixels
    solarize: torch.Tensor  # (n,) bool

    def select(self, index: torch.Tensor) -> ViewParams:
        """The parameters of the views ``index`` (a CPU index tensor)."""
        return ViewParams(**{k: v[index] for k, v in vars(self).items()})


def sample_view_params(n: int, height: int, width: int, cfg: AugmentConfig, size: int,
                       generator: torch.Generator) -> ViewParams:
    """Independent parameters for n views of (height x width) images made at ``size``.

    Always draws the same amount from ``generator`` (36 numbers per view), whatever the
    probabilities, so the generator's state after a call depends only on n.
    """
    g = generator
    s = cfg.jitter_strength
    boxes = sample_crop_boxes(n, height, width, cfg, g)
    flip = torch.rand(n, generator=g) < cfg.flip_p
    jitter = torch.rand(n, generator=g) < cfg.jitter_p
    hue = torch.empty(n).uniform_(-cfg.jitter_hue * s, cfg.jitter_hue * s, generator=g)
    factors = torch.stack([_jitter_factors(n, cfg.jitter_brightness * s, g),
                           _jitter_factors(n, cfg.jitter_contrast * s, g),
                           _jitter_factors(n, cfg.jitter_saturation * s, g), hue], dim=1)
    # ColorJitter's fn_idx = randperm(4), per view: the argsort of 4 uniforms is a uniformly
    # random permutation.
    order = torch.rand(n, 4, generator=g).argsort(dim=1)
    gray = torch.rand(n, generator=g) < cfg.grayscale_p
    blur = torch.rand(n, generator=g) < resolved_blur_p(cfg, size)
    sigmas = torch.empty(n).uniform_(cfg.blur_sigma_min, cfg.blur_sigma_max, generator=g)
    solar = torch.rand(n, generator=g) < cfg.solarize_p
    return ViewParams(boxes, flip, jitter, factors, order, gray, blur, sigmas, solar)


# --- the pipeline ----------------------------------------------------------------------------

def crop_resize(images: torch.Tensor, boxes: torch.Tensor, source: torch.Tensor,
                size: int) -> torch.Tensor:
    """Float (B, 3, H, W) images, (M, 4) boxes (x0, y0, x1, y1) and (M,) source indices
    -> (M, 3, size, size): each box of its source image resampled to size x size.

    Why roi_align: it resamples a different box per output in one call on any device, each
    output pixel averaging a grid of ceil(box side / size) x ceil(box side / size) bilinear
    samples over its footprint ("adaptive" sampling_ratio). Shrinking thus averages over the
    footprint (antialiasing, close to torchvision's resize(antialias=True)), enlarging
    is plain bilinear (exactly what antialias=True does when enlarging), and a whole image
    at its own size comes back unchanged. aligned=True puts pixel centres at +0.5, as
    torchvision's resize does. The alternative, grid_sample, aliases when shrinking.
    """
    rois = torch.cat([source.to(torch.float32).view(-1, 1), boxes], dim=1)  # (M, 5)
    rois = _to_device(rois, images.device)
    return roi_align(images, rois, output_size=(size, size), spatial_scale=1.0,
                     sampling_ratio=-1, aligned=True)


def _apply(x: torch.Tensor, mask: torch.Tensor, op: Op, *params: torch.Tensor) -> torch.Tensor:
    """x[mask] = op(x[mask], *(p[mask] for p in params)), with a CPU mask; x is updated in
    place where only some samples are chosen, and the result is returned."""
    if not mask.any():
        return x
    if mask.all():
        return op(x, *params)
    index = mask.nonzero().squeeze(1)  # CPU: the device need not report which samples
    on_device = _to_device(index, x.device)
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
    x = _apply(x, p.flip, _hflip)
    x = _colour_jitter(x, p, cfg)
    x = _apply(x, p.gray, _gray3)
    kernel = blur_kernel_size(cfg, x.shape[-1])
    if kernel // 2 < x.shape[-1]:  # reflect padding needs the image wider than the pad
        # Clamped: a normalised kernel can overshoot 1 by a rounding error.
        x = _apply(x, p.blur, lambda v, sg: gaussian_blur(v, sg, kernel).clamp_(0.0, 1.0),
                   p.sigmas)
    threshold = cfg.solarize_threshold
    return _apply(x, p.solarize, lambda v: solarize(v, threshold))


def _normalize_(x: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    mean = _to_device(torch.tensor(cfg.normalize_mean).view(1, 3, 1, 1), x.device)
    std = _to_device(torch.tensor(cfg.normalize_std).view(1, 3, 1, 1), x.device)
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
    params = sample_view_params(repeats * total, height, width, cfg, size, generator)
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
    """The positive pairs of SimCLR / MoCo v2: two independent views of every image.

    One pass over the batch repeated twice (2N views, as make_views would make of
    ``images.repeat(2, 1, 1, 1)``, without copying the images), then split: views[:N] and
    views[N:], each float32 (N, 3, size, size).

    With several processes, ``images`` is rows ``offset`` to ``offset + N`` of a global
    batch of ``global_batch`` images, and the views are exactly those rows of the views a
    single process would make of the whole batch from the same generator state.
    """
    n = images.shape[0]
    views = _make(images, 2, cfg, size, generator, normalize, global_batch, offset)
    return views[:n], views[n:]


def denormalize(views: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """Normalised views back to [0, 1]: x * std + mean, clamped (for display)."""
    mean = _to_device(torch.tensor(cfg.normalize_mean).view(1, 3, 1, 1), views.device)
    std = _to_device(torch.tensor(cfg.normalize_std).view(1, 3, 1, 1), views.device)
    return (views * std + mean).clamp_(0.0, 1.0)


def to_uint8_hwc(views_01: torch.Tensor) -> np.ndarray:
    """Views in [0, 1], (N, 3, H, W) -> uint8 numpy (N, H, W, 3), rounded, for display."""
    x = views_01.detach().clamp(0.0, 1.0).mul(255.0).round_().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()
