"""Configuration of augmentations and training runs, with each method's preset.

Defaults follow the papers: SimCLR (Chen et al., 2020, appendix A and B.9),
MoCo v2 (Chen et al., 2020, "Improved Baselines with Momentum Contrastive Learning") and
BYOL (Grill et al., 2020, "Bootstrap Your Own Latent") and
SupCon (Khosla et al., 2020, "Supervised Contrastive Learning"); the
methods and their presets are those of engine.methods.METHODS.
``None`` means "auto": see :func:`engine.config.resolve.resolve_config` for what it becomes.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.config.settings import ConfigError, setting, update, validate
from engine.methods import DEFAULT_METHOD
from engine.methods import METHODS as METHOD_SPECS

METHODS = tuple(METHOD_SPECS)  # the method names, as --method takes them
BACKBONES = ("resnet18", "resnet34", "resnet50")
LIVE_MAP_LAYOUTS = ("pca", "umap", "off")  # how the live map lays out its points, or off
#: How the decoded images are kept (engine.data.cache_format), or auto.
CACHE_FORMATS = ("auto", "raw", "jpeg", "none")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class AugmentConfig:
    """How each view of a positive pair is made (applied in this order)."""

    crop_scale_min: float = setting(
        0.08, "Random resized crop: smallest crop area, as a fraction of the image.",
        min=0.0, max=1.0, min_exclusive=True)
    crop_scale_max: float = setting(
        1.0, "Random resized crop: largest crop area, as a fraction of the image.",
        min=0.0, max=1.0, min_exclusive=True)
    crop_ratio_min: float = setting(
        3 / 4, "Random resized crop: smallest aspect ratio (width / height).",
        min=0.1, max=10.0)
    crop_ratio_max: float = setting(
        4 / 3, "Random resized crop: largest aspect ratio (width / height).",
        min=0.1, max=10.0)
    flip_p: float = setting(0.5, "Probability of a horizontal flip.", min=0.0, max=1.0)
    jitter_p: float = setting(0.8, "Probability of applying colour jitter.", min=0.0, max=1.0)
    jitter_strength: float = setting(
        1.0, "Colour jitter strength s: multiplies the four jitter amounts below "
        "(SimCLR: s=1; MoCo v2: s=0.5).", min=0.0, max=4.0)
    jitter_brightness: float = setting(
        0.8, "Brightness jitter amount at s=1 (factor drawn from [1-a, 1+a]).", min=0.0, max=4.0)
    jitter_contrast: float = setting(
        0.8, "Contrast jitter amount at s=1 (factor drawn from [1-a, 1+a]).", min=0.0, max=4.0)
    jitter_saturation: float = setting(
        0.8, "Saturation jitter amount at s=1 (factor drawn from [1-a, 1+a]).", min=0.0, max=4.0)
    jitter_hue: float = setting(
        0.2, "Hue jitter amount at s=1 (shift drawn from [-a, a]; a*s at most 0.5).",
        min=0.0, max=0.5)
    grayscale_p: float = setting(0.2, "Probability of converting to grayscale.",
                                 min=0.0, max=1.0)
    blur_p: float | None = setting(
        None, "Probability of a Gaussian blur.", min=0.0, max=1.0,
        auto="0.5 above 64 px, 0 at 64 px and below, as in SimCLR's CIFAR setting")
    blur_p2: float | None = setting(
        None, "Probability of a Gaussian blur of the second view of each pair (BYOL: 1.0 "
        "for the first view, 0.1 for the second).", min=0.0, max=1.0,
        auto="the same as blur_p")
    blur_sigma_min: float = setting(0.1, "Gaussian blur: smallest sigma, in pixels.",
                                    min=0.0, max=50.0, min_exclusive=True)
    blur_sigma_max: float = setting(2.0, "Gaussian blur: largest sigma, in pixels.",
                                    min=0.0, max=50.0, min_exclusive=True)
    blur_kernel_fraction: float = setting(
        0.1, "Gaussian blur kernel size as a fraction of the image side (made odd).",
        min=0.0, max=1.0, min_exclusive=True)
    solarize_p: float = setting(0.0, "Probability of solarisation (invert pixels above "
                                "the threshold).", min=0.0, max=1.0)
    solarize_p2: float | None = setting(
        None, "Probability of solarisation of the second view of each pair (BYOL: 0 for "
        "the first view, 0.2 for the second).", min=0.0, max=1.0,
        auto="the same as solarize_p")
    solarize_threshold: float = setting(0.5, "Solarisation threshold, in [0, 1] intensity.",
                                        min=0.0, max=1.0)
    normalize_mean: tuple[float, float, float] = setting(
        IMAGENET_MEAN, "Per-channel mean subtracted after augmentation (R G B).",
        cli=False)
    normalize_std: tuple[float, float, float] = setting(
        IMAGENET_STD, "Per-channel standard deviation divided after augmentation (R G B).",
        cli=False)

    def __post_init__(self) -> None:
        validate(self)
        if self.crop_scale_min > self.crop_scale_max:
            raise ConfigError(
                f"crop_scale_min ({self.crop_scale_min}) must not exceed crop_scale_max "
                f"({self.crop_scale_max})")
        if self.crop_ratio_min > self.crop_ratio_max:
            raise ConfigError(
                f"crop_ratio_min ({self.crop_ratio_min}) must not exceed crop_ratio_max "
                f"({self.crop_ratio_max})")
        if self.blur_sigma_min > self.blur_sigma_max:
            raise ConfigError(
                f"blur_sigma_min ({self.blur_sigma_min}) must not exceed blur_sigma_max "
                f"({self.blur_sigma_max})")
        if self.jitter_hue * self.jitter_strength > 0.5:
            raise ConfigError(
                f"jitter_hue x jitter_strength must be at most 0.5; got "
                f"{self.jitter_hue} x {self.jitter_strength}")
        for name in ("normalize_mean", "normalize_std"):
            value = getattr(self, name)
            if len(value) != 3:
                raise ConfigError(f"{name} must have 3 values (R G B); got {len(value)}")
        if min(self.normalize_std) <= 0:
            raise ConfigError(f"normalize_std values must be > 0; got {self.normalize_std}")

    def with_values(self, **values: Any) -> AugmentConfig:
        return update(self, values, where="augmentation settings")


def augment_preset(method: str) -> AugmentConfig:
    """The augmentation preset of a method (its MethodSpec.augment over the defaults)."""
    if method not in METHODS:  # (a tuple: an unhashable value is refused by name too)
        raise ConfigError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    return AugmentConfig(**METHOD_SPECS[method].augment)


def _per_method(name: str, word: Callable[[Any], str] = str) -> str:
    """An "auto" text listing each method's default: "0.1 for SimCLR, 0.2 for MoCo v2"
    (the methods that do not read the setting left out)."""
    return ", ".join(f"{word(spec.defaults[name])} for {spec.title}"
                     for spec in METHOD_SPECS.values() if name not in spec.ignores)


def _paper_own(name: str) -> str:
    """The methods whose paper sets ``name`` for its optimiser: "; BYOL: 0.2 with LARS"."""
    def text(value: Any) -> str:
        return f"{value:g}" if isinstance(value, float) else str(value)

    own = [f"{spec.title}: {text(spec.defaults[name])} with "
           f"{spec.defaults['optimizer'].upper()}"
           for spec in METHOD_SPECS.values() if name in spec.defaults]
    return "; " + ", ".join(own) if own else ""


#: The projection head's output width of a method whose paper does not give its own.
PROJ_OUT_DIM = 128


def _out_dims() -> str:
    """The "auto" text of proj_out_dim: each paper's width ("256 for BYOL"), else 128."""
    own = [f"{spec.defaults['proj_out_dim']} for {spec.title}"
           for spec in METHOD_SPECS.values() if "proj_out_dim" in spec.defaults]
    return ", ".join(own + [f"{PROJ_OUT_DIM} for the others"]) if own else str(PROJ_OUT_DIM)


