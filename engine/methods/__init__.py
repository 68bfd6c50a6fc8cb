"""The two contrastive methods as modules: SimCLR and MoCo v2.

Each takes the two views of a batch and returns a :class:`StepOutput` holding the loss and
two cheap health signals, all as device tensors (reading them is a device sync: the trainer
does it only at its logging interval).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.config.train_config import TrainConfig
from engine.models.encoder import Encoder, ProjectionHead, build_backbone, feature_dim
from engine.models.losses import info_nce, nt_xent
from engine.training.distributed import gather, gather_with_grad, rank, world_size


@dataclass
class StepOutput:
    loss: torch.Tensor  # scalar
    positive_pair_similarity: torch.Tensor  # mean cosine similarity of the two views' z
    embedding_std: torch.Tensor  # see embedding_spread()


@torch.no_grad()
def embedding_spread(z: torch.Tensor) -> torch.Tensor:
    """Per-dimension std of the L2-normalised projections across the batch, times sqrt(D).

    About 1 when the embeddings are spread over the sphere and 0 when they have collapsed
    to one point (the collapse signal used by SimSiam, Chen & He 2021, section 4.1).
    """
    zn = F.normalize(z.float(), dim=1)
    return zn.std(dim=0).mean() * math.sqrt(z.shape[1])


class SimCLR(nn.Module):
    """SimCLR (Chen et al. 2020): encoder f + projection head g, NT-Xent over 2N views."""

    def __init__(self, encoder: Encoder, temperature: float = 0.1) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0; got {temperature}")
        self.encoder = encoder
        self.temperature = temperature

    @property
    def online_encoder(self) -> Encoder:
        return self.encoder

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> StepOutput:
        n = x1.shape[0]
        # One pass over both views: batch norm sees all 2N views, as in SimCLR.
        _, z = self.encoder(torch.cat([x1, x2]))  # z: (2N, D)
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


class MoCo(nn.Module):
    """MoCo v2 (He et al. 2020; Chen et al. 2020): query encoder, momentum key encoder and a
    queue of negative keys, trained with InfoNCE.

    ``momentum`` is a plain attribute so that the trainer can ramp it during training.
    """

    def __init__(self, encoder: Encoder, dim: int = 128, queue_size: int = 65536,
                 momentum: float = 0.999, temperature: float = 0.2) -> None:
        super().__init__()
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1; got {queue_size}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1]; got {momentum}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0; got {temperature}")
        self.encoder_q = encoder
        self.encoder_k = copy.deepcopy(encoder)
        for p in self.encoder_k.parameters():
            p.requires_grad_(False)
        self.momentum = momentum
        self.temperature = temperature
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, dim), dim=1))  # (K, D)
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @property
    def online_encoder(self) -> Encoder:
        return self.encoder_q

    @torch.no_grad()
    def _momentum_update_key_encoder(self) -> None:
        """key = m * key + (1 - m) * query, for every parameter."""
        q_params = list(self.encoder_q.parameters())
        k_params = list(self.encoder_k.parameters())
        torch._foreach_mul_(k_params, self.momentum)
        torch._foreach_add_(k_params, q_params, alpha=1.0 - self.momentum)

    @torch.no_grad()
    def _dequeue_and_enqueue(self, keys: torch.Tensor) -> None:
        """Overwrite the oldest keys with the newest (a ring buffer; any batch size works).

        With several processes ``keys`` is the global batch of keys, in rank order, so every
        process's queue stays identical (and equal to a single process's).
        """
        k = self.queue.shape[0]
        keys = keys[:k].to(self.queue.dtype)
        idx = (self.queue_ptr + torch.arange(keys.shape[0], device=keys.device)) % k
        self.queue.index_copy_(0, idx, keys)
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[0]) % k)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> StepOutput:
        _, q = self.encoder_q(x1)  # (N, D)
        with torch.no_grad():
            # The query parameters are the same on every process (DDP averages their
            # gradients), so the key encoders stay identical too.
            self._momentum_update_key_encoder()
            # With several processes the key encoder's batch norm must not see only this
            # process's share of the batch, or it can find each query's key through the
            # per-device statistics (MoCo, section 3.3). The trainer makes it synchronised
            # batch norm (sync_batch_norm) rather than MoCo's shuffled BN: the statistics
            # are then those of the global batch, exactly as on one device, with no extra
            # gather of the images and no random shuffle to keep in step (MoCo v3 and
            # SimCLR do the same).
            _, k = self.encoder_k(x2)
            k = F.normalize(k.float(), dim=1)  # (N, D)
        loss = info_nce(q, k, self.queue.clone(), self.temperature)
        self._dequeue_and_enqueue(gather(k))  # keys of every process: (world x N, D)
        with torch.no_grad():
            pos = F.cosine_similarity(q.float(), k, dim=1).mean()
        return StepOutput(loss, pos, embedding_spread(q))


def key_encoder_momentum(base: float, step: int, total_steps: int, *, ramp: bool) -> float:
    """MoCo's momentum, optionally raised from ``base`` to 1 on a half-cosine (BYOL, eq. 9)."""
    if not ramp or total_steps <= 0:
        return base
    return 1.0 - (1.0 - base) * (math.cos(math.pi * step / total_steps) + 1.0) / 2.0


def build_model(cfg: TrainConfig) -> SimCLR | MoCo:
    """The one place that reads the configuration to construct a method module."""
    assert cfg.backbone is not None and cfg.proj_hidden_dim is not None
    backbone = build_backbone(cfg.backbone, small_stem=bool(cfg.small_stem))
    head = ProjectionHead(feature_dim(cfg.backbone), cfg.proj_hidden_dim, cfg.proj_out_dim,
                          batch_norm=bool(cfg.head_batch_norm))
    encoder = Encoder(backbone, head)
    assert cfg.temperature is not None
    if cfg.method == "simclr":
        return SimCLR(encoder, temperature=cfg.temperature)
    return MoCo(encoder, dim=cfg.proj_out_dim, queue_size=cfg.queue_size,
                momentum=cfg.moco_momentum, temperature=cfg.temperature)
