"""Training throughput: the decode-once cache against decoding the JPEGs every epoch.

For each configuration it measures, in image pairs per second (median over timed steps,
after warm-up steps):

- data path, cached: gather a batch from the memory-mapped uint8 cache + make two views;
- data path, decoding: decode + resize every JPEG of the batch with PIL (in a thread pool of
  one worker per core, as a DataLoader's workers would) + make two views;
- training step, cached: the data path above plus forward, NT-Xent and the optimiser step;
- training step, decoding: the same with JPEGs decoded for every batch, the next batch
  decoded in the background while the model trains on this one.

Usage:
    python benchmarks/bench_train.py                         # the two default configurations
    python benchmarks/bench_train.py --configs resnet18:32 --steps 20 --device cuda
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from bench_results import record
from PIL import Image

from engine.config.resolve import RunSettings, resolve_config, resolve_device
from engine.config.train_config import TrainConfig
from engine.data.augment import make_pairs
from engine.data.cache import build_cache, decode_image
from engine.data.loader import BatchLoader
from engine.data.scan import scan_folder
from engine.methods import build_model
from engine.training.optim import build_optimizer
from engine.training.step import grad_scaler, train_step


def make_jpeg_folder(root: Path, count: int, width: int, height: int) -> Path:
    """Photograph-like JPEGs (smooth colour fields plus noise), quality 90."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        low = rng.random((height // 16 + 1, width // 16 + 1, 3)) * 255
        img = Image.fromarray(low.astype(np.uint8)).resize((width, height), Image.BICUBIC)
        arr = np.asarray(img).astype(np.int16) + rng.integers(-12, 12, (height, width, 3))
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(root / f"{i:05d}.jpg",
                                                                 quality=90)
    return root


def median_rate(times: list[float], batch: int) -> float:
    return batch / statistics.median(times)


def bench_config(backbone: str, size: int, batch: int, steps: int, warmup: int,
                 folder: Path, cache_dir: Path, device_name: str) -> dict[str, float]:
    device, info = resolve_device(device_name)
    asked = TrainConfig.from_dict({"data": str(folder), "backbone": backbone,
                                   "image_size": size, "batch_size": batch,
                                   "device": device_name, "epochs": 1})
    manifest = scan_folder(folder)
    cfg = RunSettings.of(resolve_config(asked, info, typical_side=None,
                                        num_images=len(manifest.images))[0])
    cache = build_cache(manifest, cfg.cache_size, cache_dir, max_image_pixels=10**9)
    loader = BatchLoader(cache, batch, seed=0, device=device, prefetch=True)
    paths = [str(folder / r.path) for r in cache.manifest.images]
    pool = ThreadPoolExecutor(os.cpu_count() or 1)
    gen = torch.Generator().manual_seed(0)

    def decoded_batch(b: int) -> torch.Tensor:
        idx = loader.indices(0, b % loader.steps_per_epoch)
        arrays = list(pool.map(lambda i: decode_image(paths[i], cfg.cache_size,
                                                      max_pixels=10**9), idx))
        return torch.from_numpy(np.stack(arrays)).to(device).permute(0, 3, 1, 2)

    def cached_batch(b: int) -> torch.Tensor:
        return loader.batch(0, b % loader.steps_per_epoch)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def time_data(get) -> float:
        times = []
        for b in range(warmup + steps):
            t0 = time.perf_counter()
            x1, x2 = make_pairs(get(b), cfg.augment, size, gen)
            sync()
            if b >= warmup:
                times.append(time.perf_counter() - t0)
        return median_rate(times, batch)

    results = {"data_cached": time_data(cached_batch),
               "data_decoding": time_data(decoded_batch)}

    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = build_optimizer(model, cfg.optimizer, 0.1, cfg.weight_decay, 0.9)
    scaler = grad_scaler(device, cfg.precision)

    def time_train(get, overlap: bool) -> float:
        times = []
        ahead = pool.submit(get, 0) if overlap else None
        for b in range(warmup + steps):
            t0 = time.perf_counter()
            if overlap:
                images = ahead.result()
                ahead = pool.submit(get, b + 1)
            else:
                images = get(b)
            x1, x2 = make_pairs(images, cfg.augment, size, gen)
            train_step(model, opt, scaler, x1, x2, device=device, precision=cfg.precision,
                       channels_last=cfg.channels_last)
            sync()
            if b >= warmup:
                times.append(time.perf_counter() - t0)
        return median_rate(times, batch)

    results["train_cached"] = time_train(cached_batch, overlap=False)
    results["train_decoding"] = time_train(decoded_batch, overlap=True)
    loader.close()
    pool.shutdown()
    results["device"] = info.name  # type: ignore[assignment]
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="resnet18:32,resnet50:64",
                   help="comma-separated backbone:image_size pairs")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=5, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--source-size", default="500x375", help="JPEG size WxH")
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    width, height = (int(v) for v in args.source_size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_jpeg_folder(Path(tmp) / "jpegs", args.images, width, height)
        rows = []
        for spec in args.configs.split(","):
            backbone, size = spec.split(":")
            r = bench_config(backbone, int(size), args.batch_size, args.steps, args.warmup,
                             folder, Path(tmp) / "cache", args.device)
            rows.append((backbone, int(size), r))
    print(f"device: {rows[0][2]['device']}; batch {args.batch_size}; {args.images} JPEGs "
          f"of {width}x{height}; median of {args.steps} steps; pairs/s")
    header = (f"{'backbone':<9} {'px':>4} {'data cached':>12} {'data decoding':>14} "
              f"{'ratio':>6} {'train cached':>13} {'train decoding':>15} {'ratio':>6}")
    print(header)
    for backbone, size, r in rows:
        print(f"{backbone:<9} {size:>4} {r['data_cached']:>12.1f} {r['data_decoding']:>14.1f} "
              f"{r['data_cached'] / r['data_decoding']:>6.2f} {r['train_cached']:>13.2f} "
              f"{r['train_decoding']:>15.2f} {r['train_cached'] / r['train_decoding']:>6.2f}")
    record("train_cache", [{"backbone": b, "size": s, "batch": args.batch_size, **r}
                           for b, s, r in rows])


if __name__ == "__main__":
    main()
