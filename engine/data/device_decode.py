"""Decoding JPEGs for the cache on a GPU: torchvision.io.decode_jpeg on the device (nvJPEG),
in batches, and the resize to the cache side there too.

The result matches :func:`engine.data.decode.decode_image` (same orientation, same centre
square, bicubic with antialiasing instead of Pillow's reduce-then-bicubic: a few grey
levels apart at most). Only files that are plainly JPEG photos go to the device: RGB or
grayscale, within the pixel limit, their bytes unchanged since the scan. Every other file,
and any file the device decoder refuses, is decoded by the CPU path, so what is skipped and
why stays the CPU path's word.

Whether the device beats the CPU depends on the images (Pillow decodes a large JPEG at 1/2,
1/4 or 1/8 scale when the cache side allows, which nvJPEG does not) and on the number of
cores, so the cache build races them on the first images and keeps the faster
(:class:`DecodeRace`).

torchvision 0.29 marks its image decoders deprecated in favour of TorchCodec; the call is
made in one place (:func:`decode_batch_on_device`), with that warning silenced there.
"""

from __future__ import annotations

import io
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from engine.data.scan import hash_bytes

# What the cache build yields per image: (RGB bytes or None, reason, pixel count if known).
Decoded = tuple[bytes | None, str, int | None]
# The CPU decoder of one manifest entry: (path, sha) -> Decoded.
CpuDecode = Callable[[Path, str], Decoded]

#: Images decoded in one call on the device.
DEVICE_BATCH = 64


def device_decode_available(device: torch.device) -> bool:
    """Whether JPEGs can be decoded on ``device`` (a CUDA device with torchvision's nvJPEG)."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    try:
        from torchvision.io import decode_jpeg  # noqa: F401
    except ImportError:
        return False
    return True


def _device_candidate(data: bytes, max_pixels: int) -> tuple[int, int] | None:
    """(width, height) when ``data`` is a JPEG the device may decode (RGB or grayscale,
    within ``max_pixels``), from its header alone; None sends the file to the CPU path."""
    try:
        with Image.open(io.BytesIO(data), formats=("JPEG",)) as im:
            if im.format != "JPEG" or im.mode not in ("RGB", "L"):
                return None
            w, h = im.size
    except Exception:
        return None
    return (w, h) if 0 < w * h <= max_pixels else None


def _bicubic(x: torch.Tensor) -> torch.Tensor:
    """Pillow's bicubic kernel (a = -0.5)."""
    a = -0.5
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def resample_matrix(length: int, start: float, end: float, size: int,
                    device: torch.device) -> torch.Tensor:
    """(size, length) weights that resample the span [start, end) of an axis of ``length``
    pixels to ``size`` pixels as Pillow's bicubic resize with a box does: the kernel
    widened by the reduction factor (antialiasing), each row normalised, sample centres at
    start + (i + 0.5) * scale."""
    scale = (end - start) / size
    widen = max(scale, 1.0)
    centres = start + (torch.arange(size, dtype=torch.float32, device=device) + 0.5) * scale
    pixels = torch.arange(length, dtype=torch.float32, device=device) + 0.5
    weights = _bicubic((pixels[None, :] - centres[:, None]) / widen)
    # Pillow takes the pixels within the support only, clipped to the image, then normalises.
    low = (centres - 2.0 * widen + 0.5).floor().clamp(min=0)
    high = (centres + 2.0 * widen + 0.5).floor().clamp(max=length)
    index = pixels[None, :] - 0.5
    weights = weights * ((index >= low[:, None]) & (index < high[:, None]))
    return weights / weights.sum(dim=1, keepdim=True)


