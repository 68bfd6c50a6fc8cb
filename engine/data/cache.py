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
valid sidecar is never used.

A build writes ``<name>.u8.partial`` and saves its progress every few seconds in
``<name>.partial.json`` (images done, images written, failures); an interrupted build (a
stop, a crash, a full disk) is resumed from there by the next build of the same content at
the same size and pixel limit, and the data file is renamed into place when complete.
"""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from engine.data.decode import FORMATS, BadImage, decode_image, decode_with_pixels, to_rgb
from engine.data.scan import DataError, Manifest, SkippedFile, hash_bytes, os_reason
from engine.run.io import write_json_atomic

__all__ = ["CACHE_FORMAT_VERSION", "FORMATS", "BadImage", "CachePlan", "ImageCache",
           "Progress", "build_cache", "cache_paths", "decode_image", "decode_with_pixels",
           "largest_fitting_size", "plan_cache", "to_rgb"]

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


@dataclass
class CachePlan:
    """What building a cache will use, stated before decoding starts: ``bytes`` for
    ``images`` images at ``size`` px in ``folder``, where ``free`` bytes are free; ``reuse``
    when a complete cache exists already, ``resume_from`` images already decoded by an
    interrupted build; ``workers`` decoding processes (or threads when ``processes`` is
    False: small folders, where starting processes costs more than it saves)."""

    images: int
    size: int
    bytes: int
    folder: str
    free: int
    reuse: bool = False
    resume_from: int = 0
    workers: int = 1
    processes: bool = False

    @property
    def to_write(self) -> int:
        """Bytes still to write (at most: images that fail to decode take none)."""
        if self.reuse:
            return 0
        return self.bytes - self.resume_from * self.size * self.size * 3

    @property
    def fits(self) -> bool:
        return self.to_write <= self.free

    def fitting_size(self, smallest: int) -> int | None:
        """This cache's side when it fits, else the largest side from ``smallest`` up that
        does (:func:`largest_fitting_size`), or None when none does."""
        if self.fits:
            return self.size
        return largest_fitting_size(self.images, self.free, smallest, self.size)

    def describe(self) -> str:
        where = f"{self.folder} ({_gb(self.free)} free)"
        if self.reuse:
            return f"reusing the decoded cache of {self.images:,} images in {where}"
        kind = "processes" if self.processes else "threads"
        resumed = (f", resuming after {self.resume_from:,} decoded images"
                   if self.resume_from else "")
        return (f"decoded-image cache: {self.images:,} images at {self.size} px = "
                f"{_gb(self.bytes)} in {where}; decoding on {self.workers} {kind}{resumed}")


#: Below this many images to decode, threads decode. Pillow releases the GIL while it
#: decodes and resizes, so threads scale too: 6,000 JPEGs of 200-400 px to 64 px on this
#: project's 2-core machine, 1,340 images/s on one thread, 2,243 on two threads, 2,279 on
#: two processes; processes start in about a second each and pay off on large folders and
#: many cores, where the per-image Python work under the GIL adds up.
PROCESS_MIN_IMAGES = 20_000
#: Images a decoding process handles per task.
CHUNK = 32
#: How often an interrupted build's progress is saved, in seconds.
SAVE_EVERY_S = 2.0


def plan_cache(manifest: Manifest, size: int, cache_dir: Path, *, max_image_pixels: int,
               num_workers: int | None = None) -> CachePlan:
    """What :func:`build_cache` would use for ``manifest`` at ``size`` px (nothing is
    written). ``num_workers`` decoding processes (default: every core)."""
    data_path, meta_path = cache_paths(manifest, size, cache_dir)
    total = len(manifest.images)
    folder = data_path.parent
    free = _free_bytes(folder)
    reuse = _read_sidecar(meta_path, data_path, manifest, manifest.key(), size,
                          max_image_pixels) is not None
    state = None if reuse else _read_partial(data_path, manifest.key(), size, max_image_pixels)
    resume = state["done"] if state else 0
    workers = max(1, num_workers or os.cpu_count() or 1)
    return CachePlan(images=total, size=size, bytes=total * size * size * 3, folder=str(folder),
                     free=free, reuse=reuse, resume_from=resume, workers=workers,
                     processes=(workers > 1 and total - resume >= PROCESS_MIN_IMAGES
                                and spawn_is_safe()))


def spawn_is_safe() -> bool:
    """Whether decoding processes can be started with "spawn": each imports the main
    module again, which is harmless for ``python -m engine``, the console scripts and any
    script whose work sits under ``if __name__ == "__main__":``, but would run an unguarded
    script's top level again. Such a script gets threads instead."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or path is None or getattr(main, "__spec__", None) is not None:
        return True  # interactive, or run with -m (the module is imported by name)
    try:
        source = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return "__name__" in source and "__main__" in source


