"""A large folder end to end: each stage of training and exploring it, timed, with the peak
memory of the process that ran it.

Generates (once, kept with --folder) a folder of --n JPEGs of mixed sizes (180-640 px on
the longer side, smooth random content, so the files and their decoding cost are like
photographs'), in 10 class sub-folders, with a few unusable files (empty, truncated, not an
image). Then runs each stage as the `contrastive-engine` verb a person would, in a child
process under /usr/bin/time (wall seconds and peak resident memory):

  plan      the plan verb (scan, cache plan, timed steps)
  train     scan + cache build + --steps training steps (ResNet-18, 32 px): the stage
            time, and the epoch time the steps' rate gives (a full epoch on a CPU takes
            many minutes at this size)
  embed     every image embedded with the run's checkpoint
  pca, umap the maps (UMAP fits on 20,000 and places the rest)
  neighbours a query over all the embeddings
  knn, probe the kNN accuracy and the linear probe

Run:  .venv/bin/python benchmarks/bench_100k.py [--n 100000] [--steps 30] [--folder DIR]
      [--stages plan train embed pca umap neighbours knn probe]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = 10
STAGES = ("plan", "train", "embed", "pca", "umap", "neighbours", "knn", "probe")


def make_folder(root: Path, n: int, seed: int = 0) -> Path:
    """``n`` JPEGs in CLASSES sub-folders (made only when the folder has none yet)."""
    if root.is_dir() and any(root.rglob("*.jpg")):
        return root
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    for c in range(CLASSES):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
    tint = rng.integers(40, 215, (CLASSES, 3))
    for i in range(n):
        c = i % CLASSES
        long_side = int(rng.integers(180, 641))
        short_side = int(long_side * rng.uniform(0.6, 1.0))
        w, h = (long_side, short_side) if rng.random() < 0.5 else (short_side, long_side)
        small = rng.normal(tint[c], 40, (8, 8, 3)).clip(0, 255).astype(np.uint8)
        image = Image.fromarray(small).resize((w, h), Image.BICUBIC)
        image.save(root / f"class{c}" / f"{i:06d}.jpg", quality=85)
        if i and i % 10_000 == 0:
            print(f"  {i:,} images written ({time.perf_counter() - started:.0f} s)",
                  file=sys.stderr)
    (root / "class0" / "empty.jpg").write_bytes(b"")
    (root / "class1" / "not-an-image.jpg").write_text("hello")
    data = (root / "class2" / f"{2:06d}.jpg").read_bytes()
    (root / "class2" / "truncated.jpg").write_bytes(data[: len(data) // 3])
    print(f"folder of {n:,} images made in {time.perf_counter() - started:.0f} s",
          file=sys.stderr)
    return root


def timed(args: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall seconds, peak resident GB, stdout) of ``contrastive-engine ARGS``."""
    command = ["/usr/bin/time", "-f", "%e %M", sys.executable, "-m", "engine", *args]
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:1])} failed: {out.stderr[-2000:]}")
    wall, peak_kb = out.stderr.strip().splitlines()[-1].split()
    return float(wall), int(peak_kb) / 2**20, out.stdout


def result_of(stdout: str) -> dict:
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return next((e for e in reversed(lines) if e.get("type") == "result"), {})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--folder", type=Path, help="keep the generated folder here")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-100k-"))
    folder = make_folder(args.folder or work / "data", args.n)
    runs, cache = work / "runs", work / "cache"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    common = ["--cache-dir", str(cache)]
    rows: list[tuple[str, float, float, str]] = []
    run_dir: Path | None = None
    settings = ["--backbone", "resnet18", "--image-size", "32", "--batch-size", "64"]

    def stage(name: str, verb_args: list[str], note=lambda r: "") -> dict:
        wall, peak, stdout = timed(verb_args, env)
        result = result_of(stdout)
        rows.append((name, wall, peak, note(result) if result else ""))
        print(f"{name}: {wall:.1f} s, peak {peak:.2f} GB {rows[-1][3]}", file=sys.stderr)
        return result

    if "plan" in args.stages:
        stage("plan", ["plan", "--data", str(folder), *settings, "--seconds", "10", "--json",
                       *common],
              lambda r: f"({r['images']:,} images, cache {r['cache']['bytes'] / 1e9:.2f} GB)")
    if "train" in args.stages:
        wall, peak, stdout = timed(["train", "--data", str(folder), *settings, "--max-steps",
                                    str(args.steps), "--knn-every", "0", "--log-every", "1",
                                    "--runs-root", str(runs), "--json", *common], env)
        events = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
        steps = [e for e in events if e.get("type") == "step"]
        rate = float(np.median([e["pairs_per_s"] for e in steps[len(steps) // 2:]]))
        run_dir = Path(next(e["run_dir"] for e in events if e.get("type") == "run_start"))
        images = len(json.loads((run_dir / "manifest.json").read_text())["images"])
        rows.append(("train (scan, cache, steps)", wall, peak,
                     f"({args.steps} steps, {rate:.1f} pairs/s: an epoch of {images:,} images "
                     f"would take {images / rate / 60:.0f} min)"))
        print(f"train: {wall:.1f} s, peak {peak:.2f} GB {rows[-1][3]}", file=sys.stderr)
    if run_dir is None:
        runs_made = sorted(runs.glob("*/config.json")) if runs.is_dir() else []
        run_dir = runs_made[-1].parent if runs_made else None
    if run_dir is not None:
        run = ["--run", str(run_dir), *common, "--json"]
        if "embed" in args.stages:
            stage("embed", ["embed", *run], lambda r: f"({r.get('images', 0):,} images)")
        if "pca" in args.stages:
            stage("pca map", ["map", "--method", "pca", *run])
        if "umap" in args.stages:
            stage("umap map", ["map", "--method", "umap", *run])
        if "neighbours" in args.stages:
            stage("neighbours (process start, load, query)",
                  ["neighbours", "--query", "7", "-k", "10", *run])
        if "knn" in args.stages:
            stage("knn", ["knn", *run], lambda r: f"(top-1 {r.get('top1', 0):.3f})")
        if "probe" in args.stages:
            stage("probe", ["probe", *run], lambda r: f"(top-1 {r.get('top1', 0):.3f})")

    print(f"\n{args.n:,} JPEGs in {CLASSES} classes; {platform.machine()}, "
          f"{os.cpu_count()} cores\n")
    print("| stage | seconds | peak memory | notes |")
    print("|---|---|---|---|")
    for name, wall, peak, note in rows:
        print(f"| {name} | {wall:.1f} | {peak:.2f} GB | {note} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
