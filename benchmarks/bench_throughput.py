"""Training throughput across methods, backbones and image sizes, and as a fraction of the
hardware's limit.

For each configuration (SimCLR and MoCo v2; ResNet-18 and ResNet-50; 32, 64, 96 and 224 px)
it times whole training steps on random uint8 images with `engine.training.bench.bench_one`: the
batched augmentations, forward, loss, backward and the optimiser step, after one warm-up
step, with the device's automatic settings (bf16 autocast and channels-last on a GPU and on
a CPU with bf16 instructions; ``--fp32`` forces float32 and NCHW). It reports:

- pairs per second (median step);
- model FLOPs per pair: counted with torch.utils.flop_counter.FlopCounterMode over one
  forward and backward pass of the training model (convolutions and matrix products; a
  multiply-add counts as two FLOPs; element-wise work, augmentations and the optimiser are
  not counted). For MoCo the key encoder's forward pass is included;
- the fraction of the hardware's limit: FLOPs per pair x pairs/s / peak FLOP/s. The peak is
  measured here, as the best rate of large square matrix products (4096 x 4096, bf16 and
  fp32) on the same device, since a shared machine's datasheet figure is not what it
  delivers; the fraction uses the peak of the precision the step ran in;
- on a GPU, the peak memory, and with ``--largest-batch`` the largest ResNet-50 batch at
  224 px that fits in its memory (doubling, then bisection on out-of-memory errors).

Results are appended to benchmarks/results/throughput.csv (``--results`` names another
folder); ``--jsonl FILE`` also writes each configuration's row to FILE as soon as it is
measured, so that a run stopped by a time limit keeps what it finished. With ``--keep-going``
a configuration that fails (an error while compiling, out of memory) is recorded as a row
with its error and the grid goes on. ``--skip-grid --largest-batch`` runs only the search.

Run:  .venv/bin/python benchmarks/bench_throughput.py [--device cpu|cuda] [--seconds 20]
      [--methods simclr moco] [--backbones resnet18 resnet50] [--sizes 32 64 96 224]
      [--compile] [--fp32] [--largest-batch] [--jsonl FILE] [--keep-going]
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_results import RESULTS, record

from engine.config.resolve import resolve_device
from engine.methods import METHODS
from engine.training.bench import bench_one, largest_batch

#: (backbone, size) -> batch: the CPU keeps a step to a few seconds, a GPU fills its memory.
CPU_BATCH = {("resnet18", 32): 64, ("resnet18", 64): 32, ("resnet18", 96): 32,
             ("resnet18", 224): 16, ("resnet50", 32): 32, ("resnet50", 64): 8,
             ("resnet50", 96): 16, ("resnet50", 224): 8}
GPU_BATCH = {("resnet18", 32): 1024, ("resnet18", 64): 512, ("resnet18", 96): 512,
             ("resnet18", 224): 256, ("resnet50", 32): 512, ("resnet50", 64): 256,
             ("resnet50", 96): 256, ("resnet50", 224): 256}


def peak_flops(device: torch.device, dtype: torch.dtype, n: int = 4096,
               seconds: float = 3.0) -> float:
    """Best FLOP/s of n x n matrix products on ``device`` within about ``seconds``."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best = 0.0
    deadline = time.perf_counter() + seconds
    torch.mm(a, b)  # warm-up
    while time.perf_counter() < deadline:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = max(best, 2 * n**3 / (time.perf_counter() - started))
    return best


def step_fits(backbone: str, size: int, batch: int, device_name: str) -> bool:
    """Whether one SimCLR training step of this configuration fits in GPU memory.

    Besides out-of-memory errors, a runtime error that a large batch raises (a cuDNN or
    cuBLAS allocation failure, a kernel's 32-bit index limit) counts as not fitting: such a
    batch does not train either. The error is printed.
    """
    try:
        bench_one(backbone, size, batch, device_name, seconds=0.0)
        return True
    except torch.OutOfMemoryError:
        return False
    except RuntimeError as error:
        print(f"  batch {batch}: {type(error).__name__}: {str(error).splitlines()[0][:200]}")
        return False
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def append_jsonl(path: Path | None, row: dict) -> None:
    """Append ``row`` to the JSON-lines file ``path`` (nothing when ``path`` is None)."""
    if path is not None:
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