def draft_scale(w: int, h: int, size: int) -> int:
    """The factor (1, 2, 4 or 8) Pillow's JPEG draft mode decodes a w x h image at for a
    cache side of ``size`` (:func:`engine.data.decode._draft`)."""
    short = min(w, h)
    if short < 2 * size:
        return 1
    scale = min(w // -(-w * size // short), h // -(-h * size // short))
    return next(s for s in (8, 4, 2, 1) if scale >= s)


def reduce_matrix(length: int, factor: int, device: torch.device) -> torch.Tensor:
    """(ceil(length / factor), length) weights averaging blocks of ``factor`` pixels: what
    decoding a JPEG at 1/factor scale amounts to, close enough for a few grey levels."""
    out = -(-length // factor)
    block = torch.arange(length, device=device) // factor
    weights = (torch.arange(out, device=device)[:, None] == block[None, :]).float()
    return weights / weights.sum(dim=1, keepdim=True)


def square_resize(image: torch.Tensor, size: int) -> torch.Tensor:
    """The centre square of a (3, H, W) uint8 image (decoded at full size) resized to
    ``size``: a (size, size, 3) uint8 tensor on the image's device, as
    :func:`engine.data.decode.decode_image` makes it with Pillow (the JPEG draft
    reduction, the same centre box, the same bicubic kernel)."""
    _, h, w = image.shape
    factor = draft_scale(w, h, size)
    rh, rw = -(-h // factor), -(-w // factor)
    side = min(rh, rw)
    top, left = (rh - side) / 2, (rw - side) / 2
    if factor == 1 and side == size and top == int(top) and left == int(left):
        top, left = int(top), int(left)
        return image[:, top:top + side, left:left + side].permute(1, 2, 0).contiguous()
    rows = resample_matrix(rh, top, top + side, size, image.device)  # (size, rh)
    cols = resample_matrix(rw, left, left + side, size, image.device)  # (size, rw)
    if factor > 1:
        rows = rows @ reduce_matrix(h, factor, image.device)
        cols = cols @ reduce_matrix(w, factor, image.device)
    out = rows @ image.float() @ cols.T  # (3, size, size)
    return out.round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous()


def decode_batch_on_device(entries: Sequence[tuple[Path, str]], size: int, max_pixels: int,
                           device: torch.device, cpu_decode: CpuDecode) -> list[Decoded]:
    """Decode ``entries`` ((path, sha) each) into the cache's form, in order: JPEG photos on
    ``device``, everything else (and anything the device refuses) through ``cpu_decode``."""
    from torchvision.io import ImageReadMode, decode_jpeg

    out: list[Decoded | None] = [None] * len(entries)
    on_device: list[tuple[int, bytes, int]] = []
    for i, (path, sha) in enumerate(entries):
        try:
            data = path.read_bytes()
        except OSError:
            data = None
        known = _device_candidate(data, max_pixels) if data and hash_bytes(data) == sha else None
        if known is None:
            out[i] = cpu_decode(path, sha)  # names the reason, or decodes what nvJPEG cannot
        else:
            on_device.append((i, data, known[0] * known[1]))
    if on_device:
        tensors = [torch.frombuffer(bytearray(data), dtype=torch.uint8)
                   for _, data, _ in on_device]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                images = decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device,
                                     apply_exif_orientation=True)
        except RuntimeError:
            images = [None] * len(tensors)  # one file the device refuses fails the call
        for (i, _, pixels), image in zip(on_device, images):
            if image is None:
                out[i] = cpu_decode(*entries[i])
                continue
            square = square_resize(image, size).cpu().numpy()
            out[i] = (square.tobytes(), "", pixels)
    return out  # type: ignore[return-value]  (every entry is set above)


@dataclass
class DecodeRace:
    """The CPU and the device decode the first images in turn; the faster decodes the rest.

    ``record(where, images, seconds)`` counts a finished piece; ``winner`` is None while
    the race runs (each side needs ``sample`` images), then "cpu" or "device".
    """

    sample: int
    cpu_images: int = 0
    cpu_seconds: float = 0.0
    device_images: int = 0
    device_seconds: float = 0.0

    def next_side(self) -> str:
        """Which side decodes the next piece."""
        if self.winner is not None:
            return self.winner
        return "cpu" if self.cpu_images < self.sample else "device"

    def record(self, where: str, images: int, seconds: float) -> None:
        if where == "cpu":
            self.cpu_images += images
            self.cpu_seconds += seconds
        else:
            self.device_images += images
            self.device_seconds += seconds

    def rate(self, where: str) -> float:
        images, seconds = ((self.cpu_images, self.cpu_seconds) if where == "cpu"
                           else (self.device_images, self.device_seconds))
        return images / seconds if seconds > 0 else 0.0

    @property
    def winner(self) -> str | None:
        if self.cpu_images < self.sample or self.device_images < self.sample:
            return None
        return "device" if self.rate("device") > self.rate("cpu") else "cpu"

    def describe(self) -> str:
        faster = "GPU" if self.winner == "device" else "CPU"
        return (f"decoding on the GPU {self.rate('device'):,.0f} images/s, on the CPU "
                f"{self.rate('cpu'):,.0f} images/s: the {faster} decodes the rest")


def race_sample(total: int) -> int:
    """Images each side decodes in the race: 2% of the folder, between 512 and 5,000."""
    return max(512, min(5_000, total // 50))


def raced(records: Sequence, sample: int, cpu: Callable[[Sequence], Iterator[Decoded]],
          device: Callable[[Sequence], list[Decoded]], piece: int = DEVICE_BATCH,
          on_decided: Callable[[DecodeRace], None] | None = None) -> Iterator[Decoded]:
    """Decode ``records`` in order, the CPU (``cpu``: a generator over a slice) and the
    device (``device``: a list for a slice) racing on ``sample`` images each, then the
    faster one doing the rest; ``on_decided`` hears the outcome once. Worth it for folders
    of many times ``sample`` images (:func:`race_sample`); a smaller one simply ends
    during the race.

    Start-up is left out of both rates: the device's first piece (CUDA and nvJPEG set-up)
    is not timed, nor the wait for the CPU's first image (starting its workers).
    """
    race = DecodeRace(sample)
    start = 0
    warmed = False
    while start < len(records):
        winner = race.winner
        if winner is not None:
            if on_decided is not None:
                on_decided(race)
            if winner == "cpu":
                yield from cpu(records[start:])
            else:
                for i in range(start, len(records), piece):
                    yield from device(records[i:i + piece])
            return
        if race.cpu_images < sample:
            stop = min(len(records), start + sample + 1)
            first = None
            for n, item in enumerate(cpu(records[start:stop])):
                if n == 0:
                    first = time.perf_counter()
                yield item
            if first is not None:
                race.record("cpu", stop - start - 1, time.perf_counter() - first)
        else:
            stop = min(len(records), start + piece)
            began = time.perf_counter()
            yield from device(records[start:stop])
            if warmed:
                race.record("device", stop - start, time.perf_counter() - began)
            warmed = True
        start = stop
