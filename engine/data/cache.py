"""Decode every image once into a memory-mapped uint8 cache that all epochs read.

Layout, inside ``cache_dir/images/``::

    <key[:24]>-<size>px-v1.u8    the good images, (N, size, size, 3) uint8, C order, no header
    <key[:24]>-<size>px-v1.json  sidecar: N, size, the full key, and the images that failed

``key`` is :meth:`Manifest.key` (the folder's content), so a cache is reused for the same
content wherever the folder lives, and any change to a file makes a new cache. The data
file holds only the images that decoded (a compacted file, in manifest order): index i of
:attr:`ImageCache.images` is ``ImageCache.manifest.images[i]``, and the failures are moved
into ``manifest.skipped``. The sidecar is written last, atomically, and a cache without a
valid sidecar is never used, so an interrupted build is simply rebuilt.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from engine.data.scan import (
    BROKEN_LINK,
    EMPTY_FILE,
    DataError,
    Manifest,
    SkippedFile,
    hash_bytes,
    os_reason,
)
from engine.run.io import write_atomic, write_json_atomic

CACHE_FORMAT_VERSION = 1

Progress = Callable[[int, int, str], None]

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


# --- decoding one image --------------------------------------------------------------------


def decode_image(data: bytes | str | os.PathLike, size: int, *, max_pixels: int) -> np.ndarray:
    """Decode an image file (its bytes, or its path) to a (size, size, 3) uint8 RGB array.

    The shorter side is resized to ``size`` and the centre square kept. Raises
    :class:`BadImage` with a short reason for anything that is not a usable image; an
    image with more than ``max_pixels`` pixels is refused from its header, before any
    pixel is decoded. See :func:`to_rgb` for how each colour mode is converted.
    """
    return _decode(data, size, max_pixels)[0]


def _decode(data: bytes | str | os.PathLike, size: int, max_pixels: int) -> tuple[np.ndarray, int]:
    """decode_image, also returning the image's pixel count."""
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
    except Exception:  # noqa: BLE001 - a malformed header can raise anything inside Pillow
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
        except Exception:  # noqa: BLE001 - truncated data raises OSError, SyntaxError, ...
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
    except Exception:  # noqa: BLE001 - broken EXIF must not lose an otherwise good image
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


# --- the cache -----------------------------------------------------------------------------


@dataclass
class ImageCache:
    """Decoded images of a folder, memory-mapped and read-only.

    ``images[i]`` is ``manifest.images[i]`` decoded and ``labels[i]`` its label (-1 when the
    folder has no labels); images that failed are in ``manifest.skipped``, not here.
    """

    images: np.ndarray  # np.memmap (N, size, size, 3) uint8, read-only
    labels: np.ndarray  # int64 (N,)
    manifest: Manifest
    size: int
    path: Path  # the .u8 data file

    def __len__(self) -> int:
        return len(self.labels)


def cache_paths(manifest: Manifest, size: int, cache_dir: Path) -> tuple[Path, Path]:
    """(data file, sidecar) for ``manifest`` at ``size`` px inside ``cache_dir``."""
    name = f"{manifest.key()[:24]}-{size}px-v{CACHE_FORMAT_VERSION}"
    folder = Path(cache_dir).expanduser() / "images"
    return folder / f"{name}.u8", folder / f"{name}.json"


def build_cache(manifest: Manifest, size: int, cache_dir: Path, *, max_image_pixels: int,
                num_workers: int | None = None, progress: Progress | None = None) -> ImageCache:
    """The decoded cache of ``manifest`` at ``size`` px, built now unless a complete one
    made from the same content (and giving the same result for ``max_image_pixels``) exists.

    Decoding runs on ``num_workers`` threads (default: every core; Pillow releases the GIL
    while decoding and resizing) and streams the images to disk in manifest order, so memory
    use does not grow with the folder. Each file is re-read and its hash compared with the
    manifest's: a file changed or removed since the scan is skipped with that reason.
    ``progress(done, total, message)`` is called at most five times a second.

    Raises :class:`DataError` when the cache folder cannot be written (read-only, no space).
    """
    data_path, meta_path = cache_paths(manifest, size, cache_dir)
    key = manifest.key()
    meta = _read_sidecar(meta_path, data_path, manifest, key, size, max_image_pixels)
    if meta is None:
        meta = _build(manifest, size, key, data_path, meta_path, max_image_pixels,
                      num_workers or os.cpu_count() or 1, progress)
    elif progress:
        n = len(manifest.images)
        progress(n, n, f"reusing the decoded cache of {n:,} images")
    failed = [SkippedFile(f["path"], f["reason"]) for f in meta["failed"]]
    good = manifest.with_skipped(failed)
    return ImageCache(images=_open_images(data_path, meta["count"], size),
                      labels=good.labels(), manifest=good, size=size, path=data_path)


def _open_images(path: Path, count: int, size: int) -> np.ndarray:
    if count == 0:  # mmap cannot map an empty file
        empty = np.zeros((0, size, size, 3), dtype=np.uint8)
        empty.flags.writeable = False
        return empty
    return np.memmap(path, dtype=np.uint8, mode="r", shape=(count, size, size, 3))