def search_largest(args: argparse.Namespace, device: torch.device, info: object) -> None:
    """The largest SimCLR batch of ``--largest-backbone`` (ResNet-50) at ``--largest-size``
    px that fits, searched in multiples of ``--largest-step``; every trial is appended to
    ``--jsonl`` as it ends.

    A CPU has no out-of-memory error to search by: there the search runs only up to
    ``--largest-limit`` (a smoke test of the search) and says the limit was reached.
    """
    step, size = args.largest_step, args.largest_size
    if device.type != "cuda" and args.largest_limit is None:
        print("--largest-batch needs a GPU (it searches by out-of-memory errors); on a CPU "
              "give --largest-limit to try the search up to that batch")
        return
    trials: list[dict] = []

    def fits(units: int) -> bool:
        if device.type == "cuda":  # the last trial's tensors are gone before the next
            gc.collect()
            torch.cuda.empty_cache()
        started = time.perf_counter()
        ok = step_fits(args.largest_backbone, size, units * step, args.device)
        trials.append({"kind": "largest_batch_trial", "batch": units * step, "fits": ok,
                       "seconds": time.perf_counter() - started})
        append_jsonl(args.jsonl, trials[-1])
        print(f"  batch {units * step:>5}: {'fits' if ok else 'out of memory'}", flush=True)
        return ok

    limit = max(1, (args.largest_limit or 8192) // step)
    best = largest_batch(fits, max(1, args.largest_start // step), limit) * step
    capped = best == limit * step
    memory_gb = getattr(info, "memory_gb", None)
    where = f"{memory_gb} GB" if memory_gb else "memory"
    note = " (the search's limit: larger batches were not tried)" if capped else ""
    print(f"largest {args.largest_backbone} SimCLR batch at {size} px that fits in {where}: "
          f"{best}{note}")
    row = {"kind": "largest_batch", "device": getattr(info, "name", str(device)),
           "memory_gb": memory_gb, "backbone": args.largest_backbone, "size": size,
           "batch": best,
           "step": step, "capped_at_limit": capped, "trials": len(trials)}
    append_jsonl(args.jsonl, row)
    record("largest_batch", [{k: v for k, v in row.items() if k != "kind"}], args.results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--backbones", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[32, 64, 96, 224])
    parser.add_argument("--seconds", type=float, default=15.0,
                        help="time per configuration (at least one timed step)")
    parser.add_argument("--batch", type=int, help="one batch size for every configuration")
    parser.add_argument("--fp32", action="store_true", help="float32 and NCHW throughout")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--compile-backend", default=None,
                        help="torch.compile's backend (default inductor); 'eager' captures the "
                             "graphs without generating code: a quick check of the path")
    parser.add_argument("--largest-batch", action="store_true",
                        help="GPU: find the largest ResNet-50 batch at 224 px that fits")
    parser.add_argument("--largest-backbone", default="resnet50",
                        help="backbone of the largest-batch search (default resnet50)")
    parser.add_argument("--largest-size", type=int, default=224,
                        help="image size of the largest-batch search (default 224)")
    parser.add_argument("--largest-start", type=int, default=64,
                        help="first batch the search tries (default 64)")
    parser.add_argument("--largest-limit", type=int,
                        help="largest batch the search tries (default 8192; on a CPU, "
                             "where nothing runs out of memory, it must be given)")
    parser.add_argument("--largest-step", type=int, default=1,
                        help="search in multiples of this batch (default 1: exact)")
    parser.add_argument("--skip-grid", action="store_true",
                        help="no grid (with --largest-batch: only the search)")
    parser.add_argument("--peak-n", type=int, default=4096,
                        help="side of the matrices of the peak measurement (default 4096)")
    parser.add_argument("--peak-seconds", type=float, default=3.0,
                        help="time per precision of the peak measurement (default 3)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="PyTorch CPU threads (default: one per core)")
    parser.add_argument("--keep-going", action="store_true",
                        help="record a configuration that fails and go on with the next")
    parser.add_argument("--jsonl", type=Path,
                        help="also append each row to this JSON-lines file as it is measured")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    device, info = resolve_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    if args.compile_backend:
        torch.compile = functools.partial(torch.compile, backend=args.compile_backend)
    if args.skip_grid:
        if args.largest_batch:
            search_largest(args, device, info)
        return
    dtypes = {"fp32": torch.float32}
    if device.type == "cuda" or info.bf16:
        dtypes["bf16"] = torch.bfloat16
    if device.type == "cuda":
        dtypes["fp16"] = torch.float16
    peaks = {k: peak_flops(device, dtype, args.peak_n, args.peak_seconds)
             for k, dtype in dtypes.items()}
    print(f"device: {info.name}; measured matmul peak: "
          + ", ".join(f"{k} {v / 1e9:,.0f} GFLOP/s" for k, v in peaks.items()), flush=True)
    append_jsonl(args.jsonl, {"kind": "peak", "device": info.name, "matrix_side": args.peak_n,
                              **{f"{k}_gflops": v / 1e9 for k, v in peaks.items()}})
    settings = {"precision": "fp32", "channels_last": False} if args.fp32 else {}
    if args.compile:
        settings["compile"] = True
    table = GPU_BATCH if device.type == "cuda" else CPU_BATCH
    rows = []
    print(f"{'method':>7} {'backbone':>9} {'px':>4} {'batch':>5} {'precision':>16} "
          f"{'pairs/s':>9} {'GFLOP/pair':>10} {'GFLOP/s':>8} {'of peak':>7} {'memory':>8}")
    for method in args.methods:
        for backbone in args.backbones:
            for size in args.sizes:
                batch = args.batch or table[(backbone, size)]
                started = time.perf_counter()
                try:
                    r = bench_one(backbone, size, batch, args.device, args.seconds,
                                  method=method, settings=settings)
                except Exception as error:  # recorded, and the grid goes on
                    if not args.keep_going:
                        raise
                    message = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
                    print(f"{method:>7} {backbone:>9} {size:>4} {batch:>5} failed: {message}",
                          flush=True)
                    append_jsonl(args.jsonl, {"kind": "error", "method": method,
                                              "backbone": backbone, "size": size,
                                              "batch": batch, "compile": args.compile,
                                              "error": message})
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                    continue
                wall = time.perf_counter() - started
                rate = r.gflops_per_pair * 1e9 * r.pairs_per_s
                fraction = rate / peaks.get(r.precision, peaks["fp32"])
                precision = r.precision + (" channels-last" if r.channels_last else "")
                memory = f"{r.peak_memory_gb:.1f} GB" if r.peak_memory_gb is not None else "-"
                print(f"{method:>7} {backbone:>9} {size:>4} {batch:>5} {precision:>16} "
                      f"{r.pairs_per_s:>9.1f} {r.gflops_per_pair:>10.2f} {rate / 1e9:>8.0f} "
                      f"{fraction:>7.1%} {memory:>8}", flush=True)
                rows.append({"device": info.name, "method": method, "backbone": backbone,
                             "size": size, "batch": batch, "precision": precision,
                             "compiled": r.compiled, "pairs_per_s": r.pairs_per_s,
                             "timed_steps": r.timed_steps,
                             "gflops_per_pair": r.gflops_per_pair,
                             "fraction_of_peak": fraction,
                             "peak_gflops": peaks.get(r.precision, peaks["fp32"]) / 1e9,
                             "peak_memory_gb": r.peak_memory_gb,
                             "wall_s": wall})
                append_jsonl(args.jsonl, {"kind": "row", **rows[-1], "compile_backend": (
                    args.compile_backend or "inductor") if r.compiled else None})
    if rows:
        record("throughput", rows, args.results)
    if args.largest_batch:
        search_largest(args, device, info)


if __name__ == "__main__":
    main()
