"""The self-supervised methods: one file each, listed in one table.

:data:`METHODS` maps each method's name (TrainConfig.method, ``--method``) to its
:class:`~engine.methods.base.MethodSpec` (engine.methods.specs); the CLI's choices, the
presets, the automatic settings, the training loop and the app take every per-method
behaviour from it. Adding a method means adding its file here and its spec in
engine.methods.specs. :func:`build_model` is the one place that reads the configuration to
construct a method's module.

Importing this package imports no torch (the settings and the CLI's checks read the
registry before anything heavy loads); the modules (``SimCLR``, ``MoCo``, ``BYOL``,
``SupCon``) and
:func:`build_model` import it when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.methods.base import BatchInfo, MethodSpec, StepOutput, embedding_spread
from engine.methods.specs import ALL, SIMCLR

if TYPE_CHECKING:
    from torch import nn

    from engine.config.resolve import RunSettings
    from engine.config.train_config import TrainConfig
    from engine.methods.byol import BYOL
    from engine.methods.instdisc import InstDisc
    from engine.methods.moco import MoCo, key_encoder_momentum
    from engine.methods.rotation import RotationPrediction
    from engine.methods.simclr import SimCLR
    from engine.methods.supcon import SupCon
    from engine.models.init_weights import InitWeights

__all__ = ["BYOL", "DEFAULT_METHOD", "BatchInfo", "InstDisc", "METHODS", "MethodSpec", "MoCo",
           "RotationPrediction", "SimCLR", "StepOutput", "SupCon", "build_model",
           "embedding_spread", "key_encoder_momentum", "method_spec"]

METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in ALL}
DEFAULT_METHOD = SIMCLR.name

#: Names this package gives from its method modules, imported (with torch) on first use.
_LAZY = {"SimCLR": "engine.methods.simclr", "MoCo": "engine.methods.moco",
         "BYOL": "engine.methods.byol", "SupCon": "engine.methods.supcon",
         "InstDisc": "engine.methods.instdisc", "RotationPrediction": "engine.methods.rotation",
         "key_encoder_momentum": "engine.methods.moco"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def method_spec(name: str) -> MethodSpec:
    """The spec of method ``name``; ValueError naming the methods there are."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {name!r}") from None


def build_model(cfg: TrainConfig | RunSettings, *, init: InitWeights | None = None
                ) -> nn.Module:
    """The one place that reads the configuration to construct a method module: the
    encoder (backbone + projection head), then the method's module around it.

    ``init``: weights for the backbone (engine.models.init_weights, the run's ``init``
    setting), copied in before the method's module is built, so that a method's copies
    of the encoder (MoCo's key encoder) start from them too. Only the training loop passes
    them: embedding and export load a checkpoint over the model and never need the file.
    """
    from engine.models.encoder import Encoder, ProjectionHead, build_backbone, feature_dim

    assert cfg.backbone is not None and cfg.proj_hidden_dim is not None
    backbone = build_backbone(cfg.backbone, small_stem=bool(cfg.small_stem))
    if init is not None:
        from engine.models.init_weights import apply_init

        apply_init(backbone, init)
    head = ProjectionHead(feature_dim(cfg.backbone), cfg.proj_hidden_dim, cfg.proj_out_dim,
                          batch_norm=bool(cfg.head_batch_norm))
    return method_spec(cfg.method).build(Encoder(backbone, head), cfg)
