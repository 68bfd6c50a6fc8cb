"""fp32 training on the CPU against this machine's measured fp32 peak, ours and lightly's side
by side, and where the time of one of our fp32 steps goes.

Four parts, in one process per instruction set:

- the fp32 peak at the thread count training uses: the best rate of large ``torch.mm``
  products (4096 x 4096) and of a representative ResNet convolution (ResNet-18's first-stage
  3x3 convolution, 64 -> 64 channels on 32 x 32 maps, a batch of 128: both views of a batch of
  64 at 32 px with the small stem), forward and forward + backward, in NCHW and channels-last;
- for each training configuration (SimCLR and MoCo v2; ResNet-18 with the small stem at 32 px,
  batch 64 and 128; ResNet-18 and ResNet-50 at 64 px) our fp32 training
  (`engine.training.loop.train` with precision fp32 and its automatic settings for the rest)
  and lightly's plain PyTorch loop with torchvision PIL transforms, the two timed exactly as
  `bench_vs_lightly.py` times them (its functions are used); FLOPs per pair counted with
  torch.utils.flop_counter.FlopCounterMode over one forward and backward pass of the training
  model (a multiply-add counts as two FLOPs; MoCo's key-encoder forward pass included), the
  achieved GFLOP/s and its fraction of the peak: the best of the torch.mm and convolution
  rates (on AMD CPUs torch.mm runs MKL's AVX2 path, which oneDNN's convolutions outrun);
- our fp32 SimCLR step (ResNet-18 at 32 px, batch 64) in NCHW and channels-last, with one
  forward pass of both views and with a pass per view, the four timed in turn;
- a torch.profiler table of one of our fp32 steps (SimCLR, ResNet-18 at 32 px, batch 64,
  random images): the 15 operators with the most self CPU time, and that time summed by kind
  (convolution forward and backward, batch norm, ReLU, augmentation, optimiser, matrix
  products of the heads and the loss, copies and format conversions, the rest).

``--isa avx2`` runs it all again in a fresh process limited to AVX2 (oneDNN's
``ONEDNN_MAX_CPU_ISA=AVX2`` and ATen's ``ATEN_CPU_CAPABILITY=avx2``): what a CPU without bf16
or AVX-512 instructions does, on this machine. ``--all`` runs the native and the AVX2 pass one
after the other, each in its own process (about 7 minutes on the idle 2-core machine with
the defaults: one timed step per configuration and side after one warm-up step).

Each pass writes ``benchmarks/results/fp32-<isa>.json`` (``--results`` names another folder)
and appends its rows to ``fp32.csv`` there; the table is printed. lightly is looked for on
``--lightly-path`` (default /tmp/lightly-pkgs, a ``pip install --target`` of lightly 1.6.0 and
lightning-utilities, with --no-deps) when the venv lacks it; without it only our side runs.

Run:  .venv/bin/python benchmarks/bench_fp32.py --all
      .venv/bin/python benchmarks/bench_fp32.py [--isa native|avx2]
      [--configs simclr:resnet18:32:64 ...] [--steps 1] [--warmup 1] [--no-lightly] [--no-profile]
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
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_results import RESULTS, machine, record

#: (method, backbone, image size, batch): the configurations of issue 16's fp32 comparison.
CONFIGS = [(method, backbone, size, batch) for method in ("simclr", "moco")
           for backbone, size, batch in (("resnet18", 32, 64), ("resnet18", 32, 128),
                                         ("resnet18", 64, 16), ("resnet50", 64, 8))]
#: The environment that limits oneDNN and ATen to AVX2 (no AVX-512, no bf16 instructions).
AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
#: Kinds of operators in the profile, by the first pattern found in the operator's name.
KINDS = [
    ("convolution backward", ("convolution_backward", "conv2d_backward", "conv_backward")),
    ("convolution forward", ("convolution", "conv2d")),
    ("batch norm", ("batch_norm",)),
    ("ReLU", ("relu", "threshold_backward", "clamp_min")),
    ("matrix products (heads, loss)", ("aten::mm", "aten::addmm", "aten::bmm", "matmul",
                                       "aten::linear")),
    ("copies and format conversions", ("copy_", "contiguous", "clone", "_to_copy", "aten::to",
                                       "aten::cat", "empty_like", "as_strided")),
    ("pooling", ("pool", "aten::mean")),
    ("element-wise (add, mul, loss)", ("aten::add", "aten::mul", "aten::sub", "aten::div",
                                       "softmax", "logsumexp", "aten::exp", "aten::log",
                                       "aten::sum", "norm", "aten::where", "aten::fill_",
                                       "aten::zero_")),
]


def is_avx2_pass() -> bool:
    return os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() == "AVX2"


def best_rate(work: float, run: Callable[[], object], seconds: float, at_least: int = 3) -> float:
    """Best GFLOP/s of ``run()`` (``work`` FLOPs a call) over about ``seconds`` and at least
    ``at_least`` timed calls, after one untimed call (oneDNN creates its primitives then)."""
    run()
    best, calls = 0.0, 0
    deadline = time.perf_counter() + seconds
    while calls < at_least or time.perf_counter() < deadline:
        started = time.perf_counter()
        run()
        best = max(best, work / (time.perf_counter() - started) / 1e9)
        calls += 1
    return best


def mm_peak(n: int = 4096, seconds: float = 3.0) -> float:
    """Best GFLOP/s of fp32 n x n matrix products (torch.mm)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return best_rate(2 * n**3, lambda: torch.mm(a, b), seconds)


