"""The same SimCLR and MoCo v2 training, side by side in one run: this project against the
lightly library with torchvision's standard PIL augmentation pipeline.

Both train ResNet-18 with the small-image stem (3x3 conv, no max-pool; ``--backbone
resnet50`` and ``--standard-stem`` for the ImageNet model at large sizes) on the same folder of
JPEGs, at the same image size and batch, for the same number of steps, with SGD (momentum
0.9), the same augmentations (random resized crop, flip, colour jitter 0.8/0.8/0.8/0.2 with
p=0.8, grayscale p=0.2; blur off on both sides) and the same heads and losses:

- SimCLR: 512-512-128 projection head with batch norm (2048-512-128 on ResNet-50), NT-Xent
  at temperature 0.5;
- MoCo v2: 512-512-128 head (2048-512-128), momentum key encoder (m = 0.99), a queue of 4096
  negatives, InfoNCE at temperature 0.2.

Variants:

- ours: `engine.training.loop.train` itself with its automatic settings for this machine
  (decode-once uint8 cache, batched augmentations, and on a CPU with bf16 instructions bf16
  autocast and channels-last); pairs per second come from its step events (log_every=1);
- ours fp32: the same with precision fp32 (lightly's numerics) and the engine's automatic
  settings for fp32 on this machine (memory layout, view passes);
- lightly: `LightlyDataset` + lightly's `SimCLRTransform`/`MoCoV2Transform` (PIL,
  torchvision transforms) in a torch DataLoader with one worker per core, torchvision's
  resnet18 (resnet50), lightly's projection heads, `NTXentLoss` (with `memory_bank_size` for MoCo),
  `update_momentum`; fp32, as lightly trains by default; pairs per second timed per step
  the same way (data wait included, as in any training loop);
- lightly bf16 (where the CPU has bf16 instructions, or on a GPU): the same loop with
  bf16 autocast and channels-last, what a lightly user could add by hand.

Rounds alternate the variants so that all see the same machine state; the report gives each
round's figures and the ratios against lightly from the same round, and appends them to
benchmarks/results/vs_lightly.csv (``--results`` names another folder; ``--json FILE`` also
writes them to FILE). It also checks that our NT-Xent equals lightly's NTXentLoss on the same
inputs.

Needs the benchmark extra: pip install -e '.[bench]'. Without lightly only our side runs and
the report says so (``--require-lightly`` makes that an error, exit status 3).

Run:  .venv/bin/python benchmarks/bench_vs_lightly.py [--methods simclr moco] [--size 32]
      [--batch 64] [--steps 10] [--rounds 2] [--device cpu|cuda] [--backbone resnet50]
      [--standard-stem] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_results import RESULTS, record
from bench_train import make_jpeg_folder

from engine.config.resolve import cpu_has_native_bf16
from engine.config.train_config import TrainConfig
from engine.models.losses import nt_xent
from engine.run.events import EventWriter
from engine.training.loop import train

LR, MOMENTUM, WEIGHT_DECAY = 0.06, 0.9, 5e-4
TEMPERATURE = {"simclr": 0.5, "moco": 0.2}
QUEUE, KEY_MOMENTUM = 4096, 0.99
JITTER = {"cj_strength": 1.0, "cj_bright": 0.8, "cj_contrast": 0.8, "cj_sat": 0.8,
          "cj_hue": 0.2, "cj_prob": 0.8, "random_gray_scale": 0.2, "gaussian_blur": 0.0,
          "min_scale": 0.08}


class Collect:
    """An event stream that keeps the step events."""

    def __init__(self) -> None:
        self.steps: list[dict] = []

    def write(self, line: str) -> None:
        for part in line.splitlines():
            event = json.loads(part)
            if event.get("type") == "step":
                self.steps.append(event)

    def flush(self) -> None:
        pass


def ours(method: str, folder: Path, size: int, batch: int, steps: int, warmup: int,
         work: Path, device: str, fp32: bool, backbone: str = "resnet18",
         small_stem: bool = True, threads: int | None = None,
         cache_dir: Path | None = None) -> tuple[float, str]:
    """Median pairs/s of the engine's own training, and the precision, layout and view
    passes it used (``cache_dir``: a cache folder shared by several calls; default one in
    ``work``)."""
    settings = {
        "data": str(folder), "method": method, "backbone": backbone, "image_size": size,
        "batch_size": batch, "epochs": 1000, "max_steps": warmup + steps, "log_every": 1,
        "temperature": TEMPERATURE[method], "optimizer": "sgd", "lr": LR,
        "weight_decay": WEIGHT_DECAY, "sgd_momentum": MOMENTUM, "proj_hidden_dim": 512,
        "proj_out_dim": 128, "knn_every": 0, "device": device, "small_stem": small_stem,
        "augment": {"crop_scale_min": 0.08, "blur_p": 0.0}}
    if method == "moco":
        settings.update(queue_size=QUEUE, moco_momentum=KEY_MOMENTUM)
    if fp32:
        settings["precision"] = "fp32"
    if device == "cpu":
        settings["num_threads"] = threads or os.cpu_count()
    stream = Collect()
    result = train(TrainConfig.from_dict(settings), runs_root=work / "runs",
                   cache_dir=cache_dir or work / "cache", events=EventWriter(stream))
    assert result.status == "finished", result.reason
    config = json.loads((result.run_dir / "config.json").read_text())
    precision = config.get("precision", "?")
    if config.get("channels_last"):
        precision += " channels-last"
    if method != "moco" and config.get("view_passes"):
        precision += {"one": ", one pass of both views", "two": ", a pass per view"}[
            config["view_passes"]]
    return statistics.median(e["pairs_per_s"] for e in stream.steps[warmup:]), precision


def lightly_rate(method: str, folder: Path, size: int, batch: int, steps: int, warmup: int,
                 device_name: str, bf16: bool, backbone_name: str = "resnet18",
                 small_stem: bool = True, workers: int | None = None) -> float:
    """Median pairs/s of lightly's building blocks in a plain PyTorch training loop."""
    import torchvision
    from lightly.data import LightlyDataset
    from lightly.loss import NTXentLoss
    from lightly.models.modules import MoCoProjectionHead, SimCLRProjectionHead
    from lightly.models.utils import deactivate_requires_grad, update_momentum
    from lightly.transforms import MoCoV2Transform, SimCLRTransform

    device = torch.device(device_name)
    backbone = getattr(torchvision.models, backbone_name)()
    features = backbone.fc.in_features
    if method == "simclr":
        transform = SimCLRTransform(input_size=size, **JITTER)
        head = SimCLRProjectionHead(features, 512, 128)
        criterion = NTXentLoss(temperature=TEMPERATURE[method])
    else:
        transform = MoCoV2Transform(input_size=size, **JITTER)
        head = MoCoProjectionHead(features, 512, 128)
        criterion = NTXentLoss(temperature=TEMPERATURE[method], memory_bank_size=(QUEUE, 128))
    dataset = LightlyDataset(str(folder), transform=transform)
    workers = workers or os.cpu_count() or 1
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True,
                                         drop_last=True, num_workers=workers,
                                         persistent_workers=True,
                                         pin_memory=device.type == "cuda")
    if small_stem:
        backbone.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        backbone.maxpool = torch.nn.Identity()
    backbone.fc = torch.nn.Identity()
    model = torch.nn.Sequential(backbone, head).to(device)
    memory_format = torch.channels_last if bf16 else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    key_model = None
    if method == "moco":
        key_model = copy.deepcopy(model)
        deactivate_requires_grad(key_model)
    criterion = criterion.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM,
                                weight_decay=WEIGHT_DECAY)

    def autocast() -> contextlib.AbstractContextManager:
        return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else \
            contextlib.nullcontext()

    times = []
    done = 0
    started = time.perf_counter()
    while done < warmup + steps:
        for (x0, x1), _, _ in loader:
            x0 = x0.to(device, non_blocking=True, memory_format=memory_format)
            x1 = x1.to(device, non_blocking=True, memory_format=memory_format)
            with autocast():
                if key_model is None:
                    loss = criterion(model(x0), model(x1))
                else:
                    update_momentum(model, key_model, m=KEY_MOMENTUM)
                    query = model(x0)
                    with torch.no_grad():
                        key = key_model(x1)
                    loss = criterion(query, key)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            now = time.perf_counter()
            if done >= warmup:
                times.append(now - started)
            started = now
            done += 1
            if done >= warmup + steps:
                break
    del loader
    return batch / statistics.median(times)


