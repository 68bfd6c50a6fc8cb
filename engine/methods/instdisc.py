"""Instance discrimination (Wu, Xiong, Yu & Lin 2018, "Unsupervised Feature Learning via
Non-Parametric Instance Discrimination"): every image is its own class. A memory bank holds
one L2-normalised 128-d vector per image; the loss is the non-parametric softmax
P(i|v) = exp(v_i.v / t) / Z over the bank (eq. 2), with v the image's embedding and v_i its
row of the bank, trained either in full or through its NCE estimate (section 3.2).

The encoder is the backbone followed by the paper's *linear* 128-d embedding (its features
are mapped to 128 dimensions by one linear layer, then L2-normalised): here
``nn.Linear(feature_dim, 128)`` as the Encoder's head, in place of the engine's MLP
ProjectionHead, and v = normalise(head(h)).
Paper defaults: t = 0.07, m = 4096 noise samples, bank momentum 0.5, SGD lr 0.03 momentum
0.9 weight decay 5e-4 at batch 256, ResNet-18 (the preset is in engine.methods.specs).

Which view: the paper trains on one augmented view per image; the training loop makes two
(x1, x2) for every method, and this method reads x1 only (x2 is not used).

The two losses (TrainConfig.instdisc_loss):

- "softmax": cross entropy of v . bank^T / t against the image's own row (the paper's eq. 2
  in full, as the reference code's LinearAverage): exact, and cheap while the folder is
  small.
- "nce" (the paper's default for ImageNet): noise-contrastive estimation with m samples per
  image drawn uniformly (P_n = 1/n, with replacement, the image's own row not excluded) from
  the bank, as in the reference code's NCEAverage and NCECriterion (lemniscate.pytorch):
  P(i|v) = exp(v_i.v / t) / Z, h(i, v) = P(i|v) / (P(i|v) + m/n), and the loss per image
  -log h(i, v) - sum_j log(1 - h(j, v)) over its m noise rows j (section 3.2), averaged over
  the batch. Z is estimated once, at the first step, by Monte Carlo as the reference code
  does (section 3.2): Z = n x the mean of exp(w.v / t) over that batch's bank rows
  w (its own and its noise rows), then kept fixed (a buffer, so it is in the checkpoint).
  The logarithms are computed in log space (logaddexp): the same values, computed stably.

The bank is a registered buffer initialised uniformly on the unit sphere; after each loss,
without gradient, every image of the batch updates its row:
bank[i] = normalise(m * bank[i] + (1 - m) * v_i), with the reference code's momentum
m = 0.5 (m = 0 is the paper's text, which writes the new vector into the bank). It is in
the checkpoint, so a resumed run goes on exactly. The paper's proximal regularisation
(section 3.4) is not implemented.

Several processes (torchrun): every process keeps the whole bank (replicated, not sharded).
Each step gathers every process's (v, indices) and applies the same update, so the banks
stay identical. A bank is 128 floats x images: 51 MB for 100,000 images, small beside the
model's activations, whereas a sharded bank would need an all-to-all of bank rows every
step (each image's noise rows live on every shard). The NCE noise rows are drawn for the
global batch from a generator seeded by the run's seed and the step (the step counter is
a buffer too), the same in every process, and each process takes its own rows: the loss of
the global batch is the mean of the processes' shares (every image's loss is its own).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from engine.methods.base import BatchInfo, StepOutput, embedding_spread
from engine.models.encoder import Encoder
from engine.training.collectives import gather, rank, world_size

LOSSES = ("nce", "softmax")


def loss_mode(setting: str | None, num_images: int, negatives: int, batch_size: int) -> str:
    """The loss "auto" becomes: the full softmax when the folder has at most ``negatives``
    + ``batch_size`` images (then it costs about what NCE would, and it is exact), NCE
    otherwise."""
    if setting is not None:
        return setting
    return "softmax" if num_images <= negatives + batch_size else "nce"


def _full_precision(like: torch.Tensor) -> torch.autocast:
    """Autocast off: the logits v.w / t (up to 1/t = 14) are computed in float32 even inside
    a bf16 forward pass."""
    return torch.autocast(like.device.type, enabled=False)


def softmax_loss(v: torch.Tensor, bank: torch.Tensor, indices: torch.Tensor,
                 temperature: float) -> torch.Tensor:
    """The full non-parametric softmax (eq. 2): mean over the batch of -log P(i|v_i) with
    P(i|v) = exp(bank[i].v / t) / sum_j exp(bank[j].v / t). ``v`` (N, D) and ``bank``
    (n, D) are L2-normalised; ``indices`` (N,) are the images' rows."""
    return F.cross_entropy(v @ bank.to(v.dtype).T / temperature, indices)


def nce_loss(v: torch.Tensor, bank: torch.Tensor, indices: torch.Tensor,
             noise: torch.Tensor, temperature: float, z: torch.Tensor) -> torch.Tensor:
    """NCE (section 3.2): ``noise`` (N, m) are each image's noise rows of the bank, ``z`` the
    normalising constant Z. With P(j|v) = exp(bank[j].v / t) / Z and P_n = 1/n:
    mean over the batch of -log h(i, v) - sum_j log(1 - h(j, v)),
    h(j, v) = P(j|v) / (P(j|v) + m P_n)."""
    n, m = bank.shape[0], noise.shape[1]
    rows = torch.cat([indices.unsqueeze(1), noise], dim=1)  # (N, 1 + m): own row first
    w = bank[rows].to(v.dtype)  # (N, 1 + m, D)
    log_p = torch.bmm(w, v.unsqueeze(2)).squeeze(2) / temperature - torch.log(z)  # (N, 1+m)
    log_mpn = math.log(m / n)  # log(m P_n)
    log_h_data = log_p[:, 0] - torch.logaddexp(log_p[:, 0], log_p.new_tensor(log_mpn))
    log_h_noise = log_mpn - torch.logaddexp(log_p[:, 1:], log_p.new_tensor(log_mpn))
    return -(log_h_data + log_h_noise.sum(dim=1)).mean()


