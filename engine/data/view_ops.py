"""Per-sample image operations on float batches in [0, 1], (M, 3, H, W), each sample with
its own parameter: the colour functions match torchvision.transforms.v2.functional sample by
sample, the blur and the crop do what torchvision does to one image, in one call for all.

Parameters are small CPU tensors; they reach the device without making the host wait
(:func:`to_device`), so no operation here synchronises with a GPU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

_GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
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
    return to_device(values, like.device).to(torch.float32).view(-1, 1, 1, 1)


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
    select = to_device(select, h.device)  # (3, 6); torch.tensor(device=cuda) would sync
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
    k = gaussian_kernels(to_device(sigmas, x.device), kernel_size)  # (M, k)
    k = k.unsqueeze(1).expand(m, c, kernel_size).reshape(m * c, kernel_size)  # per channel
    y = F.pad(x.reshape(1, m * c, h, w), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, k.view(m * c, 1, 1, kernel_size), groups=m * c)  # along the width
    y = F.conv2d(y, k.view(m * c, 1, kernel_size, 1), groups=m * c)  # along the height
    return y.view(m, c, h, w)


def solarize(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """Invert the values at or above the threshold (F.solarize): x >= t -> 1 - x."""
    return torch.where(x >= threshold, 1.0 - x, x)


def gray3(x: torch.Tensor) -> torch.Tensor:
    """RandomGrayscale's output: 3 equal channels (a real copy: later steps work in place)."""
    return grayscale(x).repeat(1, 3, 1, 1)


def hflip(x: torch.Tensor) -> torch.Tensor:
    """RandomHorizontalFlip's output: each sample mirrored left to right."""
    return x.flip(-1)


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
    rois = to_device(rois, images.device)
    return roi_align(images, rois, output_size=(size, size), spatial_scale=1.0,
                     sampling_ratio=-1, aligned=True)
