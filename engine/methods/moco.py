"""MoCo v2 (He, Fan, Wu, Xie & Girshick 2020, "Momentum Contrast for Unsupervised Visual
Representation Learning"; Chen, Fan, Girshick & He 2020, "Improved Baselines with Momentum
Contrastive Learning"): a query encoder, a momentum key encoder and a queue of negative
keys, trained with InfoNCE.

Preset: MoCo v2's augmentations (crop 0.2-1, colour jitter 0.4/0.4/0.4/0.1, i.e. s=0.5),
temperature 0.2, SGD and a projection head without batch norm. Its own settings:
queue_size, moco_momentum and momentum_ramp (the key-encoder momentum raised towards 1 on
BYOL's cosine schedule, set before every step); each step event also reports the momentum.
With several processes the queue takes every process's keys, in rank order, so it stays
identical everywhere. Its registry entry (preset, defaults, own settings, the momentum
schedule's hook) is in engine.methods.specs.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from engine.methods.base import BatchInfo, StepOutput, embedding_spread
from engine.models.encoder import Encoder
from engine.models.losses import info_nce
from engine.training.collectives import gather


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

    def forward(self, x1: torch.Tensor, x2: torch.Tensor,
                batch: BatchInfo | None = None) -> StepOutput:
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