def conv_peak(channels_last: bool, seconds: float = 3.0) -> dict[str, float]:
    """Best GFLOP/s of ResNet-18's first-stage 3x3 convolution (64 -> 64 channels, 32 x 32,
    batch 128), forward alone and forward + backward (weights and input gradients)."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False)
    x = torch.randn(128, 64, 32, 32, requires_grad=True)
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last)
        x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    flops = 2 * 128 * 64 * 32 * 32 * 64 * 9
    grad = torch.ones(128, 64, 32, 32)
    if channels_last:
        grad = grad.contiguous(memory_format=torch.channels_last)

    def forward() -> None:
        with torch.no_grad():
            conv(x)

    def forward_backward() -> None:
        conv(x).backward(grad)

    return {"forward": best_rate(flops, forward, seconds / 2),
            "forward_backward": best_rate(3 * flops, forward_backward, seconds / 2)}


def flops_per_pair(method: str, backbone: str, size: int, batch: int) -> float:
    """FLOPs of one forward and backward pass of our training model, per image pair."""
    from engine.config.resolve import RunSettings, resolve_config, resolve_device
    from engine.config.train_config import TrainConfig
    from engine.data.augment import make_pairs
    from engine.methods import BatchInfo, build_model
    from engine.training.bench import BENCH_IMAGES, _flops_per_pair

    _, info = resolve_device("cpu")
    asked = TrainConfig.from_dict({"data": ".", "method": method, "backbone": backbone,
                                   "image_size": size, "batch_size": batch, "epochs": 1,
                                   "precision": "fp32", "device": "cpu",
                                   "proj_hidden_dim": 512, "proj_out_dim": 128})
    cfg = RunSettings.of(resolve_config(asked, info, typical_side=size,
                                        num_images=BENCH_IMAGES)[0])
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = build_model(cfg)
    images = torch.randint(0, 256, (2, 3, cfg.cache_size, cfg.cache_size), dtype=torch.uint8,
                           generator=generator)
    x1, x2 = make_pairs(images, cfg.augment, size, generator)
    rows = torch.arange(2)
    return _flops_per_pair(model, x1, x2, BatchInfo(indices=rows, labels=rows))


def kind_of(name: str, under: set[str]) -> str:
    """The profile's kind of the operator ``name`` whose enclosing ranges are ``under``."""
    if "augmentation" in under:
        return "augmentation"
    if any(label.startswith("Optimizer.") for label in under) or name.startswith(
            ("aten::_foreach", "Optimizer.")):
        return "optimiser"
    for kind, patterns in KINDS:
        if any(pattern in name for pattern in patterns):
            return kind
    return "other"


