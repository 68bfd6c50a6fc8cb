"""What one live-map update costs in the training loop, at the map's 2,000 points.

a) The layout alone (the kNN monitor already embedded the sample): PCA of h by SVD,
   Procrustes onto the frame before, unit scale, and writing the frame and index.json;
   for h of 512 (ResNet-18) and 2,048 (ResNet-50) dimensions. With --umap, the same with
   UMAP started from the frame before (the first fit, which loads UMAP, is timed apart).
b) Embedding the sample as well (a folder without labels: no monitor), ResNet-18 with the
   small stem at 32 px on the CPU, as the CPU runs train.

Prints a Markdown table. Run:
  .venv/bin/python benchmarks/bench_live_map.py [--points 2000] [--repeats 5] [--umap]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.config.train_config import TrainConfig
from engine.data.scan import ImageRecord, Manifest
from engine.evaluate.live_map import LiveMap
from engine.models.encoder import Encoder, ProjectionHead, build_backbone
from engine.run.layout import RunDir


def fake_cache(n: int, side: int) -> SimpleNamespace:
    """What LiveMap reads of an ImageCache: images, labels and the manifest's paths."""
    rng = np.random.default_rng(0)
    records = [ImageRecord(f"{i:05d}.png", i % 10, 0, "") for i in range(n)]
    return SimpleNamespace(images=rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8),
                           labels=np.arange(n) % 10,
                           manifest=Manifest("/data", [str(c) for c in range(10)], records))


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((10, dim))
    return (centres[np.arange(n) % 10] + rng.standard_normal((n, dim))).astype(np.float32)


def time_updates(live: LiveMap, dim: int | None, first_epoch: int, repeats: int,
                 encoder: Encoder | None = None) -> float:
    """The median seconds of ``repeats`` updates: of clustered features of ``dim``
    dimensions given as the monitor's, or (``dim`` None) of ``encoder`` embedding the
    sample."""
    times = []
    for epoch in range(first_epoch, first_epoch + repeats):
        features = clustered(live.indices.size, dim, epoch) if dim is not None else None
        started = time.perf_counter()
        live.update(encoder, epoch=epoch, step=epoch, features=features)  # type: ignore
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--umap", action="store_true", help="also time UMAP updates")
    args = parser.parse_args()
    n, cpu = args.points, torch.device("cpu")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = fake_cache(n, 36)
        for layout in ["pca"] + (["umap"] if args.umap else []):
            for dim in (512, 2048):
                cfg = TrainConfig(live_map=layout, image_size=32, cache_size=36)
                live = LiveMap(RunDir(Path(tmp) / f"{layout}-{dim}").live_map, cache, cfg,
                               cpu, max_points=n)
                live.positions = np.arange(n)  # as with a monitor: its features are taken
                rows.append((f"{layout}, h of {dim}, first update",
                             time_updates(live, dim, 1, 1)))
                rows.append((f"{layout}, h of {dim}", time_updates(live, dim, 2, args.repeats)))
        cfg = TrainConfig(image_size=32, cache_size=36)
        encoder = Encoder(build_backbone("resnet18", small_stem=True),
                          ProjectionHead(512, 512, 128, batch_norm=True))
        live = LiveMap(RunDir(Path(tmp) / "embed").live_map, cache, cfg, cpu, max_points=n)
        rows.append(("pca, embedding the sample too (ResNet-18, 32 px)",
                     time_updates(live, None, 1, max(1, args.repeats // 2), encoder)))
    print(f"| live-map update, {n:,} points | seconds |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value:.3f} |")


if __name__ == "__main__":
    main()
