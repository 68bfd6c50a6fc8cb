"""Decoding one image file into the square uint8 RGB array that training and the app use.

Every colour mode, EXIF orientation, transparency and bit depth is handled here
(:func:`to_rgb`); anything that is not a usable image raises :class:`BadImage` with a short
reason for people, and an image claiming more pixels than the limit is refused from its
header, before any pixel is decoded (decompression bombs).
"""

from __future__ import annotations

import io
import os
import re

import numpy as np
from PIL import Image, UnidentifiedImageError

from engine.data.scan import BROKEN_LINK, EMPTY_FILE, os_reason

# EXIF orientation -> the transpose that undoes it (as ImageOps.exif_transpose does).
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXIF_ORIENTATION_TAG = 0x0112
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})

# The formats the scan's extensions stand for. Pillow is told to try only these, so a file
# renamed to .jpg that is really, say, an EPS (which Pillow renders by running Ghostscript)
# is refused as "not an image" instead of being handed to a more exotic decoder.
FORMATS = ("JPEG", "PNG", "BMP", "DIB", "WEBP", "TIFF", "GIF")

# Pillow's own hard limit message: "Image size (N pixels) exceeds limit of M pixels, ..."
_PIL_BOMB = re.compile(r"\((\d+) pixels\) exceeds limit of (\d+)")


class BadImage(Exception):
    """An image file that cannot be used; str() is a short human reason.

    ``pixels`` is the image's pixel count when known (it lets a cache built under one
    pixel limit be reused under another that gives the same result).
    """

    def __init__(self, reason: str, pixels: int | None = None) -> None:
        super().__init__(reason)
        self.pixels = pixels


def decode_image(data: bytes | str | os.PathLike, size: int, *, max_pixels: int) -> np.ndarray:
    """Decode an image file (its bytes, or its path) to a (size, size, 3) uint8 RGB array.

    The shorter side is resized to ``size`` and the centre square kept. Raises
    :class:`BadImage` with a short reason for anything that is not a usable image; an
    image with more than ``max_pixels`` pixels is refused from its header, before any
    pixel is decoded. See :func:`to_rgb` for how each colour mode is converted.
    """
    return decode_with_pixels(data, size, max_pixels)[0]


#: The side a scan decodes at to check a file (JPEGs decode at 1/8 scale where they can).
CHECK_SIZE = 8


def check_image(data: bytes | str | os.PathLike, max_pixels: int) -> str | None:
    """None when the file decodes as the cache would decode it, else the reason it does
    not (the cache's reason). Every pixel is decoded, at a reduced scale where the format
    allows it (JPEG), so truncated and corrupt files are found."""
    try:
        decode_with_pixels(data, CHECK_SIZE, max_pixels)
    except BadImage as exc:
        return str(exc)
    return None


def decode_with_pixels(data: bytes | str | os.PathLike, size: int,
                       max_pixels: int) -> tuple[np.ndarray, int]:
    """:func:`decode_image`, also returning the image's pixel count."""
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        data = _read_file(data)
    if len(data) == 0:
        raise BadImage(EMPTY_FILE)
    try:
        im = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        raise BadImage("not an image (cannot identify format)") from None
    except Image.DecompressionBombError as exc:
        raise _pil_bomb(exc, max_pixels) from None
    except Exception:
        raise BadImage("truncated or corrupt image data") from None
    with im:
        w, h = im.size
        if w < 1 or h < 1:
            raise BadImage(f"not an image (its size is {w} x {h} pixels)")
        pixels = w * h
        if pixels > max_pixels:
            # Checked on the header, before decoding: a small file can claim a huge size.
            raise BadImage(f"too large: {w} x {h} pixels is more than the limit of "
                           f"{max_pixels:,} (decompression-bomb guard)", pixels)
        orientation = _orientation(im)
        try:
            _draft(im, size)
            im.load()
            # Grayscale stays one channel through the resize (a third of the work).
            square = _centre_square(_flatten(im), size).convert("RGB")
        except BadImage:
            raise
        except MemoryError:
            raise BadImage("too large to decode (out of memory)", pixels) from None
        except Exception:
            raise BadImage("truncated or corrupt image data", pixels) from None
    if orientation in _ORIENTATION:
        # Transposing commutes with resizing and centre-cropping, so it is done on the small
        # square: same result as ImageOps.exif_transpose first, at a fraction of the cost.
        square = square.transpose(_ORIENTATION[orientation])
    out = np.asarray(square, dtype=np.uint8)
    if out.shape != (size, size, 3):  # defensive: every branch above yields RGB size x size
        raise BadImage(f"unsupported image layout {out.shape}", pixels)
    return out, pixels


