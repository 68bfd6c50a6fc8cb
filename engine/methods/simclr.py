"""SimCLR (Chen, Kornblith, Norouzi & Hinton 2020, "A Simple Framework for Contrastive
Learning of Visual Representations"): encoder f + projection head g, NT-Xent over 2N views.

Preset: the paper's augmentations (appendix A: crop 0.08-1, colour jitter 0.8/0.8/0.8/0.2 at
s=1, grayscale 0.2, blur), temperature 0.1, LARS and batch norm in the projection head
(appendix B.9). With several processes every view of every process is a negative, as in the
paper's cross-replica loss on TPUs. Its registry entry (preset, defaults) is in
engine.methods.specs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.methods.base import (
    VIEW_PASSES,
    BatchInfo,
    StepOutput,
    embedding_spread,
    encode_views,
)
from engine.models.encoder import Encoder
from engine.models.losses import nt_xent
from engine.training.collectives import gather_with_grad, rank, world_size


class SimCLR(nn.Module):
    """SimCLR (Chen et al. 2020): encoder f + projection head g, NT-Xent over 2N views."""

    def __init__(self, encoder: Encoder, temperature: float = 0.1,
                 view_passes: str = "one") -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0; got {temperature}")
        if view_passes not in VIEW_PASSES:
            raise ValueError(f"view_passes must be one of {', '.join(VIEW_PASSES)}; got "
                             f"{view_passes!r}")
        self.encoder = encoder
        self.temperature = temperature
        self.view_passes = view_passes  # see engine.methods.base.encode_views

    @property
    def online_encoder(self) -> Encoder:
        return self.encoder

    def forward(self, x1: torch.Tensor, x2: torch.Tensor,
                batch: BatchInfo | None = None) -> StepOutput:
        n = x1.shape[0]
        # One pass over both views (batch norm over all 2N, as in SimCLR) or one per view.
        _, z = encode_views(self.encoder, x1, x2, self.view_passes)  # z: (2N, D)
        z1, z2 = z[:n], z[n:]
        if world_size() > 1:
            # Several processes, each with n images of the global batch: every view of every
            # process is a negative (SimCLR's TPU cross-replica loss); gradients flow back
            # through the gather, so the loss and its gradient are those of the global batch.
            # Gathered in float32, the precision the loss computes in anyway.
            every = gather_with_grad(z.float()).view(world_size(), 2, n, -1)  # (W, 2, n, D)
            start = rank() * n
            loss = nt_xent(every[:, 0].flatten(0, 1), every[:, 1].flatten(0, 1),
                           self.temperature, rows=slice(start, start + n))
        else:
            loss = nt_xent(z1, z2, self.temperature)
        with torch.no_grad():
            pos = F.cosine_similarity(z1.float(), z2.float(), dim=1).mean()
        return StepOutput(loss, pos, embedding_spread(z1))
