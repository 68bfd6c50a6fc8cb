"""Decode every image once into a cache that all epochs read: memory-mapped uint8 (raw), or
the same images re-encoded as JPEGs packed in one file (jpeg, engine.data.jpeg_cache).

Each image is decoded by :func:`engine.data.decode.decode_image` (re-exported here, with
:class:`BadImage`); this module decodes a whole folder and keeps the result.

Layout, inside ``cache_dir/images/``::

    <key[:24]>-<size>px-v1.u8            raw: the good images, (N, size, size, 3) uint8, C order
    <key[:24]>-<size>px-v1.json          sidecar: N, size, the full key, the images that failed
    <key[:24]>-<size>px-jpeg90-v1.jpegs  jpeg: the good images' JPEGs, one after another
    <key[:24]>-<size>px-jpeg90-v1.idx    jpeg: each JPEG's end offset in the .jpegs, uint64
    <key[:24]>-<size>px-jpeg90-v1.json   jpeg: its sidecar (as raw's, and the bytes written)

``key`` is :meth:`Manifest.key` (the folder's content), so a cache is reused for the same
content wherever the folder lives, and any change to a file makes a new cache. The data
file holds only the images that decoded (a compacted file, in manifest order): index i of
:attr:`ImageCache.images` is ``ImageCache.manifest.images[i]``, and the failures are moved
into ``manifest.skipped``. The sidecar is written last, atomically, and a cache without a
valid sidecar is never used.

A build writes ``<name>.u8.partial`` (``.jpegs.partial`` and ``.idx.partial``) and saves its
progress every few seconds in ``<name>.partial.json`` (images done, images and bytes written,
failures); an interrupted build (a stop, a crash, a full disk) is resumed from there by the
next build of the same content at the same size, format and pixel limit, and the data file
is renamed into place when complete.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import multiprocessing
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from engine.data.decode import FORMATS, BadImage, decode_image, decode_with_pixels, to_rgb
from engine.data.jpeg_cache import JPEG_QUALITY, JpegImages, encode_jpeg, index_path
from engine.data.scan import DataError, Manifest, SkippedFile, hash_bytes, os_reason
from engine.run.io import free_bytes as _free_bytes  # (a name tests replace)
from engine.run.io import write_json_atomic

__all__ = ["CACHE_FORMAT_VERSION", "CACHE_FORMATS", "FORMATS", "BadImage", "CachePlan",
           "ImageCache", "Progress", "build_cache", "cache_paths", "decode_image",
           "decode_with_pixels", "largest_fitting_size", "plan_cache", "size_text", "to_rgb"]

CACHE_FORMAT_VERSION = 1
#: How the decoded images are kept: raw uint8, JPEG-compressed, or not at all (each batch
#: decodes the original files: engine.data.file_rows).
CACHE_FORMATS = ("raw", "jpeg", "none")

Progress = Callable[[int, int, str], None]


@dataclass
class ImageCache:
    """Decoded images of a folder, memory-mapped and read-only.

    ``images[i]`` is ``manifest.images[i]`` decoded and ``labels[i]`` its label (-1 when the
    image has none); images that failed are in ``manifest.skipped``, not here. ``images``
    is a read-only np.memmap (N, size, size, 3) uint8 for the raw format; for jpeg
    (:class:`~engine.data.jpeg_cache.JpegImages`) and none
    (:class:`~engine.data.file_rows.FileImages`) an object indexed the same way that decodes
    the rows asked for.
    """

    images: np.ndarray  # (N, size, size, 3) uint8 when indexed
    labels: np.ndarray  # int64 (N,)
    manifest: Manifest
    size: int
    path: Path  # the data file (the folder itself for "none")
    format: str = "raw"  # one of CACHE_FORMATS

    def __len__(self) -> int:
        return len(self.labels)


def cache_paths(manifest: Manifest, size: int, cache_dir: Path, fmt: str = "raw"
                ) -> tuple[Path, Path]:
    """(data file, sidecar) for ``manifest`` at ``size`` px inside ``cache_dir`` in format
    ``fmt`` (raw or jpeg)."""
    jpeg = fmt == "jpeg"
    name = (f"{manifest.key()[:24]}-{size}px{f'-jpeg{JPEG_QUALITY}' if jpeg else ''}"
            f"-v{CACHE_FORMAT_VERSION}")
    folder = Path(cache_dir).expanduser() / "images"
    return folder / f"{name}.{'jpegs' if jpeg else 'u8'}", folder / f"{name}.json"


@dataclass
class CachePlan:
    """What building a cache will use, stated before decoding starts: ``bytes`` for
    ``images`` images at ``size`` px in ``folder``, where ``free`` bytes are free; ``reuse``
    when a complete cache exists already, ``resume_from`` images (``written`` bytes) already
    decoded by an interrupted build; ``workers`` decoding processes (or threads when
    ``processes`` is False: small folders, where starting processes costs more than it
    saves).

    ``format`` is the cache's (raw, jpeg, or none: no cache, nothing written) and ``reason``
    why it was chosen. A JPEG cache's size is known only once built: until then ``bytes`` is
    an estimate from ``sample`` images encoded here (0: the size is exact), and it must fit
    in :data:`ESTIMATE_SHARE` of the free space.

    ``decode_device`` names a CUDA device whose JPEG decoder races the CPU on the first
    images of a large build (engine.data.device_decode); "" decodes on the CPU only.
    """

    images: int
    size: int
    bytes: int
    folder: str
    free: int
    reuse: bool = False
    resume_from: int = 0
    workers: int = 1
    processes: bool = False
    format: str = "raw"
    reason: str = ""
    sample: int = 0
    written: int = 0
    decode_device: str = ""

    @property
    def to_write(self) -> int:
        """Bytes still to write (at most: images that fail to decode take none)."""
        if self.reuse or self.format == "none":
            return 0
        return max(0, self.bytes - self.written)

    @property
    def fits(self) -> bool:
        return self.to_write <= (self.free * ESTIMATE_SHARE if self.sample else self.free)

    def fitting_size(self, smallest: int) -> int | None:
        """This cache's side when it fits, else the largest side from ``smallest`` up that
        does (:func:`largest_fitting_size`, raw), or None when none does."""
        if self.fits:
            return self.size
        return largest_fitting_size(self.images, self.free, smallest, self.size)

    def refusal(self) -> str:
        """Why this cache cannot be built here, and what to do instead."""
        jpeg = self.format == "jpeg"
        instead = ("use a smaller cache size (--cache-size), or --cache-format none (no "
                   "cache: each batch decodes the files)" if jpeg else
                   "use a smaller cache size (--cache-size) or --cache-format jpeg (a "
                   "compressed cache, several times smaller)")
        return (f"the {'JPEG' if jpeg else 'decoded-image'} cache needs "
                f"{'about ' if self.sample else ''}{size_text(self.to_write)} but only "
                f"{size_text(self.free)} is free in {self.folder}. Free some space, choose another "
                f"cache folder with --cache-dir, or {instead}")

    def describe(self) -> str:
        where = f"{self.folder} ({size_text(self.free)} free)"
        why = f" ({self.reason})" if self.reason else ""
        if self.format == "none":
            return (f"no cache: each batch decodes its images from the original files, "
                    f"{self.images:,} images at {self.size} px an epoch{why}")
        kind = "JPEG cache" if self.format == "jpeg" else "decoded-image cache"
        if self.reuse:
            return f"reusing the {kind} of {self.images:,} images in {where}{why}"
        workers = "processes" if self.processes else "threads"
        resumed = (f", resuming after {self.resume_from:,} decoded images"
                   if self.resume_from else "")
        size = (f"about {size_text(self.bytes)} (estimated from {self.sample} images)"
                if self.sample else size_text(self.bytes))
        return (f"{kind}: {self.images:,} images at {self.size} px = {size} in {where}; "
                f"decoding on {self.workers} {workers}{resumed}{why}")


#: The share of the free space an estimated (JPEG) cache may take: room for the estimate
#: to be short.
ESTIMATE_SHARE = 0.9
#: Images encoded to estimate a JPEG cache's size.
ESTIMATE_SAMPLE = 200


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
               num_workers: int | None = None, fmt: str = "raw", reason: str = ""
               ) -> CachePlan:
    """What :func:`build_cache` would use for ``manifest`` at ``size`` px in format ``fmt``
    (nothing is written; a JPEG cache not built yet is estimated from a sample encoded
    here). ``num_workers`` decoding processes (default: every core)."""
    if fmt not in CACHE_FORMATS:
        raise ValueError(f"cache format must be one of {', '.join(CACHE_FORMATS)}; got {fmt!r}")
    total = len(manifest.images)
    workers = max(1, num_workers or os.cpu_count() or 1)
    data_path, meta_path = cache_paths(manifest, size, cache_dir, fmt)
    folder = data_path.parent
    free = _free_bytes(folder)
    if fmt == "none":
        return CachePlan(images=total, size=size, bytes=0, folder=str(folder), free=free,
                         workers=workers, format=fmt, reason=reason)
    meta = _read_sidecar(meta_path, data_path, manifest, manifest.key(), size,
                         max_image_pixels, fmt)
    state = None if meta else _read_partial(data_path, manifest.key(), size, max_image_pixels,
                                            fmt)
    resume = state["done"] if state else 0
    written = _written(state, size) if state else 0
    sample = 0
    if fmt == "raw":
        total_bytes = total * size * size * 3
    elif meta is not None:
        total_bytes = meta["bytes"]
    else:
        per_image, sample = jpeg_bytes_per_image(manifest, size, max_image_pixels)
        total_bytes = written + int(round(per_image * (total - resume)))
    return CachePlan(images=total, size=size, bytes=total_bytes, folder=str(folder),
                     free=free, reuse=meta is not None, resume_from=resume, workers=workers,
                     processes=(workers > 1 and total - resume >= PROCESS_MIN_IMAGES
                                and spawn_is_safe()), format=fmt, reason=reason,
                     sample=sample, written=written)


_ESTIMATES: dict[tuple[str, int, int], tuple[float, int]] = {}


def jpeg_bytes_per_image(manifest: Manifest, size: int, max_pixels: int,
                         sample: int | None = None) -> tuple[float, int]:
    """(mean JPEG bytes an image takes at ``size`` px, images that mean is from): an evenly
    spread sample of :data:`ESTIMATE_SAMPLE` images of the folder, decoded and encoded as
    the JPEG cache would (remembered for the process: a plan asks more than once)."""
    sample = sample or ESTIMATE_SAMPLE
    key = (manifest.key(), size, max_pixels)
    if key in _ESTIMATES and _ESTIMATES[key][1] >= min(sample, len(manifest.images)):
        return _ESTIMATES[key]
    images = manifest.images
    step = max(1, len(images) // sample)
    root = Path(manifest.root)
    sizes = []
    for record in images[::step][:sample]:
        image, _, _ = _read_and_decode(root / record.path, record.sha, size, max_pixels)
        if image is not None:
            sizes.append(len(encode_jpeg(image)))
    # No image decodes: a tenth of raw, about what photographs take at 64-96 px.
    result = (float(np.mean(sizes)) if sizes else size * size * 3 / 10, len(sizes))
    _ESTIMATES[key] = result
    return result


def _written(state: dict[str, Any], size: int) -> int:
    """Bytes of data an interrupted build had written."""
    return state.get("written", state["count"] * size * size * 3)


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
                announce: Callable[[CachePlan], None] | None = None, fmt: str = "raw",
                plan: CachePlan | None = None, decode_device: str = "") -> ImageCache:
    """The decoded cache of ``manifest`` at ``size`` px in format ``fmt`` (raw or jpeg),
    built now unless a complete one made from the same content (and giving the same result
    for ``max_image_pixels``) exists. ``plan``: its :func:`plan_cache`, when already made.

    ``announce(plan)`` is told what the build will use (:class:`CachePlan`: size, folder,
    free space, workers) before anything is decoded. Decoding runs on ``num_workers``
    processes (default: every core; threads for small folders) and streams the images to
    disk in manifest order, so memory use does not grow with the folder. Each file is
    re-read and its hash compared with the manifest's: a file changed or removed since the
    scan is skipped with that reason. An interrupted build keeps what it decoded (saved
    every few seconds) and the next build of the same content resumes there.
    ``progress(done, total, message)`` is called at most five times a second. With
    ``decode_device`` (a CUDA device) its JPEG decoder races the CPU on the first images
    of a large folder and the faster decodes the rest (the sidecar's ``decoder`` says how
    it went).

    Raises :class:`DataError` when the cache folder cannot be written (read-only, no space).
    """
    if fmt not in ("raw", "jpeg"):
        raise ValueError(f"build_cache builds a raw or jpeg cache, not {fmt!r}")
    data_path, meta_path = cache_paths(manifest, size, cache_dir, fmt)
    key = manifest.key()
    if plan is None or (plan.format, plan.size) != (fmt, size):
        plan = plan_cache(manifest, size, cache_dir, max_image_pixels=max_image_pixels,
                          num_workers=num_workers, fmt=fmt)
    if decode_device:
        import torch  # (not at the top: decoding processes import this module)

        from engine.data.device_decode import device_decode_available

        if device_decode_available(torch.device(decode_device)):
            plan = dataclasses.replace(plan, decode_device=decode_device)
    if announce:
        announce(plan)
    meta = _read_sidecar(meta_path, data_path, manifest, key, size, max_image_pixels, fmt)
    if meta is None:
        meta = _build(manifest, size, key, data_path, meta_path, max_image_pixels, plan,
                      progress)
    elif progress:
        n = len(manifest.images)
        progress(n, n, f"reusing the decoded cache of {n:,} images")
    failed = [SkippedFile(f["path"], f["reason"]) for f in meta["failed"]]
    good = manifest.with_skipped(failed)
    images = (JpegImages.open(data_path, meta["count"], size) if fmt == "jpeg"
              else _open_images(data_path, meta["count"], size))
    return ImageCache(images=images,  # type: ignore[arg-type]
                      labels=good.labels(), manifest=good, size=size, path=data_path,
                      format=fmt)


def _open_images(path: Path, count: int, size: int) -> np.ndarray:
    if count == 0:  # mmap cannot map an empty file
        empty = np.zeros((0, size, size, 3), dtype=np.uint8)
        empty.flags.writeable = False
        return empty
    return np.memmap(path, dtype=np.uint8, mode="r", shape=(count, size, size, 3))


def _read_sidecar(meta_path: Path, data_path: Path, manifest: Manifest, key: str, size: int,
                  max_pixels: int, fmt: str = "raw") -> dict[str, Any] | None:
    """The sidecar of a complete, usable cache, or None (then the cache is rebuilt)."""
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        valid = (meta["format"] == CACHE_FORMAT_VERSION and meta["key"] == key
                 and meta["size"] == size and meta["total"] == len(manifest.images)
                 and meta["count"] == meta["total"] - len(meta["failed"])
                 and meta.get("encoding", "raw") == fmt)
        if valid and fmt == "jpeg":
            valid = (data_path.stat().st_size == meta["bytes"]
                     and index_path(data_path).stat().st_size == meta["count"] * 8)
        elif valid:
            valid = data_path.stat().st_size == meta["count"] * size * size * 3
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


def _partial_index(data_path: Path) -> Path:
    """The index of a JPEG cache's build in progress."""
    index = index_path(data_path)
    return index.with_name(index.name + ".partial")