def layout_and_passes(size: int = 32, batch: int = 64, rounds: int = 2) -> list[dict]:
    """Our fp32 SimCLR step (ResNet-18, small stem, random images; augmentations included)
    in NCHW and channels-last, with one forward pass of the 2N views and with a pass per
    view: the four built side by side and timed in turn, ``rounds`` steps each after one
    warm-up step, so that a busy machine slows all four alike."""
    from engine.config.resolve import RunSettings, resolve_config, resolve_device
    from engine.config.train_config import TrainConfig
    from engine.data.augment import make_pairs
    from engine.methods import BatchInfo, build_model
    from engine.training.optim import build_optimizer
    from engine.training.step import grad_scaler, train_step

    device, info = resolve_device("cpu")
    generator = torch.Generator().manual_seed(0)
    steps, times = {}, {}
    for channels_last in (False, True):
        for passes in ("one", "two"):
            asked = TrainConfig.from_dict({
                "data": ".", "method": "simclr", "backbone": "resnet18", "image_size": size,
                "batch_size": batch, "epochs": 1, "precision": "fp32", "device": "cpu",
                "optimizer": "sgd", "proj_hidden_dim": 512, "proj_out_dim": 128,
                "channels_last": channels_last, "view_passes": passes})
            cfg = RunSettings.of(resolve_config(asked, info, typical_side=size,
                                                num_images=10_000)[0])
            torch.manual_seed(0)
            model = build_model(cfg)
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
            optimizer = build_optimizer(model, "sgd", 0.06, 5e-4, 0.9)
            images = torch.randint(0, 256, (batch, 3, cfg.cache_size, cfg.cache_size),
                                   dtype=torch.uint8, generator=generator)
            rows = torch.arange(batch)

            def step(model=model, optimizer=optimizer, images=images, cfg=cfg,
                     rows=rows) -> float:
                started = time.perf_counter()
                x1, x2 = make_pairs(images, cfg.augment, size, generator)
                train_step(model, optimizer, grad_scaler(device, "fp32"), x1, x2,
                           device=device, precision="fp32", channels_last=cfg.channels_last,
                           batch=BatchInfo(indices=rows, labels=rows))
                return time.perf_counter() - started

            key = ("channels-last" if channels_last else "NCHW", passes)
            steps[key], times[key] = step, []
    for step in steps.values():
        step()  # warm-up
    for _ in range(rounds):
        for key, step in steps.items():
            times[key].append(step())
    return [{"layout": layout, "view_passes": passes,
             "pairs_per_s": batch / statistics.median(times[(layout, passes)]),
             "best_pairs_per_s": batch / min(times[(layout, passes)])}
            for layout, passes in steps]


def profile_step(size: int = 32, batch: int = 64, steps: int = 2) -> dict:
    """Self CPU time of one of our fp32 SimCLR steps (ResNet-18, small stem, random images),
    per operator and per kind, averaged over ``steps`` profiled steps after one warm-up."""
    from torch.profiler import ProfilerActivity, profile, record_function

    from engine.config.resolve import RunSettings, resolve_config, resolve_device
    from engine.config.train_config import TrainConfig
    from engine.data.augment import make_pairs
    from engine.methods import BatchInfo, build_model
    from engine.training.optim import build_optimizer
    from engine.training.step import grad_scaler, train_step

    device, info = resolve_device("cpu")
    asked = TrainConfig.from_dict({"data": ".", "method": "simclr", "backbone": "resnet18",
                                   "image_size": size, "batch_size": batch, "epochs": 1,
                                   "precision": "fp32", "device": "cpu", "optimizer": "sgd",
                                   "proj_hidden_dim": 512, "proj_out_dim": 128})
    cfg = RunSettings.of(resolve_config(asked, info, typical_side=size, num_images=10_000)[0])
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = build_model(cfg)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, "sgd", 0.06, 5e-4, 0.9)
    scaler = grad_scaler(device, "fp32")
    images = torch.randint(0, 256, (batch, 3, cfg.cache_size, cfg.cache_size),
                           dtype=torch.uint8, generator=generator)
    rows = torch.arange(batch)
    info_rows = BatchInfo(indices=rows, labels=rows % 10)

    def step() -> None:
        with record_function("augmentation"):
            x1, x2 = make_pairs(images, cfg.augment, size, generator)
        train_step(model, optimizer, scaler, x1, x2, device=device, precision="fp32",
                   channels_last=cfg.channels_last, batch=info_rows)

    step()
    started = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    wall = (time.perf_counter() - started) / steps
    events = prof.events()
    by_kind: dict[str, float] = {}
    by_op: dict[tuple[str, str], list[float]] = {}  # (operator, kind): [self us, calls]
    for event in events:
        self_us = event.self_cpu_time_total
        if not self_us:
            continue
        under, parent = set(), event.cpu_parent
        while parent is not None:
            under.add(parent.name)
            parent = parent.cpu_parent
        kind = kind_of(event.name, under | {event.name})
        by_kind[kind] = by_kind.get(kind, 0.0) + self_us
        entry = by_op.setdefault((event.name, kind), [0.0, 0.0])
        entry[0] += self_us
        entry[1] += 1
    total = sum(by_kind.values())
    top = sorted(by_op.items(), key=lambda item: -item[1][0])[:15]
    return {
        "config": {"method": "simclr", "backbone": "resnet18", "size": size, "batch": batch,
                   "channels_last": cfg.channels_last, "view_passes": cfg.view_passes},
        "step_seconds": wall, "profiled_seconds": total / 1e6 / steps,
        "operators": [{"name": name, "share": us / total, "ms_per_step": us / 1e3 / steps,
                       "calls_per_step": calls / steps, "kind": kind}
                      for (name, kind), (us, calls) in top],
        "kinds": {kind: us / total for kind, us in sorted(by_kind.items(),
                                                          key=lambda item: -item[1])},
    }