def _read_sidecar(meta_path: Path, data_path: Path, manifest: Manifest, key: str, size: int,
                  max_pixels: int) -> dict[str, Any] | None:
    """The sidecar of a complete, usable cache, or None (then the cache is rebuilt)."""
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        valid = (meta["format"] == CACHE_FORMAT_VERSION and meta["key"] == key
                 and meta["size"] == size and meta["total"] == len(manifest.images)
                 and meta["count"] == meta["total"] - len(meta["failed"])
                 and data_path.stat().st_size == meta["count"] * size * size * 3)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not valid:
        return None
    # The pixel limit decides which images are refused. Another limit gives the same cache
    # when every kept image is within it and every image refused as too large is above it.
    largest_kept = meta.get("largest_kept_pixels") or 0
    smallest_refused = meta.get("smallest_refused_pixels")
    if largest_kept > max_pixels or (smallest_refused is not None
                                     and smallest_refused <= max_pixels):
        return None
    return meta


def _read_and_decode(path: Path, sha: str, size: int, max_pixels: int
                     ) -> tuple[np.ndarray | None, str, int | None]:
    """(image, "", pixels) or (None, reason, pixels-if-known) for one manifest entry."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None, "disappeared since scan", None
    except OSError as exc:
        return None, f"cannot be read ({os_reason(exc)})", None
    if hash_bytes(data) != sha:
        return None, "changed since scan", None
    try:
        image, pixels = _decode(data, size, max_pixels)
    except BadImage as exc:
        return None, str(exc), exc.pixels
    return image, "", pixels


def _cache_write_error(folder: Path, exc: OSError) -> DataError:
    reasons = {errno.ENOSPC: "the disk is full",
               getattr(errno, "EDQUOT", -1): "the disk quota is exceeded",
               errno.EROFS: "the folder is read-only", errno.EACCES: "permission denied",
               errno.EPERM: "permission denied"}
    what = reasons.get(exc.errno or 0, exc.strerror or str(exc))
    return DataError(f"cannot write the decoded-image cache in {folder}: {what}. Free some "
                     "space there, or choose another cache folder with --cache-dir (or the "
                     "CONTRASTIVE_EXPLORER_CACHE environment variable)")


def _build(manifest: Manifest, size: int, key: str, data_path: Path, meta_path: Path,
           max_pixels: int, workers: int, progress: Progress | None) -> dict[str, Any]:
    """Decode ``manifest`` into ``data_path`` and write its sidecar; return the sidecar."""
    folder = data_path.parent
    total = len(manifest.images)
    image_bytes = size * size * 3
    try:
        folder.mkdir(parents=True, exist_ok=True)
        meta_path.unlink(missing_ok=True)  # an old sidecar must never describe the new data
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        raise _cache_write_error(folder, exc) from None
    needed = total * image_bytes
    if needed > free:
        raise DataError(
            f"the decoded-image cache needs {_gb(needed)} but only {_gb(free)} is free in "
            f"{folder}. Free some space, choose another cache folder with --cache-dir, or "
            "use a smaller cache size")

    root = Path(manifest.root)
    failed: list[dict[str, Any]] = []
    stats = {"largest_kept": 0, "smallest_refused": None}
    started = time.monotonic()

    def write(f: IO[bytes]) -> None:
        last = 0.0
        window = 4 * workers  # bounds the decoded images waiting in memory
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
            pending: dict[int, Future] = {}
            nxt = 0
            for i, record in enumerate(manifest.images):
                while nxt < total and nxt < i + window:
                    r = manifest.images[nxt]
                    pending[nxt] = pool.submit(_read_and_decode, root / r.path, r.sha, size,
                                               max_pixels)
                    nxt += 1
                image, reason, pixels = pending.pop(i).result()
                if image is None:
                    failed.append({"index": i, "path": record.path, "reason": reason})
                    if reason.startswith("too large") and pixels is not None:
                        old = stats["smallest_refused"]
                        stats["smallest_refused"] = pixels if old is None else min(old, pixels)
                else:
                    f.write(image.tobytes())
                    stats["largest_kept"] = max(stats["largest_kept"], pixels or 0)
                now = time.monotonic()
                if progress and (i + 1 == total or now - last >= 0.2):
                    last = now
                    progress(i + 1, total, f"decoded {i + 1:,} of {total:,} images")

    try:
        write_atomic(data_path, write)
        meta = {
            "format": CACHE_FORMAT_VERSION,
            "key": key,
            "size": size,
            "total": total,
            "count": total - len(failed),
            "failed": failed,
            "max_image_pixels": max_pixels,
            "largest_kept_pixels": stats["largest_kept"],
            "smallest_refused_pixels": stats["smallest_refused"],
            "root": manifest.root,
            "seconds": round(time.monotonic() - started, 3),
        }
        write_json_atomic(meta_path, meta)  # last: its presence marks the cache complete
    except OSError as exc:
        raise _cache_write_error(folder, exc) from None
    return meta


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"