def _read_partial(data_path: Path, key: str, size: int, max_pixels: int, fmt: str = "raw"
                  ) -> dict[str, Any] | None:
    """The saved progress of an interrupted build of the same content, size, format and
    pixel limit whose data file (and index) holds at least what the progress says, or
    None."""
    partial, progress_path = _partial_paths(data_path)
    try:
        with open(progress_path, encoding="utf-8") as f:
            state = json.load(f)
        valid = (state["format"] == CACHE_FORMAT_VERSION and state["key"] == key
                 and state["size"] == size and state["max_image_pixels"] == max_pixels
                 and state.get("encoding", "raw") == fmt
                 and 0 <= state["count"] <= state["done"]
                 and partial.stat().st_size >= _written(state, size))
        if valid and fmt == "jpeg":
            valid = _partial_index(data_path).stat().st_size >= state["count"] * 8
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state if valid else None


def _cache_write_error(folder: Path, exc: OSError) -> DataError:
    reasons = {errno.ENOSPC: "the disk is full",
               getattr(errno, "EDQUOT", -1): "the disk quota is exceeded",
               errno.EROFS: "the folder is read-only", errno.EACCES: "permission denied",
               errno.EPERM: "permission denied"}
    what = reasons.get(exc.errno or 0, exc.strerror or str(exc))
    return DataError(f"cannot write the decoded-image cache in {folder}: {what}. Free some "
                     "space there, or choose another cache folder with --cache-dir (or the "
                     "CONTRASTIVE_EXPLORER_CACHE environment variable)")


