"""How much the decoded-image cache saves, compared with decoding JPEGs every epoch.

Builds a folder of N JPEGs in a temporary folder, then measures (median of --repeats runs):

a) decoding the folder with PIL and resizing each image, every epoch: what a torchvision
   ImageFolder pipeline does per epoch (decode + Resize + CenterCrop only, in one process);
b) building the cache once (engine.data.cache.build_cache, every core, then 1 thread), and
   reusing it;
c) reading random batches of 64 from the cache's memory map into a torch uint8 tensor.

Run:  .venv/bin/python benchmarks/bench_data.py [--n 512] [--size 64]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from bench_results import record
from PIL import Image
from torchvision import datasets, transforms

from engine.data.cache import build_cache
from engine.data.scan import scan_folder
from engine.data.scan_index import RACY_SECONDS


def make_jpegs(folder: Path, n: int, width: int, height: int, classes: int = 4) -> None:
    """``n`` photo-like JPEGs (smooth colour fields plus grain) in ``classes`` sub-folders."""
    rng = np.random.default_rng(0)
    for i in range(n):
        coarse = rng.integers(0, 256, size=(height // 16, width // 16, 3), dtype=np.uint8)
        im = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
        grain = rng.integers(-12, 13, size=(height, width, 3))
        pixels = np.clip(np.asarray(im).astype(np.int16) + grain, 0, 255).astype(np.uint8)
        sub = folder / f"class{i % classes}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(sub / f"{i:05d}.jpg", quality=90)


def median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def baseline_epoch(folder: Path, size: int) -> None:
    """One epoch of torchvision's ImageFolder with Resize + CenterCrop (no augmentation)."""
    tf = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size),
                             transforms.PILToTensor()])
    for image, _ in datasets.ImageFolder(str(folder), transform=tf):
        assert image.shape == (3, size, size)


def read_batches(images: np.ndarray, batch: int, seed: int = 0) -> int:
    """Read one epoch of random batches (indices sorted within a batch, as the loader
    does) into torch uint8 tensors; return the number of images read."""
    order = np.random.default_rng(seed).permutation(len(images))
    read = 0
    for start in range(0, len(order) - batch + 1, batch):
        idx = np.sort(order[start:start + batch])
        tensor = torch.from_numpy(np.ascontiguousarray(images[idx]))
        read += tensor.shape[0]
    return read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=512, help="number of JPEGs")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--size", type=int, default=64, help="cache size in pixels")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None, help="decode threads")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        folder = Path(tmp) / "jpegs"
        make_jpegs(folder, args.n, args.width, args.height)
        manifest = scan_folder(folder)
        n = len(manifest.images)
        mb = sum(r.size for r in manifest.images) / 1e6
        print(f"{n} JPEGs of {args.width}x{args.height} ({mb:.1f} MB), cache {args.size} px, "
              f"{os.cpu_count()} CPU cores, median of {args.repeats} runs\n")

        scan = median_time(lambda: scan_folder(folder, reuse=False), args.repeats)
        time.sleep(RACY_SECONDS)  # files this new are not trusted to the index
        scan_folder(folder)  # writes the index
        rescan = median_time(lambda: scan_folder(folder), args.repeats)
        baseline = median_time(lambda: baseline_epoch(folder, args.size), args.repeats)

        builds = iter(range(10**6))

        def fresh_build() -> None:  # a new cache folder each time: always decodes
            build_cache(manifest, args.size, Path(tmp) / f"cache{next(builds)}",
                        max_image_pixels=10**8, num_workers=args.workers)

        build = median_time(fresh_build, args.repeats)

        def fresh_build_1() -> None:
            build_cache(manifest, args.size, Path(tmp) / f"cache{next(builds)}",
                        max_image_pixels=10**8, num_workers=1)

        build_1 = median_time(fresh_build_1, args.repeats)
        cache_dir = Path(tmp) / "cache-reuse"
        cache = build_cache(manifest, args.size, cache_dir, max_image_pixels=10**8,
                            num_workers=args.workers)
        reuse = median_time(lambda: build_cache(manifest, args.size, cache_dir,
                                                max_image_pixels=10**8), args.repeats)
        read_batches(cache.images, args.batch)  # warm the page cache, as every later epoch
        batched = args.n // args.batch * args.batch
        batches = median_time(lambda: read_batches(cache.images, args.batch), args.repeats)

        rows = [
            ("a) PIL decode + resize, every epoch (ImageFolder)", baseline, n),
            (f"b) build the cache once ({args.workers or os.cpu_count()} threads)", build, n),
            ("   the same on 1 thread", build_1, n),
            ("   scan: hash + verify every file (first scan)", scan, n),
            ("   scan again, nothing changed (the scan index)", rescan, n),
            ("   reuse the built cache (scan already done)", reuse, None),
            (f"c) random batches of {args.batch} from the cache memmap", batches, batched),
        ]
        print(f"{'step':<54} {'seconds':>9} {'images/s':>11}")
        for name, seconds, count in rows:
            rate = f"{count / seconds:,.0f}" if count else "-"
            print(f"{name:<54} {seconds:>9.4f} {rate:>11}")
        record("data_path", [{"jpegs": n, "jpeg_size": f"{args.width}x{args.height}",
                              "cache_px": args.size, "step": name.strip(), "seconds": seconds,
                              "images_per_s": count / seconds if count else ""}
                             for name, seconds, count in rows])
        print(f"\nper epoch: cache read is {baseline / batches:,.0f}x faster than decoding; "
              f"building the cache costs {build / baseline:.2f} epochs of decoding")


if __name__ == "__main__":
    main()