def check_nt_xent() -> float:
    """Largest difference between our NT-Xent and lightly's NTXentLoss (float32)."""
    from lightly.loss import NTXentLoss

    worst = 0.0
    generator = torch.Generator().manual_seed(0)
    for n, d, t in [(8, 16, 0.1), (64, 128, 0.5), (256, 128, 0.2)]:
        z1 = torch.randn(n, d, generator=generator)
        z2 = torch.randn(n, d, generator=generator)
        theirs = NTXentLoss(temperature=t)(z1, z2)
        worst = max(worst, abs(float(nt_xent(z1, z2, t) - theirs)))
    return worst


def lightly_missing() -> str | None:
    """Why lightly cannot be imported here, or None when it can."""
    try:
        import lightly  # noqa: F401
    except ImportError as error:
        return f"lightly is not installed ({error}); pip install -e '.[bench]'"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=["simclr", "moco"],
                        choices=["simclr", "moco"])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--source-px", type=int, default=96,
                        help="side of the JPEGs (the crops are resized from them)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--backbone", default="resnet18", choices=["resnet18", "resnet50"])
    parser.add_argument("--standard-stem", action="store_true",
                        help="the ImageNet stem (7x7 conv, max-pool) instead of the small one")
    parser.add_argument("--workers", type=int, default=None,
                        help="lightly's DataLoader workers (default: one per core)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="PyTorch CPU threads of the training (default: one per core)")
    parser.add_argument("--no-fp32", action="store_true", help="skip the 'ours fp32' variant")
    parser.add_argument("--require-lightly", action="store_true",
                        help="without lightly, exit with status 3 (after our side ran)")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="folder of the results tables (default: benchmarks/results)")
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    low_precision = cpu_has_native_bf16() if args.device == "cpu" else \
        torch.cuda.is_bf16_supported()
    missing = lightly_missing()
    if missing:
        print(f"{missing}: only our side runs")
    else:
        print(f"NT-Xent: ours vs lightly NTXentLoss, largest difference {check_nt_xent():.2e} "
              "(float32, 3 shapes and temperatures)")
    small_stem = not args.standard_stem
    model = f"{'ResNet-50' if args.backbone == 'resnet50' else 'ResNet-18'} " \
        f"{'small' if small_stem else 'standard'} stem"
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, device {args.device}; "
          f"{model}, {args.size} px, batch {args.batch}, {args.steps} timed "
          f"steps after {args.warmup}, {args.images} JPEGs of {args.source_px} px", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = make_jpeg_folder(work / "images" / "all", args.images, args.source_px,
                                  args.source_px).parent
        common = (folder, args.size, args.batch, args.steps, args.warmup)
        model_args = {"backbone": args.backbone, "small_stem": small_stem,
                      "threads": args.threads}
        lightly_args = {"backbone_name": args.backbone, "small_stem": small_stem,
                        "workers": args.workers}
        for method in args.methods:
            for r in range(args.rounds):
                rates: dict[str, float] = {}
                rates["ours"], precision = ours(method, *common, work / f"{method}{r}a",
                                                args.device, fp32=False, **model_args)
                if not missing:
                    rates["lightly"] = lightly_rate(method, *common, args.device, bf16=False,
                                                    **lightly_args)
                if not args.no_fp32:
                    rates["ours fp32"], _ = ours(method, *common, work / f"{method}{r}b",
                                                 args.device, fp32=True, **model_args)
                if low_precision and not missing:
                    rates["lightly bf16"] = lightly_rate(method, *common, args.device,
                                                         bf16=True, **lightly_args)
                ratios = {}
                if not missing:
                    ratios["ratio"] = rates["ours"] / rates["lightly"]
                    if "ours fp32" in rates:
                        ratios["ratio_fp32"] = rates["ours fp32"] / rates["lightly"]
                    if "lightly bf16" in rates:
                        ratios["ratio_vs_lightly_bf16"] = rates["ours"] / rates["lightly bf16"]
                line = ", ".join(f"{k} {v:.1f}" for k, v in rates.items())
                told = ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()) or "no lightly"
                print(f"{method} round {r + 1} (pairs/s; ours: {precision}): {line}; {told}",
                      flush=True)
                rows.append({"method": method, "size": args.size, "batch": args.batch,
                             "device": args.device, "backbone": args.backbone,
                             "small_stem": small_stem, "round": r + 1,
                             "ours_precision": precision,
                             **{k.replace(" ", "_"): v for k, v in rates.items()}, **ratios})
    for method in args.methods:
        mine = [row for row in rows if row["method"] == method]
        if not missing:
            print(f"{method}: median ratio ours/lightly "
                  f"{statistics.median(row['ratio'] for row in mine):.2f}"
                  + ("" if args.no_fp32 else ", fp32 vs fp32 "
                     f"{statistics.median(row['ratio_fp32'] for row in mine):.2f}"))
    record("vs_lightly", rows, args.results)
    if args.json:
        args.json.write_text(json.dumps({"lightly": missing or "ran", "rows": rows},
                                        indent=1) + "\n")
    if missing and args.require_lightly:
        sys.exit(3)


if __name__ == "__main__":
    main()
