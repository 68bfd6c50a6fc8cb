"""Throughput of the batched augmentations (engine.data.augment.make_pairs), in pairs per second.

Two settings (median of --repeats runs after one warm-up): a batch of 64 from a 36 px cache
made into 32 px views (CPU defaults, no blur), and a batch of 64 from a 256 px cache made
into 224 px views (GPU defaults, blur on half the views); ``--settings CACHE:VIEW ...``
names others. The images are a channels_last view of an NHWC uint8 array, like the
trainer's batches, on --device. SimCLR's augmentation preset (strength 1); --method moco for
MoCo v2's. Results are appended to benchmarks/results/augment.csv (``--results`` names
another folder), and with ``--json FILE`` also written to FILE.

Run:  .venv/bin/python benchmarks/bench_augment.py [--device cpu|cuda] [--batch 64]
      [--settings 36:32 256:224] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from bench_results import RESULTS, record

from engine.config.train_config import augment_preset
from engine.data.augment import make_pairs, resolved_blur_p

SETTINGS = ((36, 32), (256, 224))  # (cache side, view side)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU, {torch.get_num_threads()} PyTorch threads"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def smooth_batch(n: int, side: int, device: torch.device) -> torch.Tensor:
    """uint8 (n, 3, side, side), channels_last-strided: smooth colour fields with grain."""
    g = torch.Generator().manual_seed(0)
    low = torch.rand(n, 3, max(2, side // 16), max(2, side // 16), generator=g)
    x = torch.nn.functional.interpolate(low, size=(side, side), mode="bilinear")
    x = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    nhwc = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().to(device)
    return nhwc.permute(0, 3, 1, 2)


def pairs_per_second(images: torch.Tensor, method: str, size: int, repeats: int) -> float:
    cfg = augment_preset(method)
    gen = torch.Generator().manual_seed(0)
    make_pairs(images, cfg, size, gen)  # warm-up
    synchronize(images.device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        make_pairs(images, cfg, size, gen)
        synchronize(images.device)
        times.append(time.perf_counter() - start)
    return images.shape[0] / statistics.median(times)


def setting(text: str) -> tuple[int, int]:
    """'CACHE:VIEW' -> (cache side, view side)."""
    try:
        cache, view = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected CACHE:VIEW, e.g. 256:224") from None
    if not 0 < view <= cache:
        raise argparse.ArgumentTypeError(f"{text!r}: need 0 < VIEW <= CACHE")
    return cache, view


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--batch", type=int, default=64, help="images per batch (default 64)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs (default 5)")
    parser.add_argument("--method", default="simclr", choices=("simclr", "moco"))
    parser.add_argument("--threads", type=int, default=None, help="PyTorch CPU threads")
    parser.add_argument("--settings", nargs="+", type=setting, default=list(SETTINGS),
                        metavar="CACHE:VIEW", help="cache and view sides (default 36:32 256:224)")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="folder of the results tables (default: benchmarks/results)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device: {device_name(device)}; {args.method} preset; batch {args.batch}; "
          f"median of {args.repeats}")
    rows = []
    for cache, size in args.settings:
        images = smooth_batch(args.batch, cache, device)
        rate = pairs_per_second(images, args.method, size, args.repeats)
        blur = resolved_blur_p(augment_preset(args.method), size)
        print(f"cache {cache:>3} -> views {size:>3} (blur p {blur}): {rate:8.1f} pairs/s")
        rows.append({"device": device_name(device), "method": args.method,
                     "batch": args.batch, "cache_px": cache, "size": size, "blur_p": blur,
                     "pairs_per_s": rate})
    record("augment", rows, args.results)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