def _decode_one(path: Path, sha: str, size: int, max_pixels: int, jpeg: bool
                ) -> tuple[bytes | None, str, int | None]:
    """(the bytes the cache keeps: RGB, or JPEG when ``jpeg``; or None, reason, pixels) of
    one manifest entry."""
    image, reason, pixels = _read_and_decode(path, sha, size, max_pixels)
    if image is None:
        return None, reason, pixels
    return (encode_jpeg(image) if jpeg else image.tobytes()), reason, pixels


def _decode_chunk(entries: list[tuple[str, str]], size: int, max_pixels: int, jpeg: bool
                  ) -> list[tuple[bytes | None, str, int | None]]:
    """Decode a chunk of (path, sha) in a decoding process: :func:`_decode_one` each."""
    return [_decode_one(Path(path), sha, size, max_pixels, jpeg) for path, sha in entries]


def _decoded(root: Path, records: list, size: int, max_pixels: int, plan: CachePlan,
             on_decided: Callable[[Any], None] | None = None
             ) -> Iterator[tuple[bytes | None, str, int | None]]:
    """The decoded (and for a JPEG cache encoded) ``records``, in order: on the CPU
    (:func:`_decoded_on_cpu`), or, with ``plan.decode_device`` and enough images to make
    the race worth it, the CPU and that device racing on the first ones and the faster
    decoding the rest (``on_decided`` hears the outcome)."""
    if plan.decode_device:
        import torch

        from engine.data import device_decode
    if not plan.decode_device or len(records) < 4 * device_decode.race_sample(len(records)):
        yield from _decoded_on_cpu(root, records, size, max_pixels, plan)
        return
    device = torch.device(plan.decode_device)
    jpeg = plan.format == "jpeg"

    def on_cpu(part: Sequence) -> Iterator[tuple[bytes | None, str, int | None]]:
        return _decoded_on_cpu(root, list(part), size, max_pixels, plan)

    def on_device(part: Sequence) -> list[tuple[bytes | None, str, int | None]]:
        decoded = device_decode.decode_batch_on_device(
            [(root / r.path, r.sha) for r in part], size, max_pixels, device,
            lambda path, sha: _decode_one(path, sha, size, max_pixels, False))
        if not jpeg:
            return decoded
        return [(encode_jpeg(np.frombuffer(data, np.uint8).reshape(size, size, 3))
                 if data is not None else None, reason, pixels)
                for data, reason, pixels in decoded]

    yield from device_decode.raced(records, device_decode.race_sample(len(records)), on_cpu,
                                   on_device, piece=device_decode.DEVICE_BATCH,
                                   on_decided=on_decided)


