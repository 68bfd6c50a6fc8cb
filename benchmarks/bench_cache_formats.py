"""The cache formats side by side: the size on disk of a raw and a JPEG cache of the same
folder, and the rate at which a training batch is read from each (the raw cache's gather,
the JPEG cache decoded by Pillow or torchvision.io.decode_jpeg on 1 and 2 threads, or on a
CUDA GPU where there is one, and no cache: the original files decoded), at several cache
sides.

Usage:
    python benchmarks/make_photo_patches.py /tmp/photos --per-class 100 --size 160
    python benchmarks/bench_cache_formats.py /tmp/photos [--sizes 32 64 96] [--batch 256]

Prints one line per measurement and writes them as JSON with --json FILE.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.data.cache import build_cache
from engine.data.file_rows import uncached
from engine.data.jpeg_cache import JpegImages, decode_jpeg_cuda
from engine.data.scan import scan_folder

BIG = 10**9


def images_per_s(read, rows: list[np.ndarray], repeats: int) -> float:
    """Best of ``repeats`` passes over the batches ``rows``, in images a second (after one
    batch read untimed: the first call of a decoder initialises it)."""
    read(rows[0])
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for batch in rows:
            read(batch)
        best = min(best, time.perf_counter() - started)
    return sum(len(b) for b in rows) / best


def measure(manifest, size: int, folder: Path, rows: list[np.ndarray], repeats: int
            ) -> dict[str, Any]:
    """Sizes and read rates of the raw and JPEG caches of ``manifest`` at ``size`` px."""
    raw = build_cache(manifest, size, folder, max_image_pixels=BIG)
    started = time.perf_counter()
    jpeg = build_cache(manifest, size, folder, max_image_pixels=BIG, fmt="jpeg")
    jpeg_build_s = time.perf_counter() - started
    raw_bytes, jpeg_bytes = raw.path.stat().st_size, jpeg.path.stat().st_size
    line: dict[str, Any] = {"size": size, "images": len(raw), "raw_bytes": raw_bytes,
                            "jpeg_bytes": jpeg_bytes, "ratio": round(raw_bytes / jpeg_bytes, 2),
                            "jpeg_build_s": round(jpeg_build_s, 2)}
    line["raw_gather"] = images_per_s(lambda r: np.ascontiguousarray(raw.images[r]), rows,
                                      repeats)
    for decoder in ("pil", "torchvision"):
        images = JpegImages(jpeg.images.data, jpeg.images.ends, size, decoder=decoder)
        for workers in (1, 2):
            with ThreadPoolExecutor(workers) as pool:
                line[f"jpeg_{decoder}_{workers}"] = images_per_s(
                    partial(images.decode_rows, pool=pool, workers=workers), rows, repeats)
    if torch.cuda.is_available():  # one batched nvJPEG call a batch, as training does
        gpu = torch.device("cuda")

        def on_gpu(r: np.ndarray) -> None:
            decode_jpeg_cuda(jpeg.images, r, gpu)
            torch.cuda.synchronize(gpu)

        line["jpeg_cuda"] = images_per_s(on_gpu, rows, repeats)
    files = uncached(manifest, size, max_image_pixels=BIG).images
    with ThreadPoolExecutor(2) as pool:
        line["none_2"] = images_per_s(partial(files.decode_rows, pool=pool, workers=2),
                                      rows[:1], 1)
    return line


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", type=Path)
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 96])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    manifest = scan_folder(args.data, verify=False)
    n = len(manifest.images)
    rng = np.random.default_rng(0)
    rows = [np.sort(rng.choice(n, args.batch, replace=False)) for _ in range(args.batches)]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            line = measure(manifest, size, Path(tmp), rows, args.repeats)
            results.append(line)
            print(json.dumps({k: round(v) if isinstance(v, float) and v > 100 else v
                              for k, v in line.items()}), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
