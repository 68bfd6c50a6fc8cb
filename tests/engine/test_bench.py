"""`contrastive-engine bench`: real steps are timed and the FLOP count is the model's."""

import pytest
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from engine.cli.main import main
from engine.config.resolve import cpu_has_native_bf16
from engine.training.bench import bench_one, largest_batch


def test_one_configuration_is_timed_and_counted():
    result = bench_one("resnet18", 16, 4, "cpu", seconds=0.5)
    assert result.timed_steps >= 1 and result.step_seconds > 0
    assert result.pairs_per_s == pytest.approx(4 / result.step_seconds)
    assert result.peak_memory_gb is None
    assert result.precision == ("bf16" if cpu_has_native_bf16() else "fp32")
    # Reference: the forward FLOPs of torchvision's ResNet-18 with the same small-image stem
    # (3x3 conv, no max-pool) on one 16 px image. A training pair is two images forward and
    # backward, and backward costs about twice the forward pass; the head adds a little.
    net = torchvision.models.resnet18(num_classes=10)
    net.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    net.maxpool = torch.nn.Identity()
    net.fc = torch.nn.Identity()
    counter = FlopCounterMode(display=False)
    with counter:
        net(torch.zeros(1, 3, 16, 16))
    forward_per_image = counter.get_total_flops()
    ratio = result.gflops_per_pair * 1e9 / (2 * forward_per_image)
    assert 2.5 < ratio < 3.2, ratio


def test_the_budget_must_be_positive(capsys):
    assert main(["bench", "--seconds", "0"]) == 2
    assert "--seconds must be positive" in capsys.readouterr().err


@pytest.mark.parametrize("capacity", [0, 1, 7, 8, 9, 100, 4095, 5000, 10_000])
def test_largest_batch_finds_the_capacity(capacity):
    calls = []

    def fits(batch):
        calls.append(batch)
        return batch <= capacity

    expected = 0 if capacity < 1 else min(capacity, 5000)
    assert largest_batch(fits, 1, 5000) == expected
    assert len(calls) <= 2 * 13 + 2  # about 2 log2(5000) trials, not a linear scan


def test_largest_batch_refuses_an_empty_range():
    with pytest.raises(ValueError, match="start"):
        largest_batch(lambda b: True, 8, 4)


def test_moco_and_settings_reach_the_timed_model():
    result = bench_one("resnet18", 16, 4, "cpu", seconds=0.2, method="moco",
                       settings={"precision": "fp32", "channels_last": False,
                                 "queue_size": 64})
    assert (result.method, result.precision, result.channels_last) == ("moco", "fp32", False)
    # MoCo: the key encoder's forward pass has no backward, so a pair costs less than
    # SimCLR's two forward and backward passes.
    simclr = bench_one("resnet18", 16, 4, "cpu", seconds=0.2,
                       settings={"precision": "fp32"})
    assert 0.5 < result.gflops_per_pair / simclr.gflops_per_pair < 0.9
