"""Batches of decoded images from the cache, in a seeded order, prefetched in a thread."""

from __future__ import annotations

import os
import statistics
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from engine.data.cache import ImageCache
from engine.data.jpeg_cache import decode_jpeg_cuda
from engine.data.scan import Manifest


def typical_side(manifest: Manifest, sample: int = 50) -> int | None:
    """Median shorter side of up to ``sample`` evenly spaced images (headers only)."""
    images = manifest.images
    if not images:
        return None
    step = max(1, len(images) // sample)
    sides = []
    for record in images[::step][:sample]:
        try:
            with Image.open(Path(manifest.root) / record.path) as im:
                sides.append(min(im.size))
        except Exception:  # unreadable files are reported by the cache, not here
            continue
    return int(statistics.median(sides)) if sides else None


class BatchLoader:
    """Index batches of the cache for step ``b`` of epoch ``e``.

    The order of epoch ``e`` is a permutation drawn from ``seed`` and ``e`` alone, so a run
    resumed at any step sees exactly the batches it would have seen. The last incomplete
    batch of an epoch is dropped (contrastive losses depend on the batch size). While the
    model trains on one batch, a thread gathers the next one from the memory-mapped cache
    (and pins it for a fast copy to the GPU). A JPEG cache's batch is decoded there too, on
    ``decode_workers`` threads (default: every core), or on the GPU in one batched call when
    the device is CUDA; with no cache (format none) the threads decode the files. Every
    format gives the same (N, 3, S, S) uint8 batch of the same rows.

    With several processes (``world_size`` > 1) ``batch_size`` is the global batch: every
    process draws the same permutation and takes its own contiguous share of each global
    batch (rows ``offset`` to ``offset + local_batch_size``), so the shares of one step are
    disjoint and together exactly the batch a single process would train on, in the same
    order, and the order still depends only on the seed and the epoch (a run resumes with
    any number of processes).
    """

    def __init__(self, cache: ImageCache, batch_size: int, *, seed: int,
                 device: torch.device, prefetch: bool = True, rank: int = 0,
                 world_size: int = 1, decode_workers: int | None = None) -> None:
        n = len(cache.labels)
        if n < batch_size:
            raise ValueError(f"{n} images cannot fill a batch of {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size or batch_size % world_size:
            raise ValueError(f"a batch of {batch_size} cannot be shared by {world_size} "
                             f"processes (rank {rank})")
        self.cache = cache
        self.batch_size = batch_size
        self.local_batch_size = batch_size // world_size
        self.offset = rank * self.local_batch_size  # first row of this process's share
        self.seed = seed
        self.device = device
        self.steps_per_epoch = n // batch_size
        self._orders: dict[int, np.ndarray] = {}
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="prefetch") if prefetch else None
        self._next: tuple[tuple[int, int], Future] | None = None
        # anything with images and labels can be read as a raw cache
        self.format = getattr(cache, "format", "raw")
        #: A JPEG cache on a CUDA device is decoded there (batches arrive NCHW on it).
        self.gpu_decode = self.format == "jpeg" and device.type == "cuda"
        self.decode_workers = max(1, decode_workers or os.cpu_count() or 1)
        self._decoders = (ThreadPoolExecutor(self.decode_workers, thread_name_prefix="decode")
                          if self.format != "raw" and not self.gpu_decode
                          and self.decode_workers > 1 else None)

    def order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._orders = {epoch: torch.randperm(len(self.cache.labels), generator=g).numpy()}
        return self._orders[epoch]

    def global_indices(self, epoch: int, batch: int) -> np.ndarray:
        """The cache rows of global batch ``batch`` of ``epoch`` (every process's share)."""
        order = self.order(epoch)
        # Sorted: the memory map is read front to back; order within a batch is irrelevant.
        return np.sort(order[batch * self.batch_size:(batch + 1) * self.batch_size])

    def indices(self, epoch: int, batch: int) -> np.ndarray:
        """The cache rows of this process's share of that batch (all of it when alone)."""
        rows = self.global_indices(epoch, batch)
        return rows[self.offset:self.offset + self.local_batch_size]

    def _gather(self, epoch: int, batch: int) -> torch.Tensor:
        rows = self.indices(epoch, batch)
        if self.gpu_decode:
            return decode_jpeg_cuda(self.cache.images, rows, self.device)  # (N, 3, S, S)
        if self.format == "raw":
            images = torch.from_numpy(np.ascontiguousarray(self.cache.images[rows]))
        else:  # decoded now: a JPEG cache, or the files themselves
            images = torch.from_numpy(self.cache.images.decode_rows(  # type: ignore[attr-defined]
                rows, self._decoders, self.decode_workers))
        if self.device.type == "cuda":
            images = images.pin_memory()
        return images  # (N, S, S, 3) uint8 on the CPU

    def batch(self, epoch: int, batch: int) -> torch.Tensor:
        """uint8 (N, 3, S, S) on the device (a channels-last view of the NHWC cache)."""
        if self._next is not None and self._next[0] == (epoch, batch):
            images = self._next[1].result()
        else:
            images = self._gather(epoch, batch)
        if self._pool is not None:
            nxt = (epoch, batch + 1) if batch + 1 < self.steps_per_epoch else (epoch + 1, 0)
            self._next = (nxt, self._pool.submit(self._gather, *nxt))
        if self.gpu_decode:
            return images
        images = images.to(self.device, non_blocking=True)
        return images.permute(0, 3, 1, 2)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._decoders is not None:
            self._decoders.shutdown(wait=True, cancel_futures=True)
            self._decoders = None
