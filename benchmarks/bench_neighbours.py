"""Embeddings and neighbour queries at 100k: the search index and the Explore page's loading.

a) For N in 10k, 100k (and 200k) images and D in 2048 (ResNet-50's h) and 128 (z): building
   a NeighbourIndex over memory-mapped float32 embeddings (a features.npy, as the app opens
   it), the median of 50 query_index calls (k = 10), and the memory the index adds (RSS
   delta: anonymous memory, and the mapped file's pages), for the exact float32 search and
   the fast one (float16, and bfloat16 for comparison), each in a fresh process, natively
   and with the CPU limited to AVX2 (ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2: what
   a CPU without AVX-512 and bf16 runs). "same" counts the fast queries whose neighbours
   are the exact search's.
b) The Explore page opening a synthetic run of 100k images (embeddings 100k x 2048 + 128,
   a saved UMAP map): the worker thread's load of the map (first and second time), the
   first neighbour query (it builds the index) and a later one, and the time from choosing
   the run to the map drawn (offscreen), in a fresh process.

Run:  .venv/bin/python benchmarks/bench_neighbours.py [--no-200k] [--no-avx2] [--no-page]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_results import record

QUERIES = 50
K = 10
AVX2 = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def rss() -> dict[str, int]:
    """This process's resident memory in bytes: anonymous and file-backed pages."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) * 1024
    return out


def embeddings_file(folder: Path, n: int, dim: int, seed: int = 0) -> Path:
    """``n`` x ``dim`` float32 embeddings in 1,000 clusters (so neighbours mean something
    and scores near the k-th are close), written once as a .npy file."""
    path = folder / f"features-{n}-{dim}.npy"
    if not path.is_file():
        rng = np.random.default_rng(seed)
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
        centres = rng.standard_normal((1000, dim)).astype(np.float32)
        for a in range(0, n, 10_000):
            b = min(a + 10_000, n)
            out[a:b] = centres[rng.integers(0, 1000, b - a)] + 0.7 * rng.standard_normal(
                (b - a, dim), dtype=np.float32)
        out.flush()
        del out
    return path


def index_worker(path: str, search: str, dtype: str) -> None:
    """In a fresh process: build an index over the mapped file and time queries; print JSON."""
    import torch

    from engine.evaluate.neighbours import NeighbourIndex

    features = np.load(path, mmap_mode="r")
    n = len(features)
    features[:].sum()  # the file's pages in the page cache and mapped, as after a map is drawn
    before = rss()
    start = time.perf_counter()
    index = NeighbourIndex(features, search=search,
                           fast_dtype=getattr(torch, dtype))
    build = time.perf_counter() - start
    after = rss()
    picks = np.random.default_rng(1).integers(0, n, QUERIES)
    index.query_index(int(picks[0]), K + 1)  # warm-up
    times, results = [], []
    for i in picks:
        start = time.perf_counter()
        idx, _ = index.query_index(int(i), K + 1)
        times.append(time.perf_counter() - start)
        results.append(idx[0].tolist())
    same = None
    if index.search == "fast":
        exact = NeighbourIndex(features, search="exact")
        same = sum(exact.query_index(int(i), K + 1)[0][0].tolist() == r
                   for i, r in zip(picks, results))
    print(json.dumps({
        "build_s": build, "query_ms": statistics.median(times) * 1e3,
        "anon_mb": (after["RssAnon"] - before["RssAnon"]) / 1e6,
        "file_mb": after["RssFile"] / 1e6, "index_mb": index.nbytes / 1e6,
        "search": index.search, "reason": index.reason, "same": same,
        "capability": torch.backends.cpu.get_cpu_capability()}))


def run_worker(args: list[str], env: dict[str, str] | None = None) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, check=False)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_index(folder: Path, sizes: list[int], avx2: bool) -> list[str]:
    rows = []
    print(f"{'CPU':<8} {'size':<14} {'search':<14} {'build':>8} {'query':>9} "
          f"{'index':>9} {'anon RSS':>9} {'same':>6}")
    for n in sizes:
        for dim in (2048, 128):
            path = embeddings_file(folder, n, dim)
            for cpu, env in (("native", None), ("AVX2", AVX2)) if avx2 else (("native", None),):
                for search, dtype in (("exact", "float16"), ("fast", "float16"),
                                      ("fast", "bfloat16")):
                    r = run_worker(["--index-worker", str(path), search, dtype], env)
                    what = "exact fp32" if search == "exact" else f"fast {dtype}"
                    same = f"{r['same']}/{QUERIES}" if r["same"] is not None else ""
                    line = (f"{cpu:<8} {f'{n:,} x {dim}':<14} {what:<14} "
                            f"{r['build_s']:>7.2f}s {r['query_ms']:>7.1f}ms "
                            f"{r['index_mb']:>7.0f}MB {r['anon_mb']:>7.0f}MB {same:>6}")
                    print(line, flush=True)
                    rows.append(line)
    return rows


# ------------------------------------------------------------------ the Explore page


