"""The self-supervised methods: one file each, listed in one table.

:data:`METHODS` maps each method's name (TrainConfig.method, ``--method``) to its
:class:`~engine.methods.base.MethodSpec`; the CLI's choices, the presets, the automatic
settings, the training loop and the app take every per-method behaviour from it. Adding a
method means adding its file here and its entry below. :func:`build_model` is the one place
that reads the configuration to construct a method's module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from engine.methods import moco, simclr
from engine.methods.base import MethodSpec, StepOutput, embedding_spread
from engine.methods.moco import MoCo, key_encoder_momentum
from engine.methods.simclr import SimCLR
from engine.models.encoder import Encoder, ProjectionHead, build_backbone, feature_dim

if TYPE_CHECKING:
    from engine.config.resolve import RunSettings
    from engine.config.train_config import TrainConfig

__all__ = ["DEFAULT_METHOD", "METHODS", "MethodSpec", "MoCo", "SimCLR", "StepOutput",
           "build_model", "embedding_spread", "key_encoder_momentum", "method_spec"]

METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in (simclr.SPEC, moco.SPEC)}
DEFAULT_METHOD = simclr.SPEC.name


def method_spec(name: str) -> MethodSpec:
    """The spec of method ``name``; ValueError naming the methods there are."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {name!r}") from None


def build_model(cfg: TrainConfig | RunSettings) -> nn.Module:
    """The one place that reads the configuration to construct a method module: the
    encoder (backbone + projection head), then the method's module around it."""
    assert cfg.backbone is not None and cfg.proj_hidden_dim is not None
    backbone = build_backbone(cfg.backbone, small_stem=bool(cfg.small_stem))
    head = ProjectionHead(feature_dim(cfg.backbone), cfg.proj_hidden_dim, cfg.proj_out_dim,
                          batch_norm=bool(cfg.head_batch_norm))
    return method_spec(cfg.method).build(Encoder(backbone, head), cfg)
