"""Decode every image once into a memory-mapped uint8 cache that all epochs read.

Each image is decoded by :func:`engine.data.decode.decode_image` (re-exported here, with
:class:`BadImage`); this module decodes a whole folder and keeps the result.

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
import json
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from engine.data.decode import FORMATS, BadImage, decode_image, decode_with_pixels, to_rgb
from engine.data.scan import DataError, Manifest, SkippedFile, hash_bytes, os_reason
from engine.run.io import write_atomic, write_json_atomic

__all__ = ["CACHE_FORMAT_VERSION", "FORMATS", "BadImage", "ImageCache", "Progress",
           "build_cache", "cache_paths", "decode_image", "decode_with_pixels", "to_rgb"]

CACHE_FORMAT_VERSION = 1

Progress = Callable[[int, int, str], None]


@dataclass
class ImageCache:
    """Decoded images of a folder, memory-mapped and read-only.

    ``images[i]`` is ``manifest.images[i]`` decoded and ``labels[i]`` its label (-1 when the
    image has none); images that failed are in ``manifest.skipped``, not here.
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
        image, pixels = decode_with_pixels(data, size, max_pixels)
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
