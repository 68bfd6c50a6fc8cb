"""Small synthetic image folders for tests: a labelled folder of coloured shapes
(make_folder), random images in class sub-folders or flat, and bad files.

Every random image has random content, so no two files share a content hash.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def random_image(width: int, height: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A width x height image of random pixels (smooth enough to compress like a photo)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(max(1, height // 4), max(1, width // 4), 3),
                         dtype=np.uint8)
    im = Image.fromarray(small, "RGB").resize((width, height), Image.Resampling.BILINEAR)
    # A little per-pixel noise so that images are distinct even when tiny.
    noisy = np.asarray(im).astype(np.int16) + rng.integers(-8, 9, size=(height, width, 3))
    im = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")
    return im if mode == "RGB" else im.convert(mode)


def encode(im: Image.Image, fmt: str, **kwargs) -> bytes:
    """The bytes of ``im`` saved in format ``fmt`` ("PNG", "JPEG", ...)."""
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".gif": "GIF",
            ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF"}


def write_image(path: Path, width: int = 24, height: int = 16, seed: int = 0) -> Path:
    """Save a random image at ``path`` in the format its extension names."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    random_image(width, height, seed).save(path, _FORMATS[path.suffix.lower()])
    return path


def make_class_folder(root: Path, counts: dict[str, int], *, width: int = 24,
                      height: int = 16, ext: str = ".png", seed: int = 0) -> Path:
    """``root/<class>/<i>.<ext>`` with ``counts[class]`` random images per class."""
    for c, (name, n) in enumerate(sorted(counts.items())):
        for i in range(n):
            write_image(Path(root) / name / f"{i:03d}{ext}", width, height,
                        seed=seed * 100_000 + c * 1000 + i)
    return Path(root)


def make_flat_folder(root: Path, n: int, *, width: int = 24, height: int = 16,
                     ext: str = ".png", seed: int = 0) -> Path:
    """``root/<i>.<ext>``: ``n`` random images and no class sub-folders."""
    for i in range(n):
        write_image(Path(root) / f"{i:03d}{ext}", width, height, seed=seed * 100_000 + i)
    return Path(root)


def make_folder(root: Path, per_class: int = 12, classes=("circles", "squares"),
                size: int = 28) -> Path:
    """Coloured shapes on noise: enough structure for the loss to move."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            a = (rng.random((size, size, 3)) * 60).astype(np.uint8)
            yy, xx = np.mgrid[:size, :size]
            cy, cx, r = rng.integers(8, size - 8, 2).tolist() + [int(rng.integers(4, 8))]
            mask = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r) if c == 0 else (
                (abs(yy - cy) < r) & (abs(xx - cx) < r))
            a[mask] = rng.integers(100, 255, 3)
            ext = ".png" if i % 2 else ".jpg"
            Image.fromarray(a).save(root / name / f"{name}-{i}{ext}")
    return root


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` (its pixel data is missing):
    opening it is cheap, decoding it would need width*height pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
            + _chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + _chunk(b"IEND", b""))


def big_blank_png(width: int, height: int) -> bytes:
    """A complete, valid 1-bit PNG of width x height black pixels: a few kilobytes that
    decode to width*height pixels (a genuine decompression bomb), made without ever
    holding the image in memory."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    parts = [comp.compress(row) for _ in range(height)]
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
            + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b""))


def make_bad_files(folder: Path) -> dict[str, str]:
    """Write one file of each kind of unusable image into ``folder``.

    Returns {file name: the start of the reason it is skipped with}. The zero-byte file and
    the broken link are caught by the scan; the others only when decoding.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    jpeg = encode(random_image(64, 48, seed=7), "JPEG", quality=90)
    png = encode(random_image(64, 48, seed=8), "PNG")
    files = {
        "empty.png": b"",
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "truncated.png": png[: len(png) // 2],
        "text.jpg": b"this is not an image, just text renamed to .jpg\n",
        "bomb.png": png_claiming_size(100_000, 100_000),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    os.symlink(folder / "does-not-exist.png", folder / "broken-link.png")
    return {
        "empty.png": "empty file",
        "truncated.jpg": "truncated or corrupt",
        "truncated.png": "truncated or corrupt",
        "text.jpg": "not an image",
        "bomb.png": "too large",
        "broken-link.png": "broken symbolic link",
    }


def make_slow_folder(root: Path, n: int = 160, size: tuple[int, int] = (1024, 768)) -> Path:
    """Large PNGs in two classes: each takes ~10 ms to decode (PNG has no reduced-size
    decoding, unlike JPEG), so a cache build lasts long enough to be interrupted."""
    w, h = size
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:h, :w]
    base = ((xx[..., None] * [1, 0, 2] + yy[..., None] * [0, 1, 1]) % 256).astype(np.uint8)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image = base + rng.integers(0, 40, (1, 1, 3), dtype=np.uint8)
        image[0, 0] = (i // 256, i % 256, 255)  # no two alike
        Image.fromarray(image).save(root / ("a", "b")[i % 2] / f"{i:04d}.png",
                                    compress_level=1)
    return root
