"""How fast the exploring tools are: maps, neighbour search, kNN accuracy, linear probe.

Measures, on random data of the sizes a folder of images gives:

a) PCA maps of 2k, 10k and 50k points of dimension 512 (in this process);
b) UMAP maps of 2k and 10k points (50k with --umap-50k: about a minute more), each in a
   fresh process, as the app's worker would run it: "cold" is the first process on a
   machine (empty numba cache: import and compilation included), "warm" a later one (numba
   cache on disk). The 2k cold/warm pair is also run with umap-learn's own functions left
   uncached (only pynndescent's cache), to show what engine.evaluate.maps' extra caching
   saves;
c) neighbour queries (median of 20 single queries, k = 10) over 10k, 100k and 1M vectors of
   dimension 512 and 100k of dimension 2048 (1M x 512 float32 is 2 GB), plus the time per
   query when 256 are asked at once;
d) kNN accuracy and the linear probe (L-BFGS and SGD) on 10k x 512 labelled clusters.

Run:  .venv/bin/python benchmarks/bench_explore.py [--umap-50k] [--no-1m] [--no-umap]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from bench_results import record

from engine.evaluate.knn import knn_accuracy
from engine.evaluate.maps import MapParams, compute_map
from engine.evaluate.neighbours import NeighbourIndex
from engine.evaluate.probe import ProbeParams, linear_probe

DIM = 512
rows: list[tuple[str, str, str]] = []  # (what, size, result) for the final table


def report(what: str, size: str, result: str) -> None:
    rows.append((what, size, result))
    print(f"  {what:<50} {size:<16} {result}", flush=True)


def timed(fn: Callable[..., object], *args: object) -> tuple[float, object]:
    """Seconds taken by ``fn(*args)``, and its result."""
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def random_points(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)


def labelled_clusters(n: int, num_classes: int, dim: int, noise: float,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian clusters around random centres; ``noise`` sets how much classes overlap."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_classes, dim), dtype=np.float32)
    labels = rng.integers(0, num_classes, n)
    x = centres[labels] + noise * rng.standard_normal((n, dim), dtype=np.float32)
    return x, labels


# ------------------------------------------------------------------ maps


def bench_pca() -> None:
    print("PCA maps (cosine: unit rows, then exact or randomised PCA)")
    compute_map(random_points(100), MapParams(method="pca"))  # load BLAS before timing
    for n in (2_000, 10_000, 50_000):
        x = random_points(n)
        seconds, _ = timed(compute_map, x, MapParams(method="pca"))
        report("PCA map", f"{n:,} x {DIM}", f"{seconds:.2f} s")


def umap_worker(n: int, no_umap_cache: bool) -> None:
    """Child process: import UMAP and make one map; print the times as JSON."""
    from engine.evaluate import maps

    if no_umap_cache:  # leave umap-learn's own numba functions uncached, as umap does
        maps._enable_umap_numba_caching = lambda: None
    x = random_points(n)
    start = time.perf_counter()
    maps._import_umap(None)
    imported = time.perf_counter()
    maps.compute_map(x, MapParams(method="umap"))
    done = time.perf_counter()
    print(json.dumps({"import_s": imported - start, "fit_s": done - imported}))


def run_umap_worker(n: int, cache_dir: Path, *, no_umap_cache: bool = False,
                    timeout: float | None = None) -> dict[str, float] | None:
    cmd = [sys.executable, __file__, "--umap-worker", str(n)]
    if no_umap_cache:
        cmd.append("--no-umap-cache")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    start = time.perf_counter()
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True,
                             timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"UMAP worker failed:\n{exc.stderr}") from None
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - start  # with Python, torch and numpy start
    return result


def describe(r: dict[str, float]) -> str:
    return (f"{r['process_s']:.1f} s in all (import {r['import_s']:.1f} s, "
            f"fit {r['fit_s']:.1f} s)")


def bench_umap(with_50k: bool, timeout_50k: float) -> None:
    print("UMAP maps (each in a new process; cosine, 15 neighbours, seeded: one thread)")
    # umap-learn takes two code paths: exact neighbours below 4,096 points, NN-descent
    # above; each compiles its own numba code, so cold and warm are timed for both.
    with tempfile.TemporaryDirectory() as small, tempfile.TemporaryDirectory() as large, \
            tempfile.TemporaryDirectory() as plain:
        for n, cache in ((2_000, small), (10_000, large)):
            for state in ("cold", "warm"):
                r = run_umap_worker(n, Path(cache))
                report(f"UMAP {state}", f"{n:,} x {DIM}", describe(r))
        for state in ("cold", "warm"):
            r = run_umap_worker(2_000, Path(plain), no_umap_cache=True)
            report(f"UMAP {state}, umap-learn's functions uncached", f"2,000 x {DIM}",
                   describe(r))
        if with_50k:
            r = run_umap_worker(50_000, Path(large), timeout=timeout_50k)
            report("UMAP warm", f"50,000 x {DIM}",
                   describe(r) if r else f"over {timeout_50k:.0f} s: stopped")


# ------------------------------------------------------------------ neighbours


def bench_neighbours(sizes: list[tuple[int, int]]) -> None:
    print("Neighbour search (exact cosine, float32, k = 10)")
    for n, dim in sizes:
        x = random_points(n, dim, seed=1)
        build, index = timed(NeighbourIndex, x)
        del x  # the index keeps its own normalised copy
        assert isinstance(index, NeighbourIndex)
        queries = random_points(20, dim, seed=2)
        index.query(queries[0], 10)  # warm-up
        times = [timed(index.query, q, 10)[0] for q in queries]
        batch_s, _ = timed(index.query, random_points(256, dim, seed=3), 10)
        report("query, median of 20 single queries", f"{n:,} x {dim}",
               f"{statistics.median(times) * 1e3:.1f} ms (index built in {build:.1f} s; "
               f"{batch_s / 256 * 1e3:.2f} ms each in a batch of 256)")
        del index


# ------------------------------------------------------------------ kNN and probe


def bench_evaluation() -> None:
    n, classes = 10_000, 10
    print(f"kNN accuracy and linear probe ({n:,} x {DIM}, {classes} overlapping classes)")
    x, y = labelled_clusters(n, classes, DIM, noise=8.0)
    names = [f"class{c}" for c in range(classes)]
    start = time.perf_counter()
    r = knn_accuracy(x, y)
    seconds = time.perf_counter() - start
    report("kNN accuracy (k 20, T 0.07, 80/20 split)", f"{n:,} x {DIM}",
           f"{seconds:.2f} s, top-1 {r['top1']:.3f}")
    for params in (ProbeParams(), ProbeParams(solver="sgd", epochs=100),
                   ProbeParams(label_fraction=0.01)):
        start = time.perf_counter()
        r = linear_probe(x, y, names, params)
        seconds = time.perf_counter() - start
        what = (f"linear probe ({params.solver}, {params.epochs} "
                f"{'iterations' if params.solver == 'lbfgs' else 'epochs'}"
                f"{', 1% labels' if params.label_fraction < 1 else ''})")
        report(what, f"{n:,} x {DIM}",
               f"{seconds:.2f} s, top-1 {r['top1']:.3f} (train {r['train']:,})")


# ------------------------------------------------------------------ machine and table


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages / 2**30:.0f} GB memory"
    except (ValueError, OSError, AttributeError):
        pass
    from importlib import metadata

    return (f"{model}, {os.cpu_count()} cores (torch uses {torch.get_num_threads()} "
            f"threads){memory}; Python {platform.python_version()}, torch {torch.__version__}, "
            f"numpy {np.__version__}, umap-learn {metadata.version('umap-learn')}, "
            f"numba {metadata.version('numba')}")


def print_table() -> None:
    print()
    print(f"Machine: {machine()}")
    print(f"Load average when finished: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print()
    print(f"| {'what':<50} | {'size':<16} | result")
    print(f"|{'-' * 52}|{'-' * 18}|{'-' * 60}")
    for what, size, result in rows:
        print(f"| {what:<50} | {size:<16} | {result}")
    record("explore", [{"what": what, "size": size, "result": result}
                       for what, size, result in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--umap-50k", action="store_true",
                        help="also time UMAP on 50k points (minutes on two cores)")
    parser.add_argument("--umap-50k-timeout", type=float, default=600.0,
                        help="give up on the 50k UMAP after this many seconds")
    parser.add_argument("--no-umap", action="store_true", help="skip the UMAP timings")
    parser.add_argument("--no-1m", action="store_true",
                        help="skip the 1M-vector neighbour search (needs ~5 GB of memory)")
    parser.add_argument("--umap-worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--no-umap-cache", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.umap_worker:
        umap_worker(args.umap_worker, args.no_umap_cache)
        return

    print(f"Machine: {machine()}\n")
    bench_pca()
    if not args.no_umap:
        bench_umap(args.umap_50k, args.umap_50k_timeout)
    sizes = [(10_000, 512), (100_000, 512)] + ([] if args.no_1m else [(1_000_000, 512)])
    bench_neighbours(sizes + [(100_000, 2048)])
    bench_evaluation()
    print_table()


if __name__ == "__main__":
    main()
