"""Encoders (torchvision ResNets, trained from scratch) and the projection head."""

from __future__ import annotations

import torch
from torch import nn
from torchvision import models as tvm

_RESNETS = {"resnet18": tvm.resnet18, "resnet34": tvm.resnet34, "resnet50": tvm.resnet50}


def feature_dim(backbone: str) -> int:
    """Width of the pooled representation h of a backbone."""
    return 2048 if backbone == "resnet50" else 512


def build_backbone(name: str, *, small_stem: bool) -> nn.Module:
    """A torchvision ResNet with random weights whose forward returns the pooled feature h.

    With ``small_stem`` the 7x7/2 convolution and the max-pool are replaced by a 3x3/1
    convolution and nothing, as SimCLR does for CIFAR-10 (appendix B.9): at 32-64 px the
    usual stem would throw away most of the image before the first residual block.
    The module keeps torchvision's parameter names, so an export loads into
    ``torchvision.models.<name>()`` (with the same stem change) with ``strict=True``.
    """
    if name not in _RESNETS:
        raise ValueError(f"backbone must be one of {', '.join(_RESNETS)}; got {name!r}")
    net = _RESNETS[name](weights=None)  # never downloads anything
    if small_stem:
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        net.maxpool = nn.Identity()
    net.fc = nn.Identity()  # h: (N, feature_dim)
    return net


class ProjectionHead(nn.Module):
    """g(h): an MLP with one hidden layer and ReLU (SimCLR section 2.1, MoCo v2).

    SimCLR puts batch norm after the hidden layer; MoCo v2's head has none.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, *, batch_norm: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim, bias=not batch_norm)]
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers += [nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim)]
        self.net = nn.Sequential(*layers)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)  # (N, out_dim)


class Encoder(nn.Module):
    """Backbone f followed by projection head g; forward returns (h, z)."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.backbone(x)
        return h, self.head(h)