def _read_file(path: str | os.PathLike) -> bytes:
    """The bytes of the file at ``path``, or BadImage saying why they cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise BadImage(BROKEN_LINK if os.path.islink(path) else "file not found") from None
    except OSError as exc:
        raise BadImage(f"cannot be read ({os_reason(exc)})") from None


def _pil_bomb(exc: Exception, max_pixels: int) -> BadImage:
    """BadImage for Pillow's own hard limit (2 x Image.MAX_IMAGE_PIXELS), raised on open."""
    m = _PIL_BOMB.search(str(exc))
    if m is None:
        return BadImage("too large: more pixels than Pillow allows (decompression-bomb guard)")
    pixels, limit = int(m[1]), int(m[2])
    if pixels > max_pixels:
        return BadImage(f"too large: {pixels:,} pixels is more than the limit of "
                        f"{max_pixels:,} (decompression-bomb guard)", pixels)
    return BadImage(f"too large: {pixels:,} pixels is more than Pillow's limit of {limit:,} "
                    "(decompression-bomb guard; raise PIL.Image.MAX_IMAGE_PIXELS to allow it)",
                    pixels)


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation tag (1 = upright), 1 when absent or unreadable."""
    try:
        value = im.getexif().get(_EXIF_ORIENTATION_TAG, 1)
        return int(value)
    except Exception:
        return 1


def _draft(im: Image.Image, size: int) -> None:
    """Let a JPEG decode at 1/2, 1/4 or 1/8 scale when that still leaves the shorter side at
    least ``size`` (much faster for photos far bigger than the cache)."""
    if im.format not in ("JPEG", "MPO"):  # MPO: multi-picture JPEG from cameras and phones
        return
    w, h = im.size
    short = min(w, h)
    if short >= 2 * size:
        im.draft(im.mode, (-(-w * size // short), -(-h * size // short)))


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB.

    - Transparency (an alpha band, or a palette / single-colour ``transparency`` entry) is
      composited over WHITE: most transparent images (logos, icons, cut-outs, line art) are
      drawn to be seen on a light page, and dark line art would vanish on black.
    - 16-bit grayscale (I;16 modes) maps 0..65535 linearly to 0..255. 32-bit integer (I)
      does the same when its values fit in 0..65535 (Pillow's 16-bit PNG/TIFF), and
      otherwise stretches its own min..max. Float (F) maps 0..1 to 0..255 when its values
      fit in that range, keeps 0..255 as it is, and otherwise stretches its own min..max.
    - 1-bit, L, P, CMYK, YCbCr, HSV and the rest use Pillow's conversions.
    """
    return _flatten(im).convert("RGB")


def _flatten(im: Image.Image) -> Image.Image:
    """``im`` as 8-bit "RGB" or "L" (grayscale is kept single-channel), as :func:`to_rgb`."""
    mode = im.mode
    if mode in ("RGB", "L") and "transparency" not in im.info:
        return im
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_deep_to_uint8(im, mode), "L")
    if mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = im.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if mode == "1":
        return im.convert("L")
    try:
        return im.convert("RGB")
    except ValueError:  # e.g. LAB, which Pillow cannot convert without a colour profile
        raise BadImage(f"unsupported colour mode {mode}") from None


def _deep_to_uint8(im: Image.Image, mode: str) -> np.ndarray:
    """A 16-bit, 32-bit or float grayscale image as uint8, scaled rather than clipped."""
    a = np.asarray(im)
    if a.ndim != 2:
        raise BadImage(f"unsupported colour mode {mode}")
    if mode.startswith("I;16"):
        scaled = a.astype(np.float32) * (255.0 / 65535.0)
    else:
        a = a.astype(np.float64)
        finite = a[np.isfinite(a)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        if mode == "F" and lo >= 0.0 and hi <= 1.0:
            lo, hi = 0.0, 1.0
        elif mode == "F" and lo >= 0.0 and hi <= 255.0:
            lo, hi = 0.0, 255.0
        elif mode != "F" and lo >= 0 and hi <= 65535:
            lo, hi = 0.0, 65535.0
        a = np.nan_to_num(a, nan=lo, posinf=hi, neginf=lo)
        scaled = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _centre_square(im: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to ``size`` and keep the centre square.

    Resampling only the centre box of the source is the same as resizing the whole image
    and then cropping, without resizing pixels that are thrown away. ``reducing_gap`` lets
    Pillow shrink by an integer factor first (fast) and finish with bicubic resampling.
    """
    w, h = im.size
    side = min(w, h)
    left, top = (w - side) / 2, (h - side) / 2
    box = (left, top, left + side, top + side)
    if side == size and left == int(left) and top == int(top):
        return im.crop(tuple(int(v) for v in box))
    return im.resize((size, size), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)
