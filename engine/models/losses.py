"""Contrastive losses: NT-Xent (SimCLR) and InfoNCE against a queue (MoCo)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")


def _full_precision(like: torch.Tensor) -> torch.autocast:
    """Autocast off: the similarity logits are computed in float32 even inside a bf16/fp16
    forward pass (autocast would run their matmul in low precision, where a logit of 10 at
    temperature 0.1 has a rounding step of about 0.06)."""
    return torch.autocast(like.device.type, enabled=False)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float, *,
            rows: slice | None = None) -> torch.Tensor:
    """Normalised temperature-scaled cross entropy (SimCLR, Chen et al. 2020, eq. 1).

    ``z1[i]`` and ``z2[i]`` are the projections of the two views of image i. Each of the 2N
    views is an anchor whose positive is the other view of its image and whose negatives are
    the other 2(N-1) views; similarity is cosine. The loss is the mean over all 2N anchors,
    i.e. over both orderings of every positive pair.

    ``rows``: only the anchors of images ``rows`` (both views of each) are scored, against
    all 2N views: one process's share when z1 and z2 were gathered from every process
    (engine.training.distributed.gather_with_grad). Over equal shares, the mean of the shares'
    losses is the loss over the whole batch.
    """
    _check_temperature(temperature)
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"z1 and z2 must both be (N, D); got {tuple(z1.shape)}, {tuple(z2.shape)}")
    n = z1.shape[0]
    if rows is not None:
        start, stop, stride = rows.indices(n)
        if stride != 1 or stop <= start:
            raise ValueError(f"rows must be a non-empty contiguous slice of 0..{n}; got {rows}")
    with _full_precision(z1):
        z = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # (2N, D)
        if rows is not None:
            own = torch.arange(start, stop, device=z.device)
            anchors = torch.cat([own, own + n])  # (2M,) indices into the 2N views
            logits = z[anchors] @ z.T / temperature  # (2M, 2N)
            is_self = anchors.unsqueeze(1) == torch.arange(2 * n, device=z.device)
            logits = logits.masked_fill(is_self, float("-inf"))  # not its own negative
            return F.cross_entropy(logits, (anchors + n) % (2 * n))
        logits = z @ z.T / temperature  # (2N, 2N)
        logits.fill_diagonal_(float("-inf"))  # a view is not its own negative
        targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
        return F.cross_entropy(logits, targets)


def info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor,
             temperature: float) -> torch.Tensor:
    """InfoNCE over 1 positive key and K queued negatives (MoCo, He et al. 2020, eq. 1).

    ``q``: (N, D) queries, ``k``: (N, D) their positive keys, ``queue``: (K, D) negative keys.
    All are L2-normalised here, so the similarity is cosine.
    """
    _check_temperature(temperature)
    with _full_precision(q):
        q = F.normalize(q.float(), dim=1)
        k = F.normalize(k.float(), dim=1)
        queue = F.normalize(queue.float(), dim=1)
        l_pos = (q * k).sum(dim=1, keepdim=True)  # (N, 1)
        l_neg = q @ queue.T  # (N, K)
        logits = torch.cat([l_pos, l_neg], dim=1) / temperature  # (N, 1+K)
        targets = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)  # column 0
        return F.cross_entropy(logits, targets)
