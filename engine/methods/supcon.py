"""Supervised contrastive learning (SupCon: Khosla, Teterwak, Wang, Sarna, Tian, Isola,
Maschinot, Liu & Krishnan 2020, "Supervised Contrastive Learning"): SimCLR's encoder,
projection head and views, with every other image of the same class as a further positive.

The loss is the paper's L^sup_out (eq. 2): each of the 2N views i is an anchor, its
positives P(i) are the other view of its own image and both views of every other image with
the same label, and

    L = mean over anchors i of  -1/|P(i)| sum_{p in P(i)} log( exp(z_i.z_p / t)
                                                             / sum_{a != i} exp(z_i.z_a / t) )

with z L2-normalised. An image without a label (-1: an image of a sub-folder named
``unlabelled``, or one whose label training hides, see supcon_unlabelled) has only its own
other view as positive, so its anchors' terms are exactly NT-Xent's (SimCLR): a batch with no
labels at all is SimCLR's loss, and a partly labelled folder trains semi-supervised.

Preset: SimCLR's augmentations (the paper's "SimAugment"), temperature 0.1 and LARS (the
paper's), batch norm in the projection head as SimCLR's. Its own setting: supcon_unlabelled,
the share of each class's images whose labels training does not see, chosen from the seed
(:func:`hide_labels`). With several processes every view and label of every process is
gathered, and each process scores its own anchors against all 2N views, so the mean over
the processes is the single-process loss. Its registry entry is in engine.methods.specs.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from engine.methods.base import BatchInfo, StepOutput, embedding_spread, encode_views
from engine.methods.simclr import SimCLR
from engine.models.losses import _full_precision
from engine.training.collectives import gather, gather_with_grad, rank, world_size

#: Mixed into the seed of hide_labels, so its draw is not the data order's or the split's.
_HIDE_STREAM = 0x5C0


def supcon_loss(z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor, temperature: float,
                *, rows: slice | None = None) -> torch.Tensor:
    """The supervised contrastive loss L^sup_out (Khosla et al. 2020, eq. 2), in float32.

    ``z1[i]`` and ``z2[i]`` are the projections of the two views of image i and
    ``labels[i]`` its class (int64, -1: none). Each of the 2N views is an anchor whose
    positives are the other view of its image and both views of every other image of its
    class (none for an image labelled -1); the denominator runs over all 2N - 1 other views.
    The loss of an anchor is the mean of -log p over its positives; the loss is the mean
    over the anchors.

    ``rows``: only the anchors of images ``rows`` (both views of each) are scored, against
    all 2N views: one process's share when z1, z2 and labels were gathered from every
    process. Every anchor has the same weight, so over equal shares the mean of the shares'
    losses is the loss over the whole batch.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"z1 and z2 must both be (N, D); got {tuple(z1.shape)}, {tuple(z2.shape)}")
    n = z1.shape[0]
    if labels.shape != (n,) or labels.is_floating_point():
        raise ValueError(f"labels must be integers of shape ({n},), one per image (-1: none); "
                         f"got {labels.dtype} {tuple(labels.shape)}")
    views = torch.arange(2 * n, device=z1.device)
    anchors = views
    if rows is not None:
        start, stop, stride = rows.indices(n)
        if stride != 1 or stop <= start:
            raise ValueError(f"rows must be a non-empty contiguous slice of 0..{n}; got {rows}")
        own = torch.arange(start, stop, device=z1.device)
        anchors = torch.cat([own, own + n])  # (A,) indices into the 2N views
    with _full_precision(z1):
        z = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # (2N, D)
        is_self = anchors.unsqueeze(1) == views  # (A, 2N)
        logits = (z[anchors] @ z.T / temperature).masked_fill(is_self, float("-inf"))
        log_p = logits.log_softmax(dim=1)  # the denominator: every view but the anchor
        image = views % n  # the image each view shows
        label = labels.to(z1.device).repeat(2)  # the label of each view
        same_image = image[anchors].unsqueeze(1) == image
        same_class = (label[anchors].unsqueeze(1) == label) & (label[anchors] >= 0).unsqueeze(1)
        positive = (same_image | same_class) & ~is_self  # at least the other view
        per_anchor = torch.where(positive, log_p, 0.0).sum(dim=1) / positive.sum(dim=1)
        return -per_anchor.mean()


def hide_labels(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """``labels`` with round(n_c x fraction) of each class c's images set to -1 (no label):
    the images whose labels training does not see (supcon_unlabelled).

    Which ones depends only on the seed and on the images' cache rows (each class's rows
    are shuffled by a generator seeded from ``seed`` and the class), so a resumed run and
    every process of a torchrun run hide the same images.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be from 0 to 1; got {fraction}")
    out = labels.copy()
    if fraction == 0.0:
        return out
    for c in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == c)
        rng = np.random.default_rng([seed, _HIDE_STREAM, int(c)])
        out[rng.permutation(members)[:round(len(members) * fraction)]] = -1
    return out


class SupCon(SimCLR):
    """SupCon (Khosla et al. 2020): encoder f + projection head g, L^sup_out over 2N views,
    the positives of each image its other view and every view of its class. SimCLR's module
    (encoder, temperature, online_encoder) with its loss replaced."""

    def forward(self, x1: torch.Tensor, x2: torch.Tensor,
                batch: BatchInfo | None = None) -> StepOutput:
        if batch is None:
            raise ValueError("SupCon needs the images' labels: call it with "
                             "batch=BatchInfo(indices=..., labels=...) (-1 for no label)")
        n = x1.shape[0]
        if batch.labels.shape != (n,):
            raise ValueError(f"batch.labels must hold one label per image ({n}); got shape "
                             f"{tuple(batch.labels.shape)}")
        # One pass over both views (batch norm over all 2N, as in SimCLR) or one per view.
        _, z = encode_views(self.encoder, x1, x2, self.view_passes)  # z: (2N, D)
        z1, z2 = z[:n], z[n:]
        if world_size() > 1:
            # Several processes, each with n images of the global batch: every view of every
            # process is a positive or a negative; gradients flow back through the gather,
            # so the loss and its gradient are those of the global batch.
            every = gather_with_grad(z.float()).view(world_size(), 2, n, -1)  # (W, 2, n, D)
            labels = gather(batch.labels)  # (W x n,), in rank order as the views
            start = rank() * n
            loss = supcon_loss(every[:, 0].flatten(0, 1), every[:, 1].flatten(0, 1), labels,
                               self.temperature, rows=slice(start, start + n))
        else:
            loss = supcon_loss(z1, z2, batch.labels, self.temperature)
        with torch.no_grad():
            pos = F.cosine_similarity(z1.float(), z2.float(), dim=1).mean()
        return StepOutput(loss, pos, embedding_spread(z1))