def _decoded_on_cpu(root: Path, records: list, size: int, max_pixels: int, plan: CachePlan
                    ) -> Iterator[tuple[bytes | None, str, int | None]]:
    """The decoded (and for a JPEG cache encoded) ``records``, in order: on processes
    (chunks of :data:`CHUNK`) or threads, with a bounded number of them waiting in memory."""
    jpeg = plan.format == "jpeg"
    if plan.processes:
        context = multiprocessing.get_context("spawn")  # no fork of a process with threads
        chunks = [records[i:i + CHUNK] for i in range(0, len(records), CHUNK)]
        with ProcessPoolExecutor(max_workers=plan.workers, mp_context=context) as pool:
            pending: deque[Future] = deque()
            for chunk in chunks:
                pending.append(pool.submit(_decode_chunk, [(str(root / r.path), r.sha)
                                                           for r in chunk], size, max_pixels,
                                           jpeg))
                if len(pending) >= 2 * plan.workers:
                    yield from pending.popleft().result()
            while pending:
                yield from pending.popleft().result()
        return
    with ThreadPoolExecutor(max_workers=plan.workers, thread_name_prefix="decode") as pool:
        waiting: deque[Future] = deque()
        for r in records:
            waiting.append(pool.submit(_decode_one, root / r.path, r.sha, size, max_pixels,
                                       jpeg))
            if len(waiting) >= 4 * plan.workers:
                yield waiting.popleft().result()
        while waiting:
            yield waiting.popleft().result()


