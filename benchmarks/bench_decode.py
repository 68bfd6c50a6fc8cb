"""JPEG decoding rates: PIL in one process, PIL in a process pool, and torchvision's batched
decode_jpeg on the CPU and on a GPU.

Writes N photo-like JPEGs of mixed sizes (each side drawn from --min-px to --max-px) to a
temporary folder, then measures images per second (median of --repeats runs) for decoding
every file and resizing it to --size x --size (bilinear, antialiased), the resize being part
of the work in each variant:

a) PIL in 1 process: ``Image.open`` + ``convert("RGB")`` + ``resize``, to a uint8 array;
b) the same in a ``concurrent.futures.ProcessPoolExecutor`` with one process per core (the
   pool is started and warmed before the timing: a training run starts it once); the
   speed-up over a) is reported, also per core;
c) ``torchvision.io.decode_jpeg`` on a list of the files' bytes (one batched call) on the CPU,
   then ``torchvision.transforms.v2.functional.resize`` per image;
d) the same with ``device="cuda"``: the GPU decodes (nvJPEG) and resizes; only where CUDA is
   available (otherwise the report says it was not run);
e) the cache build's device decoder (engine.data.device_decode: read, hash, header check,
   decode_jpeg in batches of 64, Pillow's own box and bicubic kernel as two matrix products,
   back to the CPU) on the CPU, and on the GPU where there is one.

Reading the files' bytes is part of every variant (the files are in the page cache after the
warm-up run).

Run:  .venv/bin/python benchmarks/bench_decode.py [--n 512] [--size 224] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision.io import decode_jpeg, read_file
from torchvision.transforms.v2 import functional as F

from engine.data.device_decode import DEVICE_BATCH, decode_batch_on_device
from engine.data.scan import hash_bytes


def make_mixed_jpegs(folder: Path, n: int, min_px: int, max_px: int, seed: int = 0) -> list[Path]:
    """``n`` photo-like JPEGs (smooth colour fields plus grain), each side in [min_px, max_px]."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        width, height = (int(v) for v in rng.integers(min_px, max_px + 1, size=2))
        coarse = rng.integers(0, 256, size=(max(2, height // 16), max(2, width // 16), 3),
                              dtype=np.uint8)
        im = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
        grain = rng.integers(-12, 13, size=(height, width, 3))
        pixels = np.clip(np.asarray(im).astype(np.int16) + grain, 0, 255).astype(np.uint8)
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def pil_decode(path: Path, size: int) -> np.ndarray:
    """One file decoded and resized by PIL, as a (size, size, 3) uint8 array."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))


def _pil_chunk(paths: list[Path], size: int) -> int:
    """Decode ``paths`` in a pool process; return how many (the pixels stay there, as the
    cache builder's workers write them to the memory map rather than send them back)."""
    for path in paths:
        pil_decode(path, size)
    return len(paths)


def pil_pool(pool: ProcessPoolExecutor, paths: list[Path], size: int, workers: int) -> int:
    chunk = max(1, len(paths) // (workers * 4))
    chunks = [paths[i:i + chunk] for i in range(0, len(paths), chunk)]
    return sum(pool.map(_pil_chunk, chunks, [size] * len(chunks)))


def torch_decode(paths: list[Path], size: int, device: torch.device) -> torch.Tensor:
    """Batched decode_jpeg on ``device`` and a per-image resize there; (n, 3, size, size)."""
    data = [read_file(str(p)) for p in paths]
    images = decode_jpeg(data, device=device)
    out = torch.stack([F.resize(im, [size, size], antialias=True) for im in images])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out


def cache_decoder(paths: list[Path], size: int, device: torch.device) -> int:
    """What the cache build does on a device (engine.data.device_decode): read, hash, check
    the header, decode_jpeg in batches, Pillow-matching resize, back to the CPU."""
    entries = [(p, hash_bytes(p.read_bytes())) for p in paths]  # the scan's hashes
    done = 0
    for i in range(0, len(entries), DEVICE_BATCH):
        got = decode_batch_on_device(entries[i:i + DEVICE_BATCH], size, 10**9, device,
                                     lambda path, sha: (None, "CPU path", None))
        done += sum(1 for g in got if g[0] is not None)
    return done


def rate(fn: Callable[[], object], n: int, repeats: int) -> tuple[float, float]:
    """(images per second, median seconds) of ``fn`` decoding ``n`` images, after a warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    seconds = statistics.median(times)
    return n / seconds, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=512, help="number of JPEGs (default 512)")
    parser.add_argument("--min-px", type=int, default=300, help="smallest side (default 300)")
    parser.add_argument("--max-px", type=int, default=500, help="largest side (default 500)")
    parser.add_argument("--size", type=int, default=224, help="resize target (default 224)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (default 3)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes of the pool (default: all cores)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="PyTorch CPU threads of decode_jpeg on the CPU (default: all)")
    parser.add_argument("--device", default="auto",
                        help="auto (the GPU where there is one), cpu, cuda or cuda:N")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    if args.n < 1 or not 1 <= args.min_px <= args.max_px:
        parser.error("need --n >= 1 and 1 <= --min-px <= --max-px")
    gpu = None
    if args.device == "auto":
        gpu = torch.device("cuda") if torch.cuda.is_available() else None
    elif args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            parser.error(f"--device {args.device}: no CUDA device is available here")
        gpu = torch.device(args.device)
    cores = os.cpu_count() or 1
    torch.set_num_threads(args.threads)
    variants: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-decode-") as tmp:
        paths = make_mixed_jpegs(Path(tmp) / "jpegs", args.n, args.min_px, args.max_px)
        mb = sum(p.stat().st_size for p in paths) / 1e6
        print(f"{args.n} JPEGs of {args.min_px}-{args.max_px} px ({mb:.1f} MB) -> "
              f"{args.size} px; {cores} CPU cores; torch {torch.__version__}, torchvision "
              f"{torchvision.__version__}; median of {args.repeats}", flush=True)

        def add(name: str, workers: int, fn: Callable[[], object]) -> None:
            per_s, seconds = rate(fn, args.n, args.repeats)
            variants.append({"name": name, "workers": workers, "images_per_s": per_s,
                             "seconds": seconds})
            print(f"{name:<44} {per_s:>10,.0f} images/s ({seconds:.3f} s)", flush=True)

        add("PIL, 1 process", 1, lambda: [pil_decode(p, args.size) for p in paths])
        # fork where the platform has it: the pool's processes start at once with this
        # module loaded (spawn would re-import torch in each).
        fork = "fork" in multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork") if fork else None
        with ProcessPoolExecutor(args.workers, mp_context=context) as pool:
            add(f"PIL, process pool of {args.workers}", args.workers,
                lambda: pil_pool(pool, paths, args.size, args.workers))
        threads = f"{args.threads} thread" + ("s" if args.threads != 1 else "")
        add(f"decode_jpeg batched, CPU ({threads})", args.threads,
            lambda: torch_decode(paths, args.size, torch.device("cpu")))
        add(f"cache's device decoder on the CPU ({threads})", args.threads,
            lambda: cache_decoder(paths, args.size, torch.device("cpu")))
        gpu_failed = False
        if gpu is not None:
            name = torch.cuda.get_device_name(gpu)
            try:
                add(f"cache's device decoder, GPU ({name})", 0,
                    lambda: cache_decoder(paths, args.size, gpu))
                add(f"decode_jpeg batched, GPU ({name})", 0,
                    lambda: torch_decode(paths, args.size, gpu))
                gpu_note = f"ran on {name}"
            except RuntimeError as error:  # recorded with the CPU figures; exit status 1
                gpu_failed = True
                gpu_note = f"failed on {name}: {str(error).splitlines()[0][:300]}"
                print(f"decode_jpeg batched, GPU: {gpu_note}")
        else:
            gpu_note = "not run: no CUDA device" if args.device == "auto" else \
                f"not run: --device {args.device}"
            print(f"decode_jpeg batched, GPU: {gpu_note}")
    single = variants[0]["images_per_s"]
    speedup = variants[1]["images_per_s"] / single
    print(f"process pool: {speedup:.2f}x one process on {args.workers} processes, "
          f"{speedup / args.workers:.2f}x per core")
    if gpu is not None and not gpu_failed:
        print(f"GPU decode_jpeg: {variants[-1]['images_per_s'] / single:.1f}x PIL in one "
              f"process, {variants[-1]['images_per_s'] / variants[1]['images_per_s']:.1f}x "
              "the process pool")
    if args.json:
        args.json.write_text(json.dumps({
            "images": args.n, "min_px": args.min_px, "max_px": args.max_px, "size": args.size,
            "megabytes": mb, "cores": cores, "variants": variants, "gpu": gpu_note,
            "pool_speedup": speedup, "pool_speedup_per_core": speedup / args.workers},
            indent=1) + "\n")
    if gpu_failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