def largest_fitting_size(images: int, free: int, low: int, high: int,
                         share: float = 0.9) -> int | None:
    """The largest cache side from ``low`` to ``high`` px whose cache of ``images`` images
    takes at most ``share`` of ``free`` bytes, or None when not even ``low`` fits."""
    budget = free * share
    for side in range(high, low - 1, -1):
        if images * side * side * 3 <= budget:
            return side
    return None


def build_cache(manifest: Manifest, size: int, cache_dir: Path, *, max_image_pixels: int,
                num_workers: int | None = None, progress: Progress | None = None,
                announce: Callable[[CachePlan], None] | None = None) -> ImageCache:
    """The decoded cache of ``manifest`` at ``size`` px, built now unless a complete one
    made from the same content (and giving the same result for ``max_image_pixels``) exists.

    ``announce(plan)`` is told what the build will use (:class:`CachePlan`: size, folder,
    free space, workers) before anything is decoded. Decoding runs on ``num_workers``
    processes (default: every core; threads for small folders) and streams the images to
    disk in manifest order, so memory use does not grow with the folder. Each file is
    re-read and its hash compared with the manifest's: a file changed or removed since the
    scan is skipped with that reason. An interrupted build keeps what it decoded (saved
    every few seconds) and the next build of the same content resumes there.
    ``progress(done, total, message)`` is called at most five times a second.

    Raises :class:`DataError` when the cache folder cannot be written (read-only, no space).
    """
    data_path, meta_path = cache_paths(manifest, size, cache_dir)
    key = manifest.key()
    plan = plan_cache(manifest, size, cache_dir, max_image_pixels=max_image_pixels,
                      num_workers=num_workers)
    if announce:
        announce(plan)
    meta = _read_sidecar(meta_path, data_path, manifest, key, size, max_image_pixels)
    if meta is None:
        meta = _build(manifest, size, key, data_path, meta_path, max_image_pixels, plan,
                      progress)
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


def _partial_paths(data_path: Path) -> tuple[Path, Path]:
    """(data, progress) files of a build in progress."""
    return (data_path.with_name(data_path.name + ".partial"),
            data_path.with_name(data_path.stem + ".partial.json"))


def _read_partial(data_path: Path, key: str, size: int, max_pixels: int
                  ) -> dict[str, Any] | None:
    """The saved progress of an interrupted build of the same content, size and pixel
    limit whose data file holds at least what the progress says, or None."""
    partial, progress_path = _partial_paths(data_path)
    try:
        with open(progress_path, encoding="utf-8") as f:
            state = json.load(f)
        valid = (state["format"] == CACHE_FORMAT_VERSION and state["key"] == key
                 and state["size"] == size and state["max_image_pixels"] == max_pixels
                 and 0 <= state["count"] <= state["done"]
                 and partial.stat().st_size >= state["count"] * size * size * 3)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state if valid else None


def _free_bytes(folder: Path) -> int:
    """Free bytes where ``folder`` is (or would be: its nearest existing parent)."""
    for path in (folder, *folder.parents):
        try:
            return shutil.disk_usage(path).free
        except OSError:
            continue
    return 0


def _cache_write_error(folder: Path, exc: OSError) -> DataError:
    reasons = {errno.ENOSPC: "the disk is full",
               getattr(errno, "EDQUOT", -1): "the disk quota is exceeded",
               errno.EROFS: "the folder is read-only", errno.EACCES: "permission denied",
               errno.EPERM: "permission denied"}
    what = reasons.get(exc.errno or 0, exc.strerror or str(exc))
    return DataError(f"cannot write the decoded-image cache in {folder}: {what}. Free some "
                     "space there, or choose another cache folder with --cache-dir (or the "
                     "CONTRASTIVE_EXPLORER_CACHE environment variable)")


def _decode_chunk(entries: list[tuple[str, str]], size: int, max_pixels: int
                  ) -> list[tuple[bytes | None, str, int | None]]:
    """Decode a chunk of (path, sha) in a decoding process: (RGB bytes or None, reason,
    pixels) each."""
    out = []
    for path, sha in entries:
        image, reason, pixels = _read_and_decode(Path(path), sha, size, max_pixels)
        out.append((image.tobytes() if image is not None else None, reason, pixels))
    return out


