"""benchmarks/bench_fp32.py: the profile's kinds of operators, the peak's timing, and the FLOPs
per pair against the convolutions and matrix products counted by hand."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_fp32  # noqa: E402


def test_operators_are_sorted_into_kinds_by_name_and_enclosing_range() -> None:
    kind = bench_fp32.kind_of
    assert kind("aten::convolution_backward", set()) == "convolution backward"
    assert kind("aten::mkldnn_convolution", set()) == "convolution forward"
    assert kind("aten::native_batch_norm_backward", set()) == "batch norm"
    assert kind("aten::threshold_backward", set()) == "ReLU"
    assert kind("aten::mm", set()) == "matrix products (heads, loss)"
    assert kind("aten::copy_", set()) == "copies and format conversions"
    assert kind("aten::_foreach_add_", set()) == "optimiser"
    assert kind("aten::add_", {"Optimizer.step#SGD.step"}) == "optimiser"
    assert kind("aten::add_", set()) == "element-wise (add, mul, loss)"
    # whatever runs inside the augmentation's range is augmentation, a copy included
    assert kind("aten::copy_", {"augmentation", "aten::to"}) == "augmentation"
    assert kind("aten::something_new", set()) == "other"


def test_best_rate_times_at_least_the_calls_asked_even_past_its_time() -> None:
    calls = []
    rate = bench_fp32.best_rate(1e9, lambda: calls.append(1), seconds=0.0, at_least=3)
    assert len(calls) == 4  # one untimed warm-up, three timed
    assert rate > 0


def test_flops_per_pair_of_the_small_stem_resnet18_match_a_count_by_hand() -> None:
    """SimCLR, ResNet-18 with the 3x3 stem at 16 px: forward multiply-adds of every
    convolution and linear layer, x2 FLOPs, x3 for forward + backward (input and weight
    gradients; the first convolution's input needs none)."""
    size = 16
    convs = [(3, 64, 3, size)]  # (in, out, kernel, output side)
    side, channels = size, 64
    for out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block in range(2):
            s = stride if block == 0 else 1
            side_out = side // s
            convs += [(channels, out, 3, side_out), (out, out, 3, side_out)]
            if s != 1 or channels != out:
                convs.append((channels, out, 1, side_out))
            channels, side = out, side_out
    macs = [cin * cout * k * k * o * o for cin, cout, k, o in convs]
    head = [512 * 512, 512 * 128]
    per_image = 2 * (3 * sum(macs) - macs[0] + 3 * sum(head))
    counted = bench_fp32.flops_per_pair("simclr", "resnet18", size, 8)
    assert abs(counted - 2 * per_image) / (2 * per_image) < 0.01
