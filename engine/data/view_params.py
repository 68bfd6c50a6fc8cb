"""The random parameters of augmented views, drawn on the CPU from a ``torch.Generator``.

Every parameter comes from the CPU generator whatever the device, so a seed gives the same
parameters on the CPU and on a GPU. Each call draws a fixed number of values per view
(:func:`sample_view_params`), whichever operations then fire.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from engine.config.train_config import AugmentConfig

_CROP_ATTEMPTS = 10  # torchvision's RandomResizedCrop.get_params


def resolved_blur_p(cfg: AugmentConfig, size: int) -> float:
    """The blur probability: ``cfg.blur_p``, or when it is None (auto) 0.5 above 64 px and
    0 at 64 px and below (SimCLR blurs ImageNet views but not CIFAR-10 ones, appendix B.9)."""
    if cfg.blur_p is not None:
        return cfg.blur_p
    return 0.5 if size > 64 else 0.0


def _chosen(u: torch.Tensor, p: float, p2: float | None, second: int | None) -> torch.Tensor:
    """Which views an operation of probability ``p`` fires on, from their uniforms ``u``;
    with ``second`` and ``p2`` set, the views from index ``second`` on (the second view of
    each pair) use ``p2`` instead. Each half is compared with a Python float, exactly as the
    one-probability comparison, so a view's outcome depends only on its uniform and its
    probability."""
    chosen = u < p
    if second is not None and p2 is not None and p2 != p:
        chosen[second:] = u[second:] < p2
    return chosen


def blur_kernel_size(cfg: AugmentConfig, size: int) -> int:
    """Odd kernel side, about ``blur_kernel_fraction`` of the view side (SimCLR: 10%), >= 3."""
    k = round(cfg.blur_kernel_fraction * size)
    return max(3, k if k % 2 == 1 else k + 1)


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
                       generator: torch.Generator, *, second: int | None = None
                       ) -> ViewParams:
    """Independent parameters for n views of (height x width) images made at ``size``.

    Always draws the same amount from ``generator`` (36 numbers per view), whatever the
    probabilities, so the generator's state after a call depends only on n.

    ``second``: views ``second`` to ``n`` are the second view of each pair (make_pairs), whose
    blur and solarisation probabilities are ``cfg.blur_p2`` and ``cfg.solarize_p2`` where those
    are set (BYOL's asymmetric views, Grill et al. 2020, table 6). The draws are the same
    either way: only the thresholds of those views change.
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
    blur = _chosen(torch.rand(n, generator=g), resolved_blur_p(cfg, size), cfg.blur_p2, second)
    sigmas = torch.empty(n).uniform_(cfg.blur_sigma_min, cfg.blur_sigma_max, generator=g)
    solar = _chosen(torch.rand(n, generator=g), cfg.solarize_p, cfg.solarize_p2, second)
    return ViewParams(boxes, flip, jitter, factors, order, gray, blur, sigmas, solar)