class InstDisc(nn.Module):
    """Instance discrimination with a memory bank (Wu et al. 2018); see the module's text.

    ``num_images`` rows of ``dim`` in the bank; ``loss`` "nce" or "softmax"; ``negatives``
    the NCE's noise samples m per image; ``seed`` seeds the noise draws (with the step).
    """

    def __init__(self, encoder: Encoder, num_images: int, dim: int = 128,
                 temperature: float = 0.07, momentum: float = 0.5, loss: str = "nce",
                 negatives: int = 4096, seed: int = 0) -> None:
        super().__init__()
        if num_images < 2:
            raise ValueError(f"num_images must be >= 2; got {num_images}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0; got {temperature}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1]; got {momentum}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}; got {loss!r}")
        if negatives < 1:
            raise ValueError(f"negatives must be >= 1; got {negatives}")
        self.encoder = encoder
        self.temperature = temperature
        self.momentum = momentum
        self.loss = loss
        self.negatives = negatives
        self.seed = seed
        self.register_buffer("bank", F.normalize(torch.randn(num_images, dim), dim=1))
        #: NCE's normalising constant Z; 0 until the first NCE step estimates it.
        self.register_buffer("nce_z", torch.zeros((), dtype=torch.float64))
        #: Steps taken: seeds each step's noise draw, identically in every process.
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        # Host copies of the two buffers, so that a step does not wait for the device to
        # read them; forgotten when a state is loaded (a resumed run), then read once.
        self._step: int | None = None
        self._z_known = False
        self.register_load_state_dict_post_hook(_forget_host_copies)

    @property
    def online_encoder(self) -> Encoder:
        return self.encoder

    def noise_rows(self, global_batch: int) -> torch.Tensor:
        """This step's noise rows for every image of the global batch: (global_batch, m),
        uniform over the bank; the same in every process (seeded by the seed and step)."""
        g = torch.Generator(device=self.bank.device)
        if self._step is None:
            self._step = int(self.steps)
        g.manual_seed((self.seed * 1_000_003 + self._step) % 2**63)
        return torch.randint(self.bank.shape[0], (global_batch, self.negatives), generator=g,
                             device=self.bank.device)

    @torch.no_grad()
    def _estimate_z(self, v: torch.Tensor, rows: torch.Tensor) -> None:
        """Z = n x mean(exp(w.v / t)) over this batch's own and noise rows w, in every
        process the mean of the global batch (equal shares: the mean of the shares')."""
        w = self.bank[rows].to(v.dtype)  # (N, 1 + m, D)
        share = torch.exp(torch.bmm(w, v.unsqueeze(2)) / self.temperature).double().mean()
        self.nce_z.copy_(gather(share.view(1)).mean() * self.bank.shape[0])

    @torch.no_grad()
    def update_bank(self, v: torch.Tensor, indices: torch.Tensor) -> None:
        """bank[i] = normalise(m bank[i] + (1 - m) v_i) for the images of every process."""
        v, indices = gather(v.contiguous()), gather(indices.contiguous())
        rows = self.bank[indices]
        self.bank.index_copy_(0, indices, F.normalize(
            self.momentum * rows + (1.0 - self.momentum) * v.to(rows.dtype), dim=1))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor,
                batch: BatchInfo | None = None) -> StepOutput:
        if batch is None:
            raise ValueError("InstDisc needs each image's row in the folder to index its memory "
                             "bank: pass batch=BatchInfo(indices=..., labels=...)")
        indices = batch.indices.to(self.bank.device)
        if indices.shape[0] != x1.shape[0]:
            raise ValueError(f"batch.indices has {indices.shape[0]} rows for {x1.shape[0]} "
                             "images")
        _, z = self.encoder(x1)  # x1 only: the paper's one view per image
        with _full_precision(z):
            v = F.normalize(z.float(), dim=1)  # (N, D)
            if self.loss == "softmax":
                # a copy: the bank changes below, before the backward pass reads it
                bank = self.bank.to(torch.float32, copy=True)
                loss = softmax_loss(v, bank, indices, self.temperature)
            else:
                n = indices.shape[0]
                noise = self.noise_rows(n * world_size())[rank() * n:(rank() + 1) * n]
                if not self._z_known:
                    self._z_known = float(self.nce_z) > 0
                if not self._z_known:  # the first step: estimate Z, then keep it
                    self._estimate_z(v.detach(), torch.cat([indices.unsqueeze(1), noise], 1))
                    self._z_known = True
                loss = nce_loss(v, self.bank, indices, noise, self.temperature,
                                self.nce_z.float())
        with torch.no_grad():
            # cos(v_i, bank[i]) before the update: how close each image's embedding is to
            # its memory of the earlier epochs
            pos = (v.detach() * self.bank[indices]).sum(dim=1).mean()
        self.update_bank(v.detach(), indices)
        self.steps.add_(1)
        if self._step is not None:
            self._step += 1
        return StepOutput(loss, pos, embedding_spread(v))


def _forget_host_copies(module: nn.Module, incompatible_keys: object) -> None:
    assert isinstance(module, InstDisc)
    module._step = None
    module._z_known = False
