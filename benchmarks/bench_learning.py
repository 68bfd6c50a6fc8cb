"""What the learning buys: kNN and linear-probe accuracy on the demo dataset after a short
CPU training, against the same encoder at random init and against raw pixels.

Usage:
    python benchmarks/bench_learning.py --epochs 10                  # trains, then evaluates
    python benchmarks/bench_learning.py --run RUN_DIR                # evaluates an existing run
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from engine.config.train_config import AugmentConfig, TrainConfig
from engine.data.cache import build_cache
from engine.data.demo import demo_dataset
from engine.data.scan import scan_folder
from engine.evaluate import explore
from engine.evaluate.embed import eval_views, load_run_config
from engine.evaluate.knn import knn_accuracy
from engine.evaluate.probe import ProbeParams, linear_probe
from engine.run.events import EventWriter
from engine.training.loop import train


def pixel_features(run_dir: Path, cache_dir: Path) -> tuple[np.ndarray, np.ndarray, list]:
    """The evaluation views themselves, flattened: the no-learning baseline."""
    import torch

    cfg = load_run_config(run_dir)
    cache = build_cache(scan_folder(cfg.data), cfg.cache_size, cache_dir,
                        max_image_pixels=cfg.max_image_pixels)
    x = eval_views(torch.from_numpy(np.array(cache.images)).permute(0, 3, 1, 2),
                   cfg)
    return x.flatten(1).numpy(), cache.labels, cache.manifest.classes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="evaluate this run instead of training a new one")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--method", default="simclr", choices=("simclr", "moco"))
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="any other training setting, e.g. --set image_size=16 "
                   "--set crop_scale_min=0.2 (augmentation settings too)")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-learning-"))
    cache_dir = work / "cache"
    if args.run:
        run_dir = Path(args.run)
        train_seconds = None
    else:
        values = {"data": str(demo_dataset()), "method": args.method, "epochs": args.epochs,
                  "batch_size": args.batch_size, "device": "cpu", "log_every": 20}
        augment = {}
        for item in args.set:
            name, _, value = item.partition("=")
            target = augment if name in AugmentConfig.__dataclass_fields__ else values
            target[name] = value
        values["augment"] = augment
        started = time.perf_counter()
        result = train(TrainConfig.from_dict(values), runs_root=work / "runs",
                       cache_dir=cache_dir, events=EventWriter(None))
        train_seconds = time.perf_counter() - started
        run_dir = result.run_dir
    cfg = load_run_config(run_dir)
    print(f"run {run_dir}: {cfg.method} {cfg.backbone} {cfg.image_size}px batch "
          f"{cfg.batch_size}, {cfg.epochs} epochs"
          + (f", trained in {train_seconds / 60:.1f} min on the CPU" if train_seconds else ""))

    rows = []
    pixels, labels, classes = pixel_features(run_dir, cache_dir)
    rows.append(("raw pixels", pixels, labels, classes))
    for ckpt in ("random", "last"):
        emb = explore.embeddings(run_dir, ckpt, device="cpu", cache_dir=cache_dir)
        rows.append((f"{ckpt} h", emb.features, emb.labels, emb.classes))
        rows.append((f"{ckpt} z", emb.projections, emb.labels, emb.classes))
    print(f"{'features':<12} {'dim':>6} {'kNN top-1':>10} {'probe top-1':>12} "
          f"{'probe 10%':>10} {'probe s':>8}")
    for name, x, y, cls in rows:
        knn = knn_accuracy(x, y, k=20, temperature=0.07, seed=0)
        started = time.perf_counter()
        full = linear_probe(x, y, cls, ProbeParams())
        seconds = time.perf_counter() - started
        tenth = linear_probe(x, y, cls, ProbeParams(label_fraction=0.1))
        print(f"{name:<12} {x.shape[1]:>6} {100 * knn['top1']:>9.1f}% "
              f"{100 * full['top1']:>11.1f}% {100 * tenth['top1']:>9.1f}% {seconds:>8.2f}")


if __name__ == "__main__":
    main()