def measure(configs: list[tuple[str, str, int, int]], args: argparse.Namespace,
            lightly: bool) -> list[dict]:
    """Each configuration's pairs/s (ours, lightly's), FLOPs per pair and GFLOP/s."""
    from bench_train import make_jpeg_folder
    from bench_vs_lightly import lightly_rate, ours

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = make_jpeg_folder(work / "images" / "all", args.images, 96, 96).parent
        for n, (method, backbone, size, batch) in enumerate(configs):
            common = (folder, size, batch, args.steps, args.warmup)
            flops = flops_per_pair(method, backbone, size, batch)
            mine, setting = ours(method, *common, work / f"run{n}", "cpu", fp32=True,
                                 backbone=backbone, threads=args.threads,
                                 cache_dir=work / "cache")
            theirs = (lightly_rate(method, *common, "cpu", bf16=False, backbone_name=backbone,
                                   workers=args.workers) if lightly else None)
            row = {"method": method, "backbone": backbone, "size": size, "batch": batch,
                   "ours_settings": setting, "ours": mine, "lightly": theirs,
                   "ratio": mine / theirs if theirs else None,
                   "gflop_per_pair": flops / 1e9, "ours_gflops": mine * flops / 1e9,
                   "lightly_gflops": theirs * flops / 1e9 if theirs else None}
            rows.append(row)
            print(row_line(row, args.peak), flush=True)
    return rows


def row_line(row: dict, peak: float) -> str:
    theirs = row["lightly"]
    part = (f"lightly {theirs:6.1f} ({row['lightly_gflops'] / peak:4.0%}) ratio "
            f"{row['ratio']:.2f}" if theirs else "lightly -")
    return (f"{row['method']:>6} {row['backbone']:>8} {row['size']:>3} px b{row['batch']:<4} "
            f"{row['gflop_per_pair']:6.2f} GFLOP/pair: ours {row['ours']:6.1f} pairs/s "
            f"{row['ours_gflops']:5.0f} GFLOP/s ({row['ours_gflops'] / peak:4.0%} of peak), "
            f"{part}  [{row['ours_settings']}]")


def run_pass(args: argparse.Namespace) -> dict:
    """One instruction set's peak, configurations and profile (this process's ISA)."""
    torch.set_num_threads(args.threads)
    isa = "avx2" if is_avx2_pass() else "native"
    lightly = not args.no_lightly
    if lightly:
        try:
            import lightly as _  # noqa: F401
        except ImportError as error:
            print(f"lightly cannot be imported ({error}): only our side runs")
            lightly = False
    print(f"{isa}: {machine()}, torch {torch.__version__}, ATen capability "
          f"{torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads",
          flush=True)
    mm = mm_peak(seconds=args.peak_seconds)
    convs = {layout: conv_peak(layout == "channels_last", args.peak_seconds)
             for layout in ("nchw", "channels_last")}
    # The yardstick: the best fp32 rate measured. torch.mm runs MKL's sgemm, which on AMD
    # CPUs takes its AVX2 path, so oneDNN's AVX-512 convolutions can outrun it.
    peak = max([mm] + [rate for conv in convs.values() for rate in conv.values()])
    args.peak = peak
    print(f"fp32 peak: torch.mm 4096^2 {mm:.0f} GFLOP/s; ResNet-18 stage-1 conv "
          + "; ".join(f"{layout} forward {c['forward']:.0f}, forward+backward "
                      f"{c['forward_backward']:.0f}" for layout, c in convs.items())
          + f" GFLOP/s; the yardstick is the best of these, {peak:.0f}", flush=True)
    variants = layout_and_passes(rounds=args.rounds) if args.rounds else []
    for v in variants:
        print(f"SimCLR ResNet-18 32 px batch 64, fp32 {v['layout']:>13}, "
              f"{'one pass of 2N' if v['view_passes'] == 'one' else 'a pass per view':<15}: "
              f"{v['pairs_per_s']:5.1f} pairs/s (best step {v['best_pairs_per_s']:5.1f})",
              flush=True)
    configs = [tuple(c) for c in args.configs]
    rows = measure(configs, args, lightly)
    result = {"isa": isa, "machine": machine(), "torch": torch.__version__,
              "capability": torch.backends.cpu.get_cpu_capability(),
              "threads": torch.get_num_threads(), "mm_peak_gflops": mm, "peak_gflops": peak,
              "conv_peak_gflops": convs, "steps": args.steps, "warmup": args.warmup,
              "lightly": lightly, "rows": rows, "layout_and_passes": variants}
    if not args.no_profile:
        result["profile"] = prof = profile_step(steps=args.profile_steps)
        print(f"profile of one fp32 step ({prof['config']}): {prof['step_seconds']:.2f} s, "
              f"{prof['profiled_seconds']:.2f} s of self CPU time on the step's thread")
        for op in prof["operators"]:
            print(f"  {op['name']:<44} {op['share']:6.1%} {op['ms_per_step']:8.1f} ms "
                  f"{op['calls_per_step']:6.0f} calls  ({op['kind']})")
        print("  by kind: " + ", ".join(f"{kind} {share:.1%}"
                                        for kind, share in prof["kinds"].items()), flush=True)
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / f"fp32-{isa}.json"
    path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"written {path}")
    if rows:
        record("fp32", [{"isa": isa, "mm_peak_gflops": mm, "peak_gflops": peak, **row}
                        for row in rows],
               args.results)
    return result


