"""Embedding throughput: images per second through a frozen encoder (evaluation transform,
no gradients), as `contrastive-engine embed` runs it.

Usage: python benchmarks/bench_embed.py [--device cuda] [--batch-size 128] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from bench_results import record

from engine.config.resolve import resolve_config, resolve_device
from engine.config.train_config import preset
from engine.evaluate.embed import encode
from engine.methods import build_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--configs", default="resnet18:16,resnet18:32,resnet50:64,resnet50:224")
    args = p.parse_args()
    device, info = resolve_device(args.device)
    print(f"device: {info.name}; batch {args.batch_size}; median of {args.repeats}")
    print(f"{'backbone':<9} {'px':>4} {'images/s':>9}")
    rows = []
    for spec in args.configs.split(","):
        backbone, size = spec.split(":")
        cfg = preset("simclr")
        cfg.backbone, cfg.image_size, cfg.device = backbone, int(size), args.device
        cfg, _ = resolve_config(cfg, info, typical_side=None, num_images=None)
        encoder = build_model(cfg).online_encoder.to(device).eval()
        images = torch.randint(0, 256, (args.batch_size, 3, cfg.cache_size, cfg.cache_size),
                               dtype=torch.uint8, device=device)
        encode(encoder, images, cfg)  # warm-up
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            encode(encoder, images, cfg)  # returns numpy: includes the device sync
            times.append(time.perf_counter() - start)
        rate = args.batch_size / statistics.median(times)
        print(f"{backbone:<9} {size:>4} {rate:>9.1f}")
        rows.append({"device": info.name, "backbone": backbone, "size": int(size),
                     "batch": args.batch_size, "precision": cfg.precision,
                     "images_per_s": rate})
    record("embed", rows)


if __name__ == "__main__":
    main()
