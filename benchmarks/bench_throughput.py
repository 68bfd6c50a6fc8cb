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

Results are appended to benchmarks/results/throughput.csv.

Run:  .venv/bin/python benchmarks/bench_throughput.py [--device cpu|cuda] [--seconds 20]
      [--methods simclr moco] [--backbones resnet18 resnet50] [--sizes 32 64 96 224]
      [--compile] [--fp32] [--largest-batch]
"""

from __future__ import annotations

import argparse
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
    """Whether one SimCLR training step of this configuration fits in GPU memory."""
    try:
        bench_one(backbone, size, batch, device_name, seconds=0.0)
        return True
    except torch.OutOfMemoryError:
        return False
    finally:
        torch.cuda.empty_cache()


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
    parser.add_argument("--largest-batch", action="store_true",
                        help="GPU: find the largest ResNet-50 batch at 224 px that fits")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    device, info = resolve_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    peaks = {"fp32": peak_flops(device, torch.float32)}
    if device.type == "cuda" or info.bf16:
        peaks["bf16"] = peak_flops(device, torch.bfloat16)
    if device.type == "cuda":
        peaks["fp16"] = peak_flops(device, torch.float16)
    print(f"device: {info.name}; measured matmul peak: "
          + ", ".join(f"{k} {v / 1e9:,.0f} GFLOP/s" for k, v in peaks.items()), flush=True)
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
                r = bench_one(backbone, size, batch, args.device, args.seconds,
                              method=method, settings=settings)
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
                             "peak_memory_gb": r.peak_memory_gb})
    record("throughput", rows, args.results)
    if args.largest_batch:
        if device.type != "cuda":
            print("--largest-batch needs a GPU (it searches by out-of-memory errors)")
            return
        best = largest_batch(lambda b: step_fits("resnet50", 224, b, args.device), 64, 8192)
        print(f"largest ResNet-50 SimCLR batch at 224 px that fits in {info.memory_gb} GB: "
              f"{best}")
        record("largest_batch", [{"device": info.name, "memory_gb": info.memory_gb,
                                  "backbone": "resnet50", "size": 224, "batch": best}],
               args.results)


if __name__ == "__main__":
    main()