def print_summary(results: list[dict]) -> None:
    print("\n| CPU | method | backbone | px | batch | GFLOP/pair | ours | of peak | lightly "
          "| of peak | ours / lightly |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for result in results:
        peak = result.get("peak_gflops", result["mm_peak_gflops"])
        for row in result["rows"]:
            theirs = row["lightly"]
            print(f"| {result['isa']} ({peak:.0f} GFLOP/s) | {row['method']} | "
                  f"{row['backbone']} | {row['size']} | {row['batch']} | "
                  f"{row['gflop_per_pair']:.2f} | {row['ours']:.1f} | "
                  f"{row['ours_gflops'] / peak:.0%} | "
                  + (f"{theirs:.1f} | {row['lightly_gflops'] / peak:.0%} | {row['ratio']:.2f} |"
                     if theirs else "- | - | - |"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--all", action="store_true",
                        help="the native and the AVX2 pass, each in a fresh process")
    parser.add_argument("--isa", choices=["native", "avx2"], default="native",
                        help="avx2: run in a fresh process limited to AVX2 (no bf16)")
    parser.add_argument("--configs", nargs="+", type=lambda text: _config(text),
                        default=CONFIGS, metavar="METHOD:BACKBONE:PX:BATCH")
    parser.add_argument("--steps", type=int, default=1,
                        help="timed steps per configuration and side (default 1: --all "
                             "stays under 8 minutes on the idle 2-core machine)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before them")
    parser.add_argument("--images", type=int, default=512, help="JPEGs of the folder")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="PyTorch threads of the training and the peak (default: cores)")
    parser.add_argument("--workers", type=int, default=None,
                        help="lightly's DataLoader workers (default: one per core)")
    parser.add_argument("--peak-seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=2,
                        help="timed steps of each layout and view-pass variant (0: none)")
    parser.add_argument("--no-lightly", action="store_true")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--profile-steps", type=int, default=1,
                        help="profiled steps (after one warm-up step)")
    parser.add_argument("--lightly-path", type=Path, default=Path("/tmp/lightly-pkgs"),
                        help="a folder holding lightly, used when the venv has none")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.lightly_path.is_dir() and str(args.lightly_path) not in sys.path:
        sys.path.append(str(args.lightly_path))  # DataLoader workers inherit it (fork)
    if args.all:
        results = []
        rest = [a for a in sys.argv[1:] if a != "--all"]
        for isa in ("native", "avx2"):
            env = dict(os.environ, **(AVX2_ENV if isa == "avx2" else {}))
            if isa == "native":
                for name in AVX2_ENV:
                    env.pop(name, None)
            done = subprocess.run([sys.executable, __file__, *rest, "--isa", isa], env=env,
                                  check=False)
            if done.returncode:
                sys.exit(done.returncode)
            results.append(json.loads((args.results / f"fp32-{isa}.json").read_text()))
        print_summary(results)
        return
    if args.isa == "avx2" and not is_avx2_pass():
        env = dict(os.environ, **AVX2_ENV)
        os.execve(sys.executable, [sys.executable, __file__, *sys.argv[1:]], env)
    if args.isa == "native" and is_avx2_pass():
        parser.error("--isa native in a process limited to AVX2 (ONEDNN_MAX_CPU_ISA=AVX2)")
    print_summary([run_pass(args)])


def _config(text: str) -> tuple[str, str, int, int]:
    method, backbone, size, batch = text.split(":")
    return method, backbone, int(size), int(batch)


if __name__ == "__main__":
    main()