@dataclass
class TrainConfig:
    """Everything that defines a training run. Saved whole as the run's config.json."""

    data: str = setting("", "Image folder to train on (class sub-folders give labels).",
                        cli=False)
    method: str = setting(DEFAULT_METHOD, "Contrastive method.", choices=METHODS)
    backbone: str | None = setting(
        None, "Encoder architecture (torchvision ResNet, trained from scratch).",
        choices=BACKBONES, auto="the method paper's encoder where it names one (ResNet-18 for "
        "InstDisc), else resnet50 on a GPU and resnet18 on the CPU")
    init: str = setting(
        "", "Weights to start the encoder's backbone from instead of random ones: "
        "imagenet (torchvision's published ImageNet weights for the backbone, from torch's "
        "hub cache or downloaded there), or the path of a torchvision ResNet state_dict "
        "(.pt/.pth), a .safetensors file, an export of this program (torchvision or "
        "safetensors format) or a run's checkpoint. Empty: random init. With a file, the "
        "automatic backbone and stem follow it.")
    small_stem: bool | None = setting(
        None, "Use a small-image stem (3x3 convolution, no max-pool) instead of ResNet's "
        "7x7/2 + max-pool.", auto="on at 64 px and below")
    image_size: int | None = setting(
        None, "Side of the square training views, in pixels.", min=16, max=1024,
        auto="224 on a GPU and 32 on the CPU, never above the data's typical size")
    cache_size: int | None = setting(
        None, "Side of the decoded image cache, in pixels (shorter side resized, centre "
        "square kept); at least image_size.", min=16, max=2048,
        auto="8/7 of image_size, e.g. 256 for 224")
    cache_format: str = setting(
        "auto", "How the decoded images are kept: raw (uint8, the fastest to read), jpeg (the "
        "same images as JPEGs, typically 8-15x smaller at 96-224 px, decoded each batch) or "
        "none (no cache: each batch decodes the original files). auto: raw when it fits the "
        "free space of the cache folder (at a smaller cache side if need be), else jpeg when "
        "its estimated size fits, else none.", choices=CACHE_FORMATS)
    batch_size: int | None = setting(
        None, "Images per step (each gives two views); with several processes (torchrun) "
        "the global batch, shared equally among them.", min=2, max=65536,
        auto="256 per GPU or 64 on the CPU, times the number of processes")
    epochs: int = setting(100, "Passes over the data.", min=1, max=100000)
    max_steps: int | None = setting(
        None, "Stop after this many optimiser steps in total (for short trials).",
        min=1, max=10**9, auto="no limit")
    temperature: float | None = setting(
        None, "Softmax temperature of the contrastive loss.", min=0.001, max=10.0,
        auto=_per_method("temperature"))
    proj_hidden_dim: int | None = setting(
        None, "Hidden width of the projection head.", min=1, max=65536,
        auto="the encoder's feature width (2048 for ResNet-50)")
    proj_out_dim: int | None = setting(
        None, "Output width of the projection head (z).", min=1, max=65536,
        auto=_out_dims())
    head_batch_norm: bool | None = setting(
        None, "Batch norm after the projection head's hidden layer.",
        auto=_per_method("head_batch_norm", lambda on: "on" if on else "off")
        + " as in the papers")
    sync_batch_norm: bool | None = setting(
        None, "With several processes (torchrun): batch norm normalises over the global "
        "batch, every process's images together, as one device would (SimCLR's global BN; "
        "it also keeps MoCo's key encoder from cheating through per-device statistics). "
        "No effect in a single process.", auto="on")
    queue_size: int = setting(
        65536, "MoCo: number of negative keys in the queue (reduced, with a warning, to "
        "fit inside the dataset).", min=1, max=10**7)
    moco_momentum: float = setting(
        0.999, "MoCo: momentum m of the key encoder (key = m*key + (1-m)*query).",
        min=0.0, max=1.0)
    momentum_ramp: bool = setting(
        False, "MoCo: raise the key-encoder momentum towards 1 on a cosine schedule.")
    target_momentum: float = setting(
        0.996, "BYOL: base rate tau of the target network's moving average (target = "
        "tau*target + (1-tau)*online), raised to 1 on a cosine schedule over the run.",
        min=0.0, max=1.0)
    supcon_unlabelled: float = setting(
        0.0, "SupCon: fraction of each class's images trained without their label (as in "
        "SimCLR, an image's only positive is then its other view), chosen from the seed: a "
        "semi-supervised run. 0 uses every label.", min=0.0, max=1.0)
    bank_size: int | None = setting(
        None, "InstDisc: rows of the memory bank, one per image of the folder (recorded in "
        "config.json, from which embedding and export rebuild the model).", min=1,
        max=10**8, auto="the number of usable images")
    bank_momentum: float = setting(
        0.5, "InstDisc: momentum m of the memory bank (row = normalise(m*row + (1-m)*v)).",
        min=0.0, max=1.0)
    instdisc_loss: str | None = setting(
        None, "InstDisc: the non-parametric softmax in full over the whole bank, or its NCE "
        "estimate with nce_negatives noise samples per image.", choices=("nce", "softmax"),
        auto="the full softmax when the folder has at most nce_negatives + batch_size "
        "images, NCE otherwise")
    nce_negatives: int = setting(
        4096, "InstDisc: noise samples m per image of the NCE loss, drawn uniformly from "
        "the bank (reduced, with a warning, below the number of images).", min=1,
        max=10**7)
    optimizer: str | None = setting(
        None, "Optimiser.", choices=("lars", "sgd", "adamw"),
        auto=_per_method("optimizer", str.upper))
    lr: float | None = setting(
        None, "Base learning rate for a batch of 256; the rate used is scaled by "
        "lr_scaling.", min=0.0, max=100.0, min_exclusive=True,
        auto="1.2 for LARS (SimCLR's 0.075 x sqrt(batch)), 0.03 for SGD, 0.001 for AdamW"
        + _paper_own("lr"))
    lr_scaling: str | None = setting(
        None, "How the rate grows with batch size: linear (lr x batch/256), sqrt "
        "(lr x sqrt(batch/256)) or none.", choices=("linear", "sqrt", "none"),
        auto="sqrt for LARS, as SimCLR recommends below batch 4096; linear otherwise"
        + _paper_own("lr_scaling"))
    weight_decay: float | None = setting(
        None, "Weight decay (not applied to biases and batch-norm parameters).",
        min=0.0, max=1.0, auto="1e-6 for LARS, 1e-4 for SGD, 1e-4 for AdamW"
        + _paper_own("weight_decay"))
    sgd_momentum: float = setting(0.9, "Momentum of SGD and LARS.", min=0.0, max=1.0)
    warmup_epochs: float | None = setting(
        None, "Linear learning-rate warm-up, in epochs, before the cosine decay.",
        min=0.0, max=10000.0, auto="10 epochs or a tenth of the run, whichever is shorter")
    precision: str | None = setting(
        None, "Numeric precision of the forward pass.", choices=("fp32", "bf16", "fp16"),
        auto="bf16 on GPUs that support it, else fp16 on a GPU; on the CPU bf16 where it has "
        "bf16 instructions (AVX-512 BF16, AMX), else fp32")
    channels_last: bool | None = setting(
        None, "Channels-last memory format for the convolutions.", auto="on, except on Apple MPS")
    view_passes: str | None = setting(
        None, "How SimCLR, SupCon and BYOL encode the two views of a batch of N images: one "
        "(one forward pass of all 2N views: batch norm normalises both views with statistics "
        "shared over the 2N, as SimCLR's own code does) or two (a pass of N per view: each "
        "view is normalised with its own statistics, as lightly's and most PyTorch code "
        "do). The loss is the same function of the projections; the batch-norm statistics, "
        "and so the projections, differ a little.", choices=("one", "two"),
        auto="one, SimCLR's semantics, everywhere")
    compile: bool = setting(False, "Compile the model with torch.compile (GPU).")
    device: str = setting("auto", "Training device: auto, cpu, cuda or cuda:N.")
    seed: int = setting(0, "Random seed; a seeded run on the CPU is reproducible.",
                        min=0, max=2**63 - 1)
    log_every: int = setting(10, "Log a step event every this many steps.", min=1,
                             max=10**6)
    keep_every: int = setting(
        10, "Keep a numbered checkpoint (epoch-NNNN.pt) every this many epochs; last.pt "
        "is rewritten every epoch.", min=1, max=10**6)
    checkpoint_minutes: float = setting(
        10.0, "Also rewrite last.pt within an epoch once this many minutes have passed since "
        "the last checkpoint, so that a crash, a kill or a power cut loses at most this much "
        "training; 0: only at the end of each epoch.", min=0.0, max=10.0**6)
    knn_every: int = setting(
        1, "With labels (class sub-folders): measure weighted kNN accuracy (k=20, T=0.07, "
        "a fixed 20% held-out split) on the frozen features every this many epochs and at "
        "the end; 0 turns it off. It only reads the model: training is unchanged.",
        min=0, max=10**6)
    knn_max_images: int = setting(
        5000, "Images used for the per-epoch kNN accuracy at most (a fixed random "
        "sample of larger folders).", min=10, max=10**7)
    live_map: str = setting(
        "pca", "A 2-D map of a fixed sample of at most 2,000 images, made every knn_every "
        "epochs and at the end and kept in the run's live_map/ folder, so the clusters can "
        "be watched forming: pca (a fraction of a second per update), umap (several seconds "
        "per update, and up to a minute to load the first time) or off. Each map is turned "
        "to fit the one before. With labels it reuses the kNN evaluation's features; "
        "without, it embeds its sample. It only reads the model: training is unchanged.",
        choices=LIVE_MAP_LAYOUTS)
    num_threads: int | None = setting(
        None, "CPU threads for PyTorch.", min=1, max=1024, auto="every core")
    decode_workers: int | None = setting(
        None, "Processes (threads under 20,000 images) that decode the images into the "
        "cache.", min=1, max=1024, auto="every core")
    max_image_pixels: int = setting(
        178_956_970, "Skip images with more pixels than this (decompression-bomb guard).",
        min=1, max=10**11)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig(**_known(AugmentConfig, self.augment, "augment"))
        validate(self)
        dev = self.device
        # ASCII digits without leading zeros: what torch.device parses ("cuda:²" and
        # "cuda:01" pass str.isdigit() but make torch.device raise).
        if not (dev in ("auto", "cpu", "cuda", "mps") or
                re.fullmatch(r"cuda:(0|[1-9][0-9]{0,3})", dev)):
            raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps; got {dev!r}")
        if (self.image_size is not None and self.cache_size is not None
                and self.cache_size < self.image_size):
            raise ConfigError(
                f"cache_size ({self.cache_size}) must be at least image_size "
                f"({self.image_size})")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["augment"]["normalize_mean"] = list(self.augment.normalize_mean)
        out["augment"]["normalize_std"] = list(self.augment.normalize_std)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, where: str = "config") -> TrainConfig:
        values = dict(values)
        augment = values.pop("augment", None)
        base = preset(values.get("method", DEFAULT_METHOD))
        if augment is not None:
            if not isinstance(augment, dict):
                raise ConfigError(f"augment in {where} must be a mapping of settings")
            base.augment = update(base.augment, augment, where=f"{where} (augment)")
        return update(base, values, where=where)

    def save(self, path: Path) -> None:
        from engine.run.io import write_json_atomic

        write_json_atomic(path, self.to_dict())


def _known(cls: type, values: dict[str, Any], where: str) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown setting(s) in {where}: {', '.join(unknown)}")
    return values


def preset(method: str) -> TrainConfig:
    """The default configuration of a method (see engine.methods.METHODS)."""
    return TrainConfig(method=method, augment=augment_preset(method))


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a JSON config file (for example a run's config.json) as a mapping of settings."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:  # binary garbage, e.g. a file overwritten by a crash
        raise ConfigError(f"config file {path} is not valid JSON: not UTF-8 text "
                          f"(byte {exc.start})") from None
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid JSON: {exc}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a JSON object of settings")
    return values
