"""Each method's entry in the registry: its name, title, preset, paper defaults, own
settings and hooks, as data that imports no torch.

The settings (engine.config.train_config), the CLI's parser and its checks read these
without torch, so that bad settings are refused at once; a spec imports its method's
module (engine.methods.simclr, engine.methods.moco, ...: torch) only to build or step
a model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.config.settings import ConfigError
from engine.methods.base import MethodSpec

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from engine.config.resolve import RunSettings
    from engine.config.train_config import TrainConfig
    from engine.models.encoder import Encoder


class SimCLRSpec(MethodSpec):
    def build(self, encoder: Encoder, cfg: TrainConfig | RunSettings) -> nn.Module:
        from engine.methods.simclr import SimCLR

        assert cfg.temperature is not None
        return SimCLR(encoder, temperature=cfg.temperature,
                      view_passes=cfg.view_passes or "one")


SIMCLR = SimCLRSpec(
    name="simclr", title="SimCLR",
    paper="Chen et al. 2020, A Simple Framework for Contrastive Learning of Visual "
          "Representations",
    augment={},  # AugmentConfig's defaults are SimCLR's
    defaults={"temperature": 0.1, "optimizer": "lars", "head_batch_norm": True},
)


class MoCoSpec(MethodSpec):
    def build(self, encoder: Encoder, cfg: TrainConfig | RunSettings) -> nn.Module:
        from engine.methods.moco import MoCo

        assert cfg.temperature is not None
        return MoCo(encoder, dim=cfg.proj_out_dim, queue_size=cfg.queue_size,
                    momentum=cfg.moco_momentum, temperature=cfg.temperature)

    def before_step(self, model: nn.Module, cfg: RunSettings, step: int,
                    total_steps: int) -> None:
        from engine.methods.moco import MoCo, key_encoder_momentum

        assert isinstance(model, MoCo)
        model.momentum = key_encoder_momentum(cfg.moco_momentum, step, total_steps,
                                              ramp=cfg.momentum_ramp)

    def step_fields(self, model: nn.Module) -> dict[str, float]:
        return {"momentum": float(model.momentum)}

    def fit_to_data(self, cfg: TrainConfig, num_images: int
                    ) -> tuple[dict[str, Any], dict[str, str]]:
        # Keys stay in the queue for queue_size / batch steps; if that spans the dataset an
        # image's own earlier key becomes one of its negatives.
        assert cfg.batch_size is not None
        limit = ((num_images - cfg.batch_size) // cfg.batch_size) * cfg.batch_size
        if limit < 1:
            raise ConfigError(
                f"MoCo needs more images than two batches for its queue: {num_images} images "
                f"at batch size {cfg.batch_size}. Lower --batch-size or use --method simclr")
        if cfg.queue_size <= limit:
            return {}, {}
        return {"queue_size": limit}, {"queue_size": (
            f"reduced from {cfg.queue_size} to {limit}: the queue must stay smaller than the "
            f"dataset ({num_images} images)")}


MOCO = MoCoSpec(
    name="moco", title="MoCo v2",
    paper="Chen et al. 2020, Improved Baselines with Momentum Contrastive Learning",
    # crop scale 0.2-1, jitter 0.4/0.4/0.4/0.1 (= 0.8/0.8/0.8/0.2 at s=0.5)
    augment={"crop_scale_min": 0.2, "jitter_strength": 0.5},
    defaults={"temperature": 0.2, "optimizer": "sgd", "head_batch_norm": False},
    settings=("queue_size", "moco_momentum", "momentum_ramp"),
    logged=("momentum",),
    ignores=("view_passes",),  # the query and the key views have encoders of their own
)

class BYOLSpec(MethodSpec):
    def build(self, encoder: Encoder, cfg: TrainConfig | RunSettings) -> nn.Module:
        from engine.methods import byol

        assert cfg.proj_out_dim is not None and cfg.proj_hidden_dim is not None
        return byol.BYOL(encoder, dim=cfg.proj_out_dim, hidden_dim=cfg.proj_hidden_dim,
                         momentum=cfg.target_momentum, batch_norm=bool(cfg.head_batch_norm),
                         view_passes=cfg.view_passes or "one")

    def before_step(self, model: nn.Module, cfg: RunSettings, step: int,
                    total_steps: int) -> None:
        from engine.methods import byol
        from engine.methods.moco import key_encoder_momentum

        assert isinstance(model, byol.BYOL)
        # tau = 1 - (1 - base) (cos(pi k / K) + 1) / 2 (BYOL, eq. 9)
        model.momentum = key_encoder_momentum(cfg.target_momentum, step, total_steps,
                                              ramp=True)

    def step_fields(self, model: nn.Module) -> dict[str, float]:
        return {"momentum": float(model.momentum)}


BYOL = BYOLSpec(
    name="byol", title="BYOL",
    paper="Grill et al. 2020, Bootstrap Your Own Latent: A New Approach to Self-Supervised "
          "Learning",
    # Table 6: asymmetric views (blur always in the first, rarely in the second; solarisation
    # only in the second), colour jitter 0.4/0.4/0.2/0.1 with p=0.8, grayscale 0.2, crop
    # 0.08-1 and flip (AugmentConfig's defaults), blur sigma 0.1-2 with a kernel of 10%.
    augment={"jitter_brightness": 0.4, "jitter_contrast": 0.4, "jitter_saturation": 0.2,
             "jitter_hue": 0.1, "blur_p": 1.0, "blur_p2": 0.1, "solarize_p": 0.0,
             "solarize_p2": 0.2},
    # LARS at 0.2 x batch / 256 with weight decay 1.5e-6 (section 3.2); z of width 256; the
    # temperature is not read (no softmax): its value only fills the setting.
    defaults={"temperature": 0.1, "optimizer": "lars", "head_batch_norm": True, "lr": 0.2,
              "lr_scaling": "linear", "weight_decay": 1.5e-6, "proj_out_dim": 256},
    settings=("target_momentum",),
    logged=("momentum",),
    ignores=("temperature",),
)


class SupConSpec(MethodSpec):
    def build(self, encoder: Encoder, cfg: TrainConfig | RunSettings) -> nn.Module:
        from engine.methods.supcon import SupCon

        assert cfg.temperature is not None
        return SupCon(encoder, temperature=cfg.temperature,
                      view_passes=cfg.view_passes or "one")

    def training_labels(self, cfg: RunSettings, labels: np.ndarray) -> np.ndarray:
        from engine.methods.supcon import hide_labels

        return hide_labels(labels, cfg.supcon_unlabelled, cfg.seed)


SUPCON = SupConSpec(
    name="supcon", title="SupCon",
    paper="Khosla et al. 2020, Supervised Contrastive Learning",
    augment={},  # SimCLR's augmentations, as in the paper
    defaults={"temperature": 0.1, "optimizer": "lars", "head_batch_norm": True},
    settings=("supcon_unlabelled",),
    uses_labels=True,
)


class InstDiscSpec(MethodSpec):
    def build(self, encoder: Encoder, cfg: TrainConfig | RunSettings) -> nn.Module:
        from torch import nn

        from engine.methods.instdisc import InstDisc, loss_mode
        from engine.models.encoder import feature_dim

        assert cfg.temperature is not None and cfg.backbone is not None
        if cfg.bank_size is None:
            raise ValueError("InstDisc's bank_size is set from the folder's number of images: "
                             "resolve the settings with num_images (resolve_config) first")
        assert cfg.batch_size is not None
        # The paper's linear 128-d embedding replaces the MLP projection head.
        encoder.head = nn.Linear(feature_dim(cfg.backbone), cfg.proj_out_dim)
        return InstDisc(encoder, cfg.bank_size, dim=cfg.proj_out_dim,
                        temperature=cfg.temperature, momentum=cfg.bank_momentum,
                        loss=loss_mode(cfg.instdisc_loss, cfg.bank_size, cfg.nce_negatives,
                                       cfg.batch_size),
                        negatives=min(cfg.nce_negatives, cfg.bank_size), seed=cfg.seed)

    def fit_to_data(self, cfg: TrainConfig, num_images: int
                    ) -> tuple[dict[str, Any], dict[str, str]]:
        from engine.methods.instdisc import loss_mode

        assert cfg.batch_size is not None
        if cfg.bank_size is not None and cfg.bank_size != num_images:
            raise ConfigError(
                f"InstDisc's memory bank has one row per image: bank_size {cfg.bank_size} "
                f"does not match the folder's {num_images} usable images. Leave bank_size "
                "on auto; a run whose folder changed since it started cannot go on: start "
                "a new one")
        # The automatic values are recorded in config.json (embedding and export rebuild
        # the model from it); only a setting changed from what was asked is a reason (the
        # loop warns about those).
        mode = loss_mode(cfg.instdisc_loss, num_images, cfg.nce_negatives, cfg.batch_size)
        changes: dict[str, Any] = {"bank_size": num_images, "instdisc_loss": mode}
        reasons: dict[str, str] = {}
        if mode == "nce" and cfg.nce_negatives >= num_images:
            changes["nce_negatives"] = num_images - 1
            reasons["nce_negatives"] = (
                f"reduced from {cfg.nce_negatives} to {num_images - 1}: the noise samples "
                f"must be fewer than the images ({num_images})")
        return changes, reasons


INSTDISC = InstDiscSpec(
    name="instdisc", title="InstDisc",
    paper="Wu et al. 2018, Unsupervised Feature Learning via Non-Parametric Instance "
          "Discrimination",
    # the reference code's (lemniscate.pytorch, also MoCo v1's): crop scale 0.2-1, colour
    # jitter 0.4/0.4/0.4/0.4 on every image, grayscale 0.2, flip, no blur (it converts to
    # grayscale before the jitter, the engine after)
    augment={"crop_scale_min": 0.2, "jitter_p": 1.0, "jitter_brightness": 0.4,
             "jitter_contrast": 0.4, "jitter_saturation": 0.4, "jitter_hue": 0.4,
             "blur_p": 0.0},
    # SGD lr 0.03 at batch 256, momentum 0.9, weight decay 5e-4; ResNet-18
    defaults={"temperature": 0.07, "optimizer": "sgd", "head_batch_norm": False,
              "lr": 0.03, "weight_decay": 5e-4, "backbone": "resnet18"},
    settings=("bank_size", "bank_momentum", "instdisc_loss", "nce_negatives"),
    # the head is one linear layer: no hidden layer, no batch norm in it
    ignores=("proj_hidden_dim", "head_batch_norm", "view_passes"),
)


class RotationSpec(MethodSpec):
    def build(self, encoder: Encoder, cfg: TrainConfig | RunSettings) -> nn.Module:
        from torch import nn

        from engine.methods.rotation import ROTATIONS, RotationPrediction
        from engine.models.encoder import feature_dim

        assert cfg.backbone is not None
        # The rotation classifier on h is the encoder's head: z are its four logits.
        encoder.head = nn.Linear(feature_dim(cfg.backbone), ROTATIONS)
        return RotationPrediction(encoder)

    def step_fields(self, model: nn.Module) -> dict[str, float]:
        return {"rotation_accuracy": model.accuracy()}


ROTATION = RotationSpec(
    name="rotation", title="Rotation",
    paper="Gidaris et al. 2018, Unsupervised Representation Learning by Predicting Image "
          "Rotations",
    # crops and flips only, as in the paper: no colour jitter, grayscale or blur
    augment={"crop_scale_min": 0.5, "jitter_p": 0.0, "grayscale_p": 0.0, "blur_p": 0.0},
    # SGD lr 0.1, momentum 0.9, weight decay 5e-4; the temperature is not read
    defaults={"temperature": 0.1, "optimizer": "sgd", "head_batch_norm": False,
              "lr": 0.1, "weight_decay": 5e-4},
    logged=("rotation_accuracy",),
    # a cross entropy over 4 rotations and a linear classifier as the head
    ignores=("temperature", "proj_hidden_dim", "proj_out_dim", "head_batch_norm",
             "view_passes"),
    # Its spread is measured on h, which is non-negative after the last ReLU: about 0.25
    # in healthy runs of the demo, next to the collapse line, and a 4-way classification
    # has no collapse to one point to warn of.
    warns_of_collapse=False,
)

#: Every method, in the order the CLI and the app list them.
ALL = (SIMCLR, MOCO, BYOL, SUPCON, INSTDISC, ROTATION)
