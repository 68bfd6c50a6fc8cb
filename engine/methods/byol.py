"""BYOL (Grill, Strub, Altché, Tallec, Richemond, Buchatskaya, Doersch, Pires, Guo, Azar,
Piot, Kavukcuoglu, Munos & Valko 2020, "Bootstrap Your Own Latent: A New Approach to
Self-Supervised Learning"): an online network (encoder, projector and a predictor) learns to
predict a target network's projection of the other view; the target is a moving average of
the online encoder and gets no gradient. No negatives, hence no temperature.

The paper's settings and what this engine makes of them:

- projector: Linear-BN-ReLU-Linear, hidden 4096, output 256. Here the encoder's
  ProjectionHead: hidden ``proj_hidden_dim`` (auto: the encoder's feature width, 2048 for
  ResNet-50, 512 for ResNet-18: the engine's one rule for every method) and output
  ``proj_out_dim``, whose "auto" is the paper's 256 for BYOL (the spec's defaults).
- predictor: the same shape as the projector (Linear-BN-ReLU-Linear, hidden
  ``proj_hidden_dim``, output the width of z); batch norm in both as ``head_batch_norm``
  says (auto: on, as in the paper).
- target network: a copy of the online encoder, updated after each optimiser step by
  target = tau * target + (1 - tau) * online, with tau raised from ``target_momentum``
  (0.996) to 1 on a half-cosine over the run (eq. 9 of the paper; the same schedule as
  engine.methods.moco.key_encoder_momentum, which computes it).
- loss: the normalised MSE 2 - 2 cos(p, z') of each online prediction p against the target
  projection z' of the other view, both directions summed as the paper does
  (L + L~, so it lies in [0, 8]) and averaged over the batch.
- optimiser: LARS at lr 0.2 x batch / 256, weight decay 1.5e-6 (the spec's paper
  defaults, applied while LARS is the optimiser); the asymmetric augmentations of table 6
  are the spec's preset (blur 1.0 / 0.1, solarisation 0 / 0.2, jitter 0.4/0.4/0.2/0.1).

When the target is updated: at the start of each step's forward pass, from the online
parameters the previous optimiser step made, before the target's pass (as MoCo updates its
key encoder). That is the paper's update after every step made at the start of the next
one, with the tau of the step about to be taken (the schedule shifted by one step): the
first update is a no-op (the target starts as a copy) and the update after the last step,
which nothing would use, is not made. With several processes DDP's averaged step
leaves the online parameters identical everywhere, so the targets stay identical with no
communication; a resumed run makes exactly the update the uninterrupted one makes, from
the restored online parameters and the step's tau (the target network is a submodule,
saved in every checkpoint). Its registry entry is in engine.methods.specs.
"""

from __future__ import annotations

import copy

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
from engine.models.encoder import Encoder, ProjectionHead


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def regression_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Per-sample normalised MSE of BYOL (eq. 2): ||p/|p| - z/|z|||^2 = 2 - 2 cos(p, z), (N,).

    Computed in float32 (or the inputs' higher precision) outside autocast."""
    if p.shape != z.shape or p.dim() != 2:
        raise ValueError(f"p and z must both be (N, D); got {tuple(p.shape)}, {tuple(z.shape)}")
    with torch.autocast(p.device.type, enabled=False):
        p = F.normalize(_at_least_float32(p), dim=1)
        z = F.normalize(_at_least_float32(z), dim=1)
        return 2.0 - 2.0 * (p * z).sum(dim=1)


def byol_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor,
              z2: torch.Tensor) -> torch.Tensor:
    """BYOL's symmetrised loss (eq. 4: L + L~), averaged over the batch:
    mean_i [(2 - 2 cos(p1_i, z2_i)) + (2 - 2 cos(p2_i, z1_i))].

    ``p1``, ``p2``: the online predictions of views 1 and 2; ``z1``, ``z2``: the target
    projections of views 1 and 2 (no gradient flows into them). The two directional terms
    are summed, as in the paper, so the loss lies in [0, 8] (0: every prediction points at
    its target)."""
    z1, z2 = z1.detach(), z2.detach()
    return (regression_loss(p1, z2) + regression_loss(p2, z1)).mean()


class BYOL(nn.Module):
    """BYOL (Grill et al. 2020): online encoder + predictor against a moving-average target.

    ``momentum`` (tau) is a plain attribute so that the trainer can raise it every step
    (engine.methods.specs: the cosine schedule from ``target_momentum`` to 1).
    """

    def __init__(self, encoder: Encoder, dim: int, hidden_dim: int, *,
                 momentum: float = 0.996, batch_norm: bool = True,
                 view_passes: str = "one") -> None:
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1]; got {momentum}")
        if view_passes not in VIEW_PASSES:
            raise ValueError(f"view_passes must be one of {', '.join(VIEW_PASSES)}; got "
                             f"{view_passes!r}")
        self.view_passes = view_passes  # see engine.methods.base.encode_views
        self.online = encoder
        self.predictor = ProjectionHead(dim, hidden_dim, dim, batch_norm=batch_norm)
        self.target = copy.deepcopy(encoder)
        for p in self.target.parameters():
            p.requires_grad_(False)
        self.momentum = momentum

    @property
    def online_encoder(self) -> Encoder:
        return self.online

    @torch.no_grad()
    def update_target(self) -> None:
        """target = tau * target + (1 - tau) * online, for every parameter (tau: momentum);
        the batch-norm statistics of each network are its own."""
        online = list(self.online.parameters())
        target = list(self.target.parameters())
        torch._foreach_mul_(target, self.momentum)
        torch._foreach_add_(target, online, alpha=1.0 - self.momentum)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor,
                batch: BatchInfo | None = None) -> StepOutput:
        n = x1.shape[0]
        # One online pass over both views (batch norm over all 2N) or one per view; the
        # predictor and the target normalise the same way.
        _, z = encode_views(self.online, x1, x2, self.view_passes)  # (2N, D)
        p = (self.predictor(z) if self.view_passes == "one" else
             torch.cat([self.predictor(z[:n]), self.predictor(z[n:])]))  # (2N, D)
        with torch.no_grad():
            self.update_target()  # from the parameters the last optimiser step made
            _, target_z = encode_views(self.target, x1, x2, self.view_passes)  # (2N, D);
            # with several processes its batch norm is synchronised too (sync_batch_norm),
            # so it sees the global batch
        loss = byol_loss(p[:n], p[n:], target_z[:n], target_z[n:])
        with torch.no_grad():
            # the online projections of the two views, as SimCLR and MoCo report theirs
            pos = F.cosine_similarity(z[:n].float(), z[n:].float(), dim=1).mean()
        return StepOutput(loss, pos, embedding_spread(z[:n]))
