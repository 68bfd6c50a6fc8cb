"""How well and how fast the curation verbs work: duplicates, mistakes, outliers.

a) Quality: a folder of --per-class demo digits per class (engine.data.demo, 32 px) with
   planted near-duplicates (resized, JPEG q60, mirrored copies), cross-class copies and
   images moved into a wrong class (tests/helpers/planted.py). For the random-init encoder
   and for SimCLR trained --seconds on that folder: the duplicate finder's pair precision
   and recall at the default threshold (and the best threshold in hindsight), and the
   mistake finder's precision among its first m suspects (m = the mistakes planted) and
   recall among its first 2m.
b) Speed: duplicates and outliers (k = 10) on --n random vectors of 512 and 2048 dimensions
   (exact, blocked).

Prints Markdown tables. Run:
  .venv/bin/python benchmarks/bench_curate.py [--seconds 120] [--per-class 30] [--n 100000]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.config.train_config import TrainConfig
from engine.data.demo import DEMO_SETTINGS, demo_dataset
from engine.evaluate import curate, explore
from engine.evaluate.neighbours import normalise
from engine.run.events import EventWriter
from engine.training.loop import train
from tests.helpers.planted import pair_scores, plant


def make_folder(tmp: Path, per_class: int) -> tuple[Path, dict]:
    digits = demo_dataset(tmp / "demo", size=32)
    root = tmp / "digits"
    for c in sorted(p for p in digits.iterdir() if p.is_dir()):
        (root / c.name).mkdir(parents=True)
        for f in sorted(c.glob("*.png"))[:per_class]:
            shutil.copy2(f, root / c.name / f.name)
    plants = plant(root, duplicated=per_class // 2, cross_class=5, moved=10)
    return root, plants


def quality(run_dir: Path, cache: Path, checkpoint: str, plants: dict) -> list[dict]:
    rows = []
    for space in ("h", "z"):
        emb = explore.embeddings(run_dir, checkpoint, cache_dir=cache)
        dup = explore.duplicates(run_dir, checkpoint, space=space, cache_dir=cache)
        found = [[m["path"] for m in g["members"]] for g in dup["groups"]]
        p, r = pair_scores(found, plants["groups"])
        # Best threshold in hindsight: highest pair F1 over a grid.
        v = normalise(emb.features if space == "h" else emb.projections)
        best = (0.0, None, 0.0, 0.0)
        for t in np.round(np.arange(0.90, 0.99951, 0.0005), 4):
            i, j, _ = curate.similar_pairs(v, float(t))
            groups = curate.connected_components(len(v), i, j)
            bp, br = pair_scores([[emb.paths[k] for k in g] for g in groups], plants["groups"])
            f1 = 2 * bp * br / (bp + br) if bp + br else 0.0
            if f1 > best[0]:
                best = (f1, float(t), bp, br)
        # The numbers a threshold is chosen from: planted pairs (mirrored copies apart: the
        # encoder is not made flip-invariant by a few steps) against distinct pairs.
        where = {p: k for k, p in enumerate(emb.paths)}
        sims = v @ v.T
        same = np.eye(len(v), dtype=bool)
        planted_s, mirrored_s = [], []
        for g in plants["groups"]:
            for a in g:
                for b in g:
                    same[where[a], where[b]] = True
                    if a < b:
                        (mirrored_s if "mirrored" in a + b else planted_s).append(
                            sims[where[a], where[b]])
        nearest = np.where(np.eye(len(v), dtype=bool), -np.inf, sims).max(axis=1)
        mis = explore.mistakes(run_dir, checkpoint, space=space, cache_dir=cache)
        ranked = [s["path"] for s in mis["suspects"]]
        planted = {p for p, _ in plants["mistakes"]}
        m = len(planted)
        rows.append({"checkpoint": checkpoint, "space": space,
                     "threshold": dup["threshold"], "dup_precision": p, "dup_recall": r,
                     "best_threshold": best[1], "best_precision": best[2],
                     "best_recall": best[3],
                     "mistake_precision_at_m": len(planted & set(ranked[:m])) / m,
                     "mistake_recall_at_2m": len(planted & set(ranked[:2 * m])) / m,
                     "suspects": mis["suspect_count"], "planted_min": min(planted_s),
                     "mirrored_median": float(np.median(mirrored_s)) if mirrored_s else None,
                     "distinct_max": float(sims[~same].max()),
                     "distinct_999": float(np.quantile(sims[~same], 0.999)),
                     "nearest_median": float(np.median(nearest))})
    return rows


def speed(n: int, dims: list[int]) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    for d in dims:
        x = rng.standard_normal((n, d), dtype=np.float32)
        started = time.perf_counter()
        i, _, _ = curate.similar_pairs(x, 0.5)
        t_dup = time.perf_counter() - started
        started = time.perf_counter()
        curate.outlier_scores(x, 10)
        t_out = time.perf_counter() - started
        started = time.perf_counter()
        curate.farthest_point(x, 1000)
        t_fp = time.perf_counter() - started
        rows.append({"n": n, "dim": d, "duplicates_s": t_dup, "outliers_s": t_out,
                     "diverse_1000_s": t_fp, "pairs": len(i)})
        print(f"  {n:,} x {d}: duplicates {t_dup:.1f} s, outliers {t_out:.1f} s, "
              f"1000 diverse {t_fp:.1f} s", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=120.0, help="SimCLR training budget.")
    ap.add_argument("--per-class", type=int, default=30)
    ap.add_argument("--n", type=int, default=100_000, help="Vectors for the speed part.")
    ap.add_argument("--dims", default="512,2048")
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--no-quality", action="store_true")
    ap.add_argument("--keep", metavar="DIR", help="Keep the folder and the run in DIR.")
    args = ap.parse_args()
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    if not args.no_quality:
        with tempfile.TemporaryDirectory() as name:
            tmp = Path(args.keep) if args.keep else Path(name)
            root, plants = make_folder(tmp, args.per_class)
            n_images = sum(1 for _ in root.glob("*/*.*"))
            print(f"{n_images} images; planted {len(plants['groups'])} duplicate groups "
                  f"({len(plants['cross_class'])} across classes), "
                  f"{len(plants['mistakes'])} mistakes", flush=True)
            deadline = time.monotonic() + args.seconds
            cfg = TrainConfig.from_dict({**DEMO_SETTINGS, "data": str(root), "epochs": 10_000,
                                         "knn_every": 0})
            result = train(cfg, runs_root=tmp / "runs", cache_dir=tmp / "cache",
                           events=EventWriter(None),
                           should_stop=lambda: time.monotonic() > deadline)
            print(f"SimCLR: {result.status} after {result.step} steps "
                  f"({result.epoch} epochs, {args.seconds:g} s)", flush=True)
            rows = quality(result.run_dir, tmp / "cache", "random", plants)
            rows += quality(result.run_dir, tmp / "cache", "last", plants)
        print("\n| encoder | space | threshold | dup. precision | dup. recall | best threshold "
              "(P / R) | mistakes P@m | mistakes R@2m | suspects |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            name = "random init" if r["checkpoint"] == "random" else \
                f"SimCLR {args.seconds:g} s ({result.step} steps)"
            print(f"| {name} | {r['space']} | {r['threshold']:g} | {r['dup_precision']:.2f} | "
                  f"{r['dup_recall']:.2f} | {r['best_threshold']} ({r['best_precision']:.2f} / "
                  f"{r['best_recall']:.2f}) | {r['mistake_precision_at_m']:.2f} | "
                  f"{r['mistake_recall_at_2m']:.2f} | {r['suspects']} |", flush=True)
        print("\n| encoder | space | planted pairs, min (mirrored: median) | distinct pairs, "
              "max (99.9%) | nearest neighbour, median |")
        print("|---|---|---|---|---|")
        for r in rows:
            mirrored = "-" if r["mirrored_median"] is None else f"{r['mirrored_median']:.4f}"
            print(f"| {r['checkpoint']} | {r['space']} | {r['planted_min']:.4f} ({mirrored}) | "
                  f"{r['distinct_max']:.4f} ({r['distinct_999']:.4f}) | "
                  f"{r['nearest_median']:.4f} |", flush=True)
    if not args.no_speed:
        print("\nspeed (exact, blocked, float32):", flush=True)
        rows = speed(args.n, [int(d) for d in args.dims.split(",")])
        print("\n| vectors | dim | duplicates | outliers (k=10) | 1,000 diverse |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['n']:,} | {r['dim']} | {r['duplicates_s']:.1f} s | "
                  f"{r['outliers_s']:.1f} s | {r['diverse_1000_s']:.1f} s |")


if __name__ == "__main__":
    main()
