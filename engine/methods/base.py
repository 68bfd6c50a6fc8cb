"""What every contrastive method provides: its step's output and its entry in the registry.

A method is a plug-in: one file in this folder holding its ``nn.Module`` (built from
explicit scalars), and a :class:`MethodSpec` that says everything the rest of the engine
and the app need to know about it: its name and title, its preset, its paper defaults, the
settings that apply only to it, how to build it from the configuration, its per-step
schedule and what it adds to the step events. The specs live in engine.methods.specs and
import their method's module (and so torch) only to build or step a model, so that the
settings, the CLI's parser and its checks read the registry without importing torch; this
module imports none either.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # the configuration imports the registry: this module imports no torch
    import numpy as np
    import torch
    from torch import nn

    from engine.config.resolve import RunSettings
    from engine.config.train_config import TrainConfig
    from engine.models.encoder import Encoder


@dataclass
class StepOutput:
    """One training step's loss and two cheap health signals, all device tensors (reading
    one is a device sync: the trainer does it only at its logging interval)."""

    loss: torch.Tensor  # scalar
    positive_pair_similarity: torch.Tensor  # mean cosine similarity of the two views' z
    embedding_std: torch.Tensor  # see embedding_spread()


@dataclass
class BatchInfo:
    """What a method may need to know about the images of a step besides their views:
    device tensors aligned with the rows of x1 and x2 (this process's share of the batch).

    SimCLR and MoCo read neither; a memory bank (InstDisc) is indexed by ``indices`` and
    supervised contrastive learning takes its extra positives from ``labels``.
    """

    indices: torch.Tensor  # int64 (N,): each image's row in the run's image cache
    labels: torch.Tensor  # int64 (N,): each image's class, -1 where it has none


#: An embedding spread (embedding_spread) below this means the embeddings are collapsing:
#: the trainer warns once and the app's curves draw the line there. Measured on the tiny
#: test runs: about 0.7-0.9 while healthy, 0 for a constant z.
COLLAPSE_SPREAD = 0.2


def embedding_spread(z: torch.Tensor) -> torch.Tensor:
    """Per-dimension std of the L2-normalised projections across the batch, times sqrt(D).

    About 1 when the embeddings are spread over the sphere and 0 when they have collapsed
    to one point (the collapse signal used by SimSiam, Chen & He 2021, section 4.1).
    """
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        zn = F.normalize(z.float(), dim=1)
        return zn.std(dim=0).mean() * math.sqrt(z.shape[1])


#: The values of the view_passes setting (TrainConfig): how a method that encodes both views
#: with one encoder runs them through it.
VIEW_PASSES = ("one", "two")


def encode_views(encoder: nn.Module, x1: torch.Tensor, x2: torch.Tensor,
                 view_passes: str = "one") -> tuple[torch.Tensor, torch.Tensor]:
    """(h, z) of both views through ``encoder``, the N rows of ``x1`` first, then those of
    ``x2``: (2N, F) and (2N, D).

    ``view_passes`` "one": a forward pass of all 2N views, so every batch norm normalises
    both views with statistics shared over the 2N (SimCLR's own code); "two": a pass per
    view, each normalised with the statistics of its own N (lightly's code and most PyTorch
    reimplementations), and the running statistics updated once per pass. The same weights
    and the same loss either way; only the batch-norm statistics differ.
    """
    import torch

    if view_passes == "one":
        return encoder(torch.cat([x1, x2]))
    if view_passes != "two":
        raise ValueError(f"view_passes must be one of {', '.join(VIEW_PASSES)}; got "
                         f"{view_passes!r}")
    h1, z1 = encoder(x1)
    h2, z2 = encoder(x2)
    return torch.cat([h1, h2]), torch.cat([z1, z2])


class ContrastiveModel(Protocol):
    """What the trainer and the evaluation need of a method's module."""

    def __call__(self, x1: torch.Tensor, x2: torch.Tensor,
                 batch: BatchInfo | None = None) -> StepOutput: ...

    @property
    def online_encoder(self) -> Encoder:
        """The encoder whose features are the method's result (embedded, exported)."""
        ...


@dataclass(frozen=True)
class MethodSpec:
    """One method's entry in engine.methods.METHODS.

    Subclasses override :meth:`build` and, where the method has them, the hooks below; the
    defaults are those of a method without any per-step schedule or extra logging.
    """

    name: str  # the value of TrainConfig.method and of --method: "simclr"
    title: str  # for people: "SimCLR"
    paper: str  # the paper whose defaults the preset follows
    #: AugmentConfig values of the method's preset (the others are AugmentConfig's defaults).
    augment: Mapping[str, Any] = field(default_factory=dict)
    #: What the "auto" temperature, optimizer and head_batch_norm become for this method;
    #: optionally lr, lr_scaling and weight_decay (applied while that optimizer is used) and
    #: proj_out_dim (the width of z; 128 when the paper gives none).
    defaults: Mapping[str, Any] = field(default_factory=dict)
    #: TrainConfig settings that apply to this method only (a form shows them only for it).
    settings: tuple[str, ...] = ()
    #: Fields this method adds to every "step" event (see :meth:`step_fields`).
    logged: tuple[str, ...] = ()
    #: Settings common to most methods that this one does not read (e.g. the temperature
    #: of a method without a softmax): a form hides them while the method is chosen.
    ignores: tuple[str, ...] = ()
    #: Whether training reads the folder's labels (a probe of such a run is not a
    #: self-supervised result, and the app says so).
    uses_labels: bool = False
    #: Whether a falling embedding spread means collapse for this method (the loop then
    #: warns once below COLLAPSE_SPREAD). Off for a method whose logged spread sits near
    #: that line when healthy.
    warns_of_collapse: bool = True

    def build(self, encoder: Encoder, cfg: TrainConfig | RunSettings) -> nn.Module:
        """The method's module around ``encoder``, from the settings it reads (only
        engine.methods.build_model calls this)."""
        raise NotImplementedError

    def before_step(self, model: nn.Module, cfg: RunSettings, step: int,
                    total_steps: int) -> None:
        """Set the module's per-step schedule (called before each step's forward pass)."""

    def step_fields(self, model: nn.Module) -> dict[str, float]:
        """Extra fields of the "step" event: the names in :attr:`logged`."""
        return {}

    def training_labels(self, cfg: RunSettings, labels: np.ndarray) -> np.ndarray:
        """The labels the steps' BatchInfo carries, aligned with the cache's rows: the
        cache's own ``labels`` (-1 where an image has none), or a copy with more -1 where
        the method hides some labels from training (SupCon's supcon_unlabelled). It must
        depend only on the settings and ``labels``, so that a resumed run and every process
        see the same."""
        return labels

    def fit_to_data(self, cfg: TrainConfig, num_images: int
                    ) -> tuple[dict[str, Any], dict[str, str]]:
        """Settings to change for a folder of ``num_images`` usable images, and why (or
        ConfigError when the method cannot train on so few)."""
        return {}, {}