def synthetic_run(folder: Path, n: int = 100_000) -> Path:
    """A run folder with no checkpoint whose random-init embeddings (n x 2048 and n x 128)
    and UMAP map (of h, with the default settings) are saved, as after `map`."""
    from engine.evaluate.maps import MapParams, features_fingerprint, map_path
    from engine.run.io import write_json_atomic
    from engine.run.layout import RunDir

    run_dir = folder / "run-100k"
    layout = RunDir(run_dir)
    files = layout.embedding("random")
    if files.index.is_file():
        return run_dir
    files.path.mkdir(parents=True)
    layout.config.write_text(json.dumps({"data": str(folder / "images")}), encoding="utf-8")
    h = np.load(embeddings_file(folder, n, 2048), mmap_mode="r")
    z = np.load(embeddings_file(folder, n, 128), mmap_mode="r")
    np.save(files.features, h)
    np.save(files.projections, z)
    classes = [f"class{c:02d}" for c in range(10)]
    labels = (np.arange(n) % 10).tolist()
    write_json_atomic(files.index, {
        "checkpoint": "random", "checkpoint_sha256": "random", "root": str(folder / "images"),
        "classes": classes, "paths": [f"{classes[i % 10]}/img_{i:06d}.jpg" for i in range(n)],
        "labels": labels})
    params = MapParams()
    path = map_path(layout.maps, params, "random-h")
    path.parent.mkdir(parents=True, exist_ok=True)
    coords = np.random.default_rng(0).standard_normal((n, 2)).astype(np.float32)
    np.save(path, coords)
    write_json_atomic(path.with_suffix(".json"), {
        "params": params.to_dict(), "key": params.key(), "tag": "random-h", "points": n,
        "features_fingerprint": features_fingerprint(np.load(files.features,
                                                             mmap_mode="r"))})
    return run_dir


def page_worker(run_dir: str) -> None:
    """In a fresh process: the loading steps, then the Explore page opening the run."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from app.model import explore_data
    from engine.evaluate.maps import MapParams

    run = Path(run_dir)
    out = {}
    for when in ("first", "second"):
        start = time.perf_counter()
        data = explore_data.saved_map(run, "random", "h", MapParams())
        out[f"saved_map_{when}_s"] = time.perf_counter() - start
        assert data is not None and len(data) == 100_000
    for when in ("first", "later"):
        start = time.perf_counter()
        result = explore_data.saved_neighbours(run, "random", "h", 123, K)
        out[f"neighbours_{when}_s"] = time.perf_counter() - start
        assert result is not None and result["k"] == K
    start = time.perf_counter()
    data.index_of(str(Path(data.root) / data.paths[-1]))
    out["index_of_first_s"] = time.perf_counter() - start
    for cache in ("_embeddings_cache", "_index_cache"):  # (run against older code too)
        getattr(explore_data, cache, {}).clear()

    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from app.pages.explore_page import ExplorePage

    app = QApplication.instance() or QApplication([])
    page = ExplorePage(cache_dir=Path(tempfile.mkdtemp()))
    page.resize(1200, 800)
    page.show()
    app.processEvents()
    loop = QEventLoop()
    page.map_shown.connect(lambda method: loop.quit())
    QTimer.singleShot(120_000, loop.quit)
    start = time.perf_counter()
    page.set_run(run)
    loop.exec()
    out["page_map_shown_s"] = time.perf_counter() - start
    page.map_view.grab()  # draw it
    out["page_map_drawn_s"] = time.perf_counter() - start
    out["points"] = len(page.map_view.data) if page.map_view.data is not None else 0
    print(json.dumps(out))


def bench_page(folder: Path) -> list[str]:
    run_dir = synthetic_run(folder)
    subprocess.run(["sync"], check=False)
    r = run_worker(["--page-worker", str(run_dir)])
    lines = [
        f"saved map (100k, UMAP): {r['saved_map_first_s']:.2f} s first, "
        f"{r['saved_map_second_s']:.3f} s again",
        f"first neighbour query (builds the index): {r['neighbours_first_s']:.2f} s; "
        f"later: {r['neighbours_later_s'] * 1e3:.0f} ms",
        f"index_of (first call builds the dictionary): {r['index_of_first_s'] * 1e3:.0f} ms",
        f"Explore page, run chosen -> map shown: {r['page_map_shown_s']:.2f} s, drawn: "
        f"{r['page_map_drawn_s']:.2f} s ({r['points']:,} points)"]
    for line in lines:
        print(line, flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-200k", action="store_true", help="skip 200k images")
    parser.add_argument("--sizes", type=int, nargs="+", help="these numbers of images "
                        "instead (0: none)")
    parser.add_argument("--no-avx2", action="store_true", help="skip the emulated AVX2 CPU")
    parser.add_argument("--no-page", action="store_true", help="skip the Explore page")
    parser.add_argument("--folder", help="where the synthetic files go (default: a "
                        "temporary folder)")
    parser.add_argument("--index-worker", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--page-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.index_worker:
        index_worker(*args.index_worker)
        return
    if args.page_worker:
        page_worker(args.page_worker)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.folder) if args.folder else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        sizes = args.sizes or [10_000, 100_000] + ([] if args.no_200k else [200_000])
        rows = bench_index(folder, [n for n in sizes if n > 0], not args.no_avx2)
        if not args.no_page:
            rows += bench_page(folder)
        record("neighbours", [{"result": row} for row in rows])
    print(f"\nLoad average when finished: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
