"""``contrastive-engine bench``: this machine's own training speed, in about a minute.

For a few configurations that suit the device (small images and ResNet-18 on a CPU,
ResNet-50 up to 224 px on a GPU) it times whole SimCLR training steps on random uint8
images: the batched augmentations, forward, NT-Xent, backward and the optimiser step, with
the device's automatic settings (bf16 autocast on a GPU and on CPUs with bf16 instructions,
channels-last). Each configuration gets
an equal share of the time budget: one warm-up step, then as many timed steps as fit (at
least one). The figures are pairs per second (median step), the model's FLOPs per pair
(counted with torch.utils.flop_counter for one forward and backward pass; a multiply-add
counts as two FLOPs) and, on a GPU, the peak memory, so a person sees which backbone,
image size and batch they can afford.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from engine.config.resolve import RunSettings, resolve_config, resolve_device
from engine.config.train_config import TrainConfig
from engine.data.augment import make_pairs
from engine.methods import DEFAULT_METHOD, BatchInfo, build_model, method_spec
from engine.training.optim import build_optimizer
from engine.training.step import autocast, grad_scaler, train_step

#: (backbone, image size, batch) tried on each kind of device, cheapest first.
#: The folder size the timed steps pretend to train on (a memory bank's size, MoCo's queue).
BENCH_IMAGES = 100_000

CANDIDATES = {
    "cpu": [("resnet18", 32, 64), ("resnet18", 64, 32), ("resnet50", 64, 8)],
    "cuda": [("resnet18", 96, 256), ("resnet50", 96, 256), ("resnet50", 224, 128)],
}


@dataclasses.dataclass
class BenchResult:
    backbone: str
    image_size: int
    batch_size: int
    pairs_per_s: float
    step_seconds: float
    timed_steps: int
    gflops_per_pair: float
    peak_memory_gb: float | None
    precision: str
    method: str = DEFAULT_METHOD
    channels_last: bool = False
    compiled: bool = False

    def epoch_minutes(self, images: int) -> float:
        return images / self.pairs_per_s / 60


def _flops_per_pair(model: torch.nn.Module, x1: torch.Tensor, x2: torch.Tensor,
                    batch: BatchInfo) -> float:
    """FLOPs of one forward and backward pass of the training model, per image pair (two
    pairs, the images ``batch`` describes first)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    two = BatchInfo(indices=batch.indices[:2], labels=batch.labels[:2])
    with counter:
        model(x1[:2], x2[:2], two).loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2


def bench_one(backbone: str, image_size: int, batch: int, device_name: str,
              seconds: float, *, method: str = DEFAULT_METHOD,
              settings: dict[str, Any] | None = None) -> BenchResult:
    """Time training steps of one configuration for about ``seconds``.

    ``settings``: further TrainConfig values (e.g. precision, channels_last, compile,
    queue_size) over the automatic ones.
    """
    device, info = resolve_device(device_name)
    asked = TrainConfig.from_dict({"data": ".", "backbone": backbone, "image_size": image_size,
                                   "batch_size": batch, "device": device_name, "epochs": 1,
                                   "method": method, **(settings or {})})
    # A folder of 100,000 images: MoCo's queue keeps its configured size and a memory
    # bank has the size it would have on such a folder.
    cfg = RunSettings.of(resolve_config(asked, info, typical_side=image_size,
                                        num_images=BENCH_IMAGES)[0])
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = build_model(cfg).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    train_model = torch.compile(model) if cfg.compile else model
    optimizer = build_optimizer(model, cfg.optimizer, 0.1, cfg.weight_decay, 0.9)
    scaler = grad_scaler(device, cfg.precision)
    images = torch.randint(0, 256, (batch, 3, cfg.cache_size, cfg.cache_size),
                           dtype=torch.uint8, generator=generator).to(device)
    rows = torch.randperm(BENCH_IMAGES, generator=generator)[:batch]
    batch_info = BatchInfo(indices=rows.to(device), labels=(rows % 10).to(device))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> float:
        started = time.perf_counter()
        x1, x2 = make_pairs(images, cfg.augment, image_size, generator)
        train_step(train_model, optimizer, scaler, x1, x2, device=device,
                   precision=cfg.precision, channels_last=cfg.channels_last, batch=batch_info)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - started

    deadline = time.perf_counter() + seconds
    step()  # warm-up: allocations, cuDNN autotuning, compilation
    times = [step()]
    while time.perf_counter() + statistics.median(times) < deadline:
        times.append(step())
    x1, x2 = make_pairs(images[:2], cfg.augment, image_size, generator)
    with autocast(device, cfg.precision):
        flops = _flops_per_pair(model, x1, x2, batch_info)
    median = statistics.median(times)
    memory = (torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda"
              else None)
    return BenchResult(backbone, image_size, batch, batch / median, median, len(times),
                       flops / 1e9, memory, cfg.precision, method, cfg.channels_last,
                       cfg.compile)


def run_bench(device_name: str = "auto", seconds: float = 50.0,
              report: Callable[[str], None] = print, *,
              method: str = DEFAULT_METHOD) -> list[BenchResult]:
    """Bench the device's candidate configurations within about ``seconds`` in all, with
    ``method``'s training steps."""
    device, info = resolve_device(device_name)
    candidates = CANDIDATES["cuda" if device.type == "cuda" else "cpu"]
    title = method_spec(method).title
    report(f"device: {info.name}" + (f", {info.memory_gb:.0f} GB" if info.memory_gb else "")
           + f"; {seconds:.0f} s budget, {title} steps on random images")
    results = []
    for backbone, size, batch in candidates:
        result = bench_one(backbone, size, batch, device_name, seconds / len(candidates),
                           method=method)
        results.append(result)
        memory = (f", peak {result.peak_memory_gb:.1f} GB" if result.peak_memory_gb is not None
                  else "")
        report(f"{backbone:>9} {size:>4} px batch {batch:>4} {result.precision:>5}: "
               f"{result.pairs_per_s:8.1f} pairs/s ({result.step_seconds:.2f} s/step, "
               f"{result.timed_steps} timed), {result.gflops_per_pair:.1f} GFLOP/pair, "
               f"{result.gflops_per_pair * result.pairs_per_s:.0f} GFLOP/s{memory}; "
               f"10,000 images: {result.epoch_minutes(10_000):.1f} min/epoch")
    return results


def summary(results: list[BenchResult]) -> dict[str, Any]:
    return {"results": [dataclasses.asdict(r) for r in results]}


def largest_batch(fits: Callable[[int], bool], start: int, limit: int) -> int:
    """The largest batch in [start, limit] for which ``fits(batch)`` is true, assuming that
    a batch that fits means every smaller one fits too; 0 if ``start`` does not fit.

    Doubles from ``start`` until a batch fails, then bisects between the last batch that fit
    and the first that did not: about 2 log2(limit / start) calls.
    """
    if start < 1 or limit < start:
        raise ValueError(f"need 1 <= start <= limit; got start {start}, limit {limit}")
    if not fits(start):
        return 0
    good, bad = start, None
    while bad is None:
        trial = min(good * 2, limit)
        if trial == good:
            return good
        if fits(trial):
            good = trial
        else:
            bad = trial
    while bad - good > 1:
        middle = (good + bad) // 2
        if fits(middle):
            good = middle
        else:
            bad = middle
    return good