def _decoded(root: Path, records: list, size: int, max_pixels: int, plan: CachePlan
             ) -> Iterator[tuple[bytes | None, str, int | None]]:
    """The decoded ``records``, in order: on processes (chunks of :data:`CHUNK`) or threads,
    with a bounded number of decoded images waiting in memory."""
    if plan.processes:
        context = multiprocessing.get_context("spawn")  # no fork of a process with threads
        chunks = [records[i:i + CHUNK] for i in range(0, len(records), CHUNK)]
        with ProcessPoolExecutor(max_workers=plan.workers, mp_context=context) as pool:
            pending: deque[Future] = deque()
            for chunk in chunks:
                pending.append(pool.submit(_decode_chunk, [(str(root / r.path), r.sha)
                                                           for r in chunk], size, max_pixels))
                if len(pending) >= 2 * plan.workers:
                    yield from pending.popleft().result()
            while pending:
                yield from pending.popleft().result()
        return
    with ThreadPoolExecutor(max_workers=plan.workers, thread_name_prefix="decode") as pool:
        waiting: deque[Future] = deque()
        for r in records:
            waiting.append(pool.submit(_read_and_decode, root / r.path, r.sha, size, max_pixels))
            if len(waiting) >= 4 * plan.workers:
                image, reason, pixels = waiting.popleft().result()
                yield (image.tobytes() if image is not None else None, reason, pixels)
        while waiting:
            image, reason, pixels = waiting.popleft().result()
            yield (image.tobytes() if image is not None else None, reason, pixels)


def _open_partial(path: Path, offset: int) -> IO[bytes]:
    """The data file of a build in progress, cut to ``offset`` bytes and positioned there."""
    f = open(path, "r+b" if offset and path.exists() else "wb")
    f.truncate(offset)
    f.seek(offset)
    return f


def _build(manifest: Manifest, size: int, key: str, data_path: Path, meta_path: Path,
           max_pixels: int, plan: CachePlan, progress: Progress | None) -> dict[str, Any]:
    """Decode ``manifest`` into ``data_path`` (resuming an interrupted build) and write its
    sidecar; return the sidecar."""
    folder = data_path.parent
    total = len(manifest.images)
    image_bytes = size * size * 3
    partial, progress_path = _partial_paths(data_path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        meta_path.unlink(missing_ok=True)  # an old sidecar must never describe the new data
    except OSError as exc:
        raise _cache_write_error(folder, exc) from None
    if not plan.fits:
        raise DataError(
            f"the decoded-image cache needs {_gb(plan.to_write)} but only {_gb(plan.free)} is "
            f"free in {folder}. Free some space, choose another cache folder with --cache-dir, "
            "or use a smaller cache size (--cache-size)")
    state = _read_partial(data_path, key, size, max_pixels) if plan.resume_from else None
    state = state or {"done": 0, "count": 0, "failed": [], "largest_kept": 0,
                      "smallest_refused": None}
    done, count, failed = state["done"], state["count"], list(state["failed"])
    stats = {"largest_kept": state["largest_kept"],
             "smallest_refused": state["smallest_refused"]}
    root = Path(manifest.root)
    started = time.monotonic()

    def save_progress(f: IO[bytes]) -> None:
        f.flush()
        os.fsync(f.fileno())
        write_json_atomic(progress_path, {
            "format": CACHE_FORMAT_VERSION, "key": key, "size": size,
            "max_image_pixels": max_pixels, "done": done, "count": count, "failed": failed,
            "largest_kept": stats["largest_kept"],
            "smallest_refused": stats["smallest_refused"]})

    try:
        f = _open_partial(partial, count * image_bytes)
    except OSError as exc:
        raise _cache_write_error(folder, exc) from None
    finished = False
    try:
        last_report = last_save = 0.0
        records = manifest.images[done:]
        for record, (image, reason, pixels) in zip(records, _decoded(root, records, size,
                                                                     max_pixels, plan)):
            if image is None:
                failed.append({"index": done, "path": record.path, "reason": reason})
                if reason.startswith("too large") and pixels is not None:
                    old = stats["smallest_refused"]
                    stats["smallest_refused"] = pixels if old is None else min(old, pixels)
            else:
                f.write(image)
                count += 1
                stats["largest_kept"] = max(stats["largest_kept"], pixels or 0)
            done += 1
            now = time.monotonic()
            if progress and (done == total or now - last_report >= 0.2):
                last_report = now
                progress(done, total, f"decoded {done:,} of {total:,} images")
            if now - last_save >= SAVE_EVERY_S:
                last_save = now
                save_progress(f)
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(partial, data_path)
        meta = {
            "format": CACHE_FORMAT_VERSION,
            "key": key,
            "size": size,
            "total": total,
            "count": count,
            "failed": failed,
            "max_image_pixels": max_pixels,
            "largest_kept_pixels": stats["largest_kept"],
            "smallest_refused_pixels": stats["smallest_refused"],
            "root": manifest.root,
            "seconds": round(time.monotonic() - started, 3),
            "resumed_from": plan.resume_from,
        }
        write_json_atomic(meta_path, meta)  # last: its presence marks the cache complete
        progress_path.unlink(missing_ok=True)
        finished = True
    except OSError as exc:
        raise _cache_write_error(folder, exc) from None
    finally:
        if not finished and not f.closed:
            try:  # keep what was decoded, for the next build to resume
                save_progress(f)
                f.close()
            except OSError:
                pass
    return meta


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"
