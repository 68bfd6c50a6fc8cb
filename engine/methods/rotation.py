"""Rotation prediction (Gidaris, Singh & Komodakis 2018, "Unsupervised Representation
Learning by Predicting Image Rotations"): every image is shown upright and rotated by 90,
180 and 270 degrees, and a classifier on the pooled feature h learns which rotation it sees
(cross entropy over the 4N rotated images of a batch of N; section 3).

The encoder's head *is* the rotation classifier, ``nn.Linear(feature_dim, 4)``: z are the
four rotation logits (not a projection for a contrastive loss). So whatever reads
``online_encoder`` sees the model that was trained: h is the representation (the paper's
result: features of the layers before the classifier), z the classifier's logits, a 4-d
space in which the explore verbs (maps, neighbours, probe) work but which says mostly
which way up each image looks. An MLP projection head that no loss trains would have made
a z of random numbers.

Views: the loop makes two augmented views of every image; this method reads x1 only (x2 is
not used: the rotations are its "views"). The paper augments with random crops and flips
only; the preset here (engine.methods.specs) is a random resized crop of 50-100% of the
area and a flip, with no colour jitter, grayscale or blur. The four rotations go through the
encoder in one pass, so batch norm sees all 4N images, as in the paper's code.

Paper defaults: SGD, lr 0.1 (at batch 128 there; 0.1 per 256 images here, scaled linearly),
momentum 0.9, weight decay 5e-4; no temperature (the loss is a plain cross entropy).

Each step also reports ``rotation_accuracy``, the fraction of the 4N rotated images whose
rotation the classifier got right (0.25 is chance). With several processes each process
rotates its own share of the batch; with synchronised batch norm the loss of the global
batch is the mean of the shares (every rotated image's loss is its own).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.methods.base import BatchInfo, StepOutput, embedding_spread
from engine.models.encoder import Encoder
from engine.training.collectives import gather

ROTATIONS = 4  # 0, 90, 180 and 270 degrees, in this order (labels 0..3)


def rotate_batch(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(4N, C, S, S) images: the N of ``x`` rotated by 0, then 90, 180 and 270 degrees
    (counter-clockwise, torch.rot90 over the spatial dimensions), and their labels (4N,):
    k for a rotation by k x 90 degrees."""
    if x.dim() != 4 or x.shape[2] != x.shape[3]:
        raise ValueError(f"rotation needs square images (N, C, S, S); got {tuple(x.shape)}")
    out = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(ROTATIONS)])
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        out = out.contiguous(memory_format=torch.channels_last)
    labels = torch.arange(ROTATIONS, device=x.device).repeat_interleave(x.shape[0])
    return out, labels


class RotationPrediction(nn.Module):
    """Rotation prediction (Gidaris et al. 2018); see the module's text. ``encoder``'s head
    must be the 4-way rotation classifier (engine.methods.specs builds it)."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        head = encoder.head
        if not isinstance(head, nn.Linear) or head.out_features != ROTATIONS:
            raise ValueError("the encoder's head must be the rotation classifier, "
                             f"nn.Linear(feature_dim, {ROTATIONS}); got {head}")
        self.encoder = encoder
        # The last step's accuracy over this process's rotated images, a device tensor
        # (read only when a step is logged); not part of the checkpoint.
        self.register_buffer("last_accuracy", torch.zeros(()), persistent=False)

    @property
    def online_encoder(self) -> Encoder:
        return self.encoder

    def forward(self, x1: torch.Tensor, x2: torch.Tensor,
                batch: BatchInfo | None = None) -> StepOutput:
        n = x1.shape[0]
        images, labels = rotate_batch(x1)  # x1 only: x2 is not used
        h, logits = self.encoder(images)  # (4N, F), (4N, 4)
        with torch.autocast(logits.device.type, enabled=False):
            loss = F.cross_entropy(logits.float(), labels)
        with torch.no_grad():
            self.last_accuracy = (logits.argmax(dim=1) == labels).float().mean()
            hf = h.float()
            upright = hf[:n].repeat(ROTATIONS - 1, 1)
            # How alike h is for an image upright and rotated (90, 180, 270 degrees).
            pos = F.cosine_similarity(upright, hf[n:], dim=1).mean()
        return StepOutput(loss, pos, embedding_spread(h[:n]))

    def accuracy(self) -> float:
        """The last step's rotation accuracy over every process's images (collective with
        several processes: every process calls it at the same steps)."""
        return float(gather(self.last_accuracy.detach().float().view(1)).mean())