def _open_partial(path: Path, offset: int) -> IO[bytes]:
    """The data file of a build in progress, cut to ``offset`` bytes and positioned there."""
    f = open(path, "r+b" if offset and path.exists() else "wb")
    f.truncate(offset)
    f.seek(offset)
    return f


def _build(manifest: Manifest, size: int, key: str, data_path: Path, meta_path: Path,
           max_pixels: int, plan: CachePlan, progress: Progress | None) -> dict[str, Any]:
    """Decode ``manifest`` into ``data_path`` (resuming an interrupted build) and write its
    sidecar; return the sidecar. A JPEG cache also writes its index of end offsets."""
    folder = data_path.parent
    total = len(manifest.images)
    fmt = plan.format
    jpeg = fmt == "jpeg"
    partial, progress_path = _partial_paths(data_path)
    partial_index = _partial_index(data_path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        meta_path.unlink(missing_ok=True)  # an old sidecar must never describe the new data
    except OSError as exc:
        raise _cache_write_error(folder, exc) from None
    if not plan.fits:
        raise DataError(plan.refusal())
    state = (_read_partial(data_path, key, size, max_pixels, fmt) if plan.resume_from
             else None)
    state = state or {"done": 0, "count": 0, "failed": [], "largest_kept": 0,
                      "smallest_refused": None}
    done, count, failed = state["done"], state["count"], list(state["failed"])
    written = _written(state, size) if state["count"] else 0
    stats = {"largest_kept": state["largest_kept"],
             "smallest_refused": state["smallest_refused"]}
    root = Path(manifest.root)
    started = time.monotonic()

    def save_progress(f: IO[bytes], index: IO[bytes] | None) -> None:
        for out in (f, index) if index is not None else (f,):
            out.flush()
            os.fsync(out.fileno())
        write_json_atomic(progress_path, {
            "format": CACHE_FORMAT_VERSION, "encoding": fmt, "key": key, "size": size,
            "max_image_pixels": max_pixels, "done": done, "count": count, "written": written,
            "failed": failed, "largest_kept": stats["largest_kept"],
            "smallest_refused": stats["smallest_refused"]})

    index: IO[bytes] | None = None
    try:
        f = _open_partial(partial, written)
        if jpeg:
            index = _open_partial(partial_index, count * 8)
    except OSError as exc:
        raise _cache_write_error(folder, exc) from None
    finished = False
    try:
        last_report = last_save = 0.0
        records = manifest.images[done:]
        race: list[str] = []  # how the CPU and the device did, once decided
        decoded = _decoded(root, records, size, max_pixels, plan,
                           on_decided=lambda outcome: race.append(outcome.describe()))
        for record, (data, reason, pixels) in zip(records, decoded):
            if data is None:
                failed.append({"index": done, "path": record.path, "reason": reason})
                if reason.startswith("too large") and pixels is not None:
                    old = stats["smallest_refused"]
                    stats["smallest_refused"] = pixels if old is None else min(old, pixels)
            else:
                f.write(data)
                written += len(data)
                if index is not None:
                    index.write(np.uint64(written).tobytes())
                count += 1
                stats["largest_kept"] = max(stats["largest_kept"], pixels or 0)
            done += 1
            now = time.monotonic()
            if progress and (done == total or now - last_report >= 0.2):
                last_report = now
                progress(done, total, f"decoded {done:,} of {total:,} images"
                         + (f" ({race[0]})" if race else ""))
            if now - last_save >= SAVE_EVERY_S:
                last_save = now
                save_progress(f, index)
        for out in (f, index) if index is not None else (f,):
            out.flush()
            os.fsync(out.fileno())
            out.close()
        if index is not None:
            os.replace(partial_index, index_path(data_path))
        os.replace(partial, data_path)
        meta = {
            "format": CACHE_FORMAT_VERSION,
            "encoding": fmt,
            "key": key,
            "size": size,
            "total": total,
            "count": count,
            "bytes": written,
            "failed": failed,
            "max_image_pixels": max_pixels,
            "largest_kept_pixels": stats["largest_kept"],
            "smallest_refused_pixels": stats["smallest_refused"],
            "root": manifest.root,
            "seconds": round(time.monotonic() - started, 3),
            "resumed_from": plan.resume_from,
        }
        if race:
            meta["decoder"] = race[0]
        if jpeg:
            meta["quality"] = JPEG_QUALITY
        write_json_atomic(meta_path, meta)  # last: its presence marks the cache complete
        progress_path.unlink(missing_ok=True)
        finished = True
    except OSError as exc:
        raise _cache_write_error(folder, exc) from None
    finally:
        if not finished and not f.closed:
            try:  # keep what was decoded, for the next build to resume
                save_progress(f, index)
                f.close()
                if index is not None:
                    index.close()
            except OSError:
                pass
    return meta


def size_text(n: int) -> str:
    """Bytes for people: "1.2 GB", "35.0 MB"."""
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"
