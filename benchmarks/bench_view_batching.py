"""Two views in one forward pass of 2N images, or two passes of N: which trains faster here?

SimCLR's encoder sees both views of a batch. The engine concatenates them into one pass of
2N images (batch-norm statistics over both views, as in SimCLR's own code); lightly and
others call the encoder once per view. This times torchvision's ResNet-18 (small-image stem,
32 px by default) forward + backward + SGD step both ways, alternating, in the same process.

Run:  .venv/bin/python benchmarks/bench_view_batching.py [--batch 64] [--size 32]
      [--rounds 3] [--bf16]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time

import torch
import torchvision
from bench_results import record


def small_resnet18() -> torch.nn.Module:
    net = torchvision.models.resnet18()
    net.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    net.maxpool = torch.nn.Identity()
    net.fc = torch.nn.Identity()
    return net


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast, channels-last")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    memory_format = torch.channels_last if args.bf16 else torch.contiguous_format
    net = small_resnet18().to(memory_format=memory_format)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x1, x2 = (torch.randn(args.batch, 3, args.size, args.size).contiguous(
        memory_format=memory_format) for _ in range(2))

    def autocast() -> contextlib.AbstractContextManager:
        return torch.autocast("cpu", dtype=torch.bfloat16) if args.bf16 else \
            contextlib.nullcontext()

    def rate(joint: bool) -> float:
        times = []
        for _ in range(args.steps + 2):
            started = time.perf_counter()
            with autocast():
                if joint:
                    loss = net(torch.cat([x1, x2])).float().pow(2).mean()
                else:
                    loss = net(x1).float().pow(2).mean() + net(x2).float().pow(2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - started)
        return args.batch / statistics.median(times[2:])

    rows = []
    for r in range(args.rounds):
        joint, separate = rate(True), rate(False)
        print(f"round {r + 1}: one pass of {2 * args.batch}: {joint:.1f} pairs/s, two passes "
              f"of {args.batch}: {separate:.1f} pairs/s, ratio {joint / separate:.2f}",
              flush=True)
        rows.append({"size": args.size, "batch": args.batch,
                     "precision": "bf16 channels-last" if args.bf16 else "fp32",
                     "round": r + 1, "one_pass": joint, "two_passes": separate,
                     "ratio": joint / separate})
    record("view_batching", rows)


if __name__ == "__main__":
    main()
