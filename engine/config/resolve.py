"""Turn "auto" settings into concrete values for the device and data at hand, saying why."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from engine.config.settings import ConfigError
from engine.config.train_config import PROJ_OUT_DIM, AugmentConfig, TrainConfig
from engine.methods import method_spec
from engine.models.encoder import feature_dim

if TYPE_CHECKING:
    from engine.models.init_weights import InitWeights


#: oneDNN's instruction-set limits (ONEDNN_MAX_CPU_ISA) below AVX-512 BF16.
ONEDNN_ISAS_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE",
                            "AVX512_CORE_VNNI")


@dataclass
class DeviceInfo:
    type: str  # "cpu", "cuda" or "mps"
    name: str
    memory_gb: float | None
    bf16: bool

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def resolve_device(requested: str) -> tuple[torch.device, DeviceInfo]:
    """The torch device for ``requested`` (auto, cpu, cuda, cuda:N, mps), or ConfigError."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                "device cuda was asked for, but PyTorch finds no usable CUDA GPU here; use "
                "--device cpu (or auto), or install a CUDA build of PyTorch and a driver")
        device = torch.device(requested)
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {requested} does not exist: {torch.cuda.device_count()} GPU(s) found")
        props = torch.cuda.get_device_properties(index)
        return torch.device("cuda", index), DeviceInfo(
            "cuda", props.name, round(props.total_memory / 2**30, 1),
            torch.cuda.is_bf16_supported())
    if requested == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError("device mps was asked for, but this machine has no MPS device")
        return torch.device("mps"), DeviceInfo("mps", "Apple GPU", None, False)
    import platform

    name = platform.processor() or platform.machine() or "CPU"
    return torch.device("cpu"), DeviceInfo("cpu", f"{name} ({torch.get_num_threads()} "
                                                   "threads)", None, cpu_has_native_bf16())


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (x86 AVX-512 BF16 or AMX) through oneDNN.

    There, bf16 autocast trains a ResNet about twice as fast as fp32 (BENCHMARKS.md); on
    other CPUs bf16 is emulated and slower than fp32. oneDNN limited to an instruction set
    without bf16 (``ONEDNN_MAX_CPU_ISA``, e.g. AVX2) or ATen to AVX2 or less
    (``ATEN_CPU_CAPABILITY``) counts as a CPU without it: bf16 would be emulated there too.
    """
    if not torch.backends.mkldnn.is_available():
        return False
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper() in ONEDNN_ISAS_WITHOUT_BF16:
        return False
    if not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return False
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def default_backbone(device: DeviceInfo) -> tuple[str, str]:
    """The automatic backbone on ``device``, and why."""
    if device.type in ("cuda", "mps"):
        return "resnet50", "ResNet-50, the papers' encoder, on a GPU"
    return "resnet18", "ResNet-18 on the CPU: ResNet-50 trains there at about 1 pair/s"


def resolve_config(cfg: TrainConfig, device: DeviceInfo, *, typical_side: int | None,
                   num_images: int | None, world_size: int = 1,
                   init: InitWeights | None = None) -> tuple[TrainConfig, dict[str, str]]:
    """A copy of ``cfg`` with every automatic value chosen, and the reason for each choice.

    ``typical_side``: the median shorter side of the folder's images (None if unknown).
    ``num_images``: usable images, to check the batch and queue sizes (None: not yet known).
    ``world_size``: processes training together (torchrun); batch_size is their global
    batch and must divide evenly among them.
    ``init``: the weights the backbone starts from (``cfg.init``, already read): the
    automatic backbone and stem follow them.
    """
    gpu = device.type in ("cuda", "mps")
    why: dict[str, str] = {}
    c = dataclasses.replace(cfg, augment=dataclasses.replace(cfg.augment))

    spec = method_spec(c.method)
    paper = spec.defaults
    if c.backbone is None and init is not None:
        c.backbone = init.arch
        why["backbone"] = f"{init.arch}: the architecture of the --init weights"
    elif c.backbone is None and "backbone" in paper:  # a method whose paper names its encoder
        c.backbone = paper["backbone"]
        why["backbone"] = f"{c.backbone}: the {c.method} paper's encoder"
    elif c.backbone is None:
        c.backbone, why["backbone"] = default_backbone(device)
    if c.image_size is None:
        target = 224 if gpu else 32
        size = target
        if typical_side is not None and typical_side < target:
            size = max(16, int(round(typical_side / 8)) * 8) if typical_side >= 16 else 16
        c.image_size = size
        why["image_size"] = (f"{size} px: the {'GPU' if gpu else 'CPU'} default is {target} px"
                             + (f", and the images are about {typical_side} px"
                                if size != target else ""))
    if c.cache_size is None:
        c.cache_size = max(c.image_size, int(round(c.image_size * 8 / 7)))
        why["cache_size"] = f"{c.cache_size} px: 8/7 of the image size, room for the crops"
    elif c.cache_size < c.image_size:
        raise ConfigError(f"cache_size ({c.cache_size}) must be at least image_size "
                          f"({c.image_size})")
    if c.small_stem is None and init is not None:
        c.small_stem = init.small_stem
        why["small_stem"] = (f"{'3x3' if init.small_stem else 'standard 7x7'} stem: the "
                             "--init weights' conv1, whatever the image size")
    elif c.small_stem is None:
        c.small_stem = c.image_size <= 64
        why["small_stem"] = ("3x3 stem without max-pool at 64 px and below" if c.small_stem
                             else "standard ResNet stem above 64 px")
    if c.batch_size is None:
        per_process = 256 if gpu else 64
        c.batch_size = per_process * world_size
        why["batch_size"] = f"{c.batch_size}: the {'GPU' if gpu else 'CPU'} default" + (
            f" of {per_process} per process, x {world_size} processes" if world_size > 1
            else "")
    if world_size > 1 and c.batch_size % world_size:
        lower = c.batch_size // world_size * world_size
        options = " or ".join(str(b) for b in (lower, lower + world_size) if b >= 2)
        raise ConfigError(
            f"batch_size {c.batch_size} is the global batch of all {world_size} processes and "
            f"must divide evenly among them: use a multiple of {world_size} ({options})")
    if c.sync_batch_norm is None:
        c.sync_batch_norm = True
        why["sync_batch_norm"] = ("on: with several processes every batch norm sees the "
                                  "global batch" + (" (one process here: no effect)"
                                                    if world_size == 1 else ""))
    if c.temperature is None:
        c.temperature = paper["temperature"]
        if "temperature" not in spec.ignores:
            why["temperature"] = f"{c.temperature}: the {c.method} paper default"
    if c.proj_hidden_dim is None:
        c.proj_hidden_dim = feature_dim(c.backbone)
        why["proj_hidden_dim"] = f"{c.proj_hidden_dim}: the encoder's feature width"
    if c.proj_out_dim is None:
        c.proj_out_dim = paper.get("proj_out_dim", PROJ_OUT_DIM)
        why["proj_out_dim"] = (f"{c.proj_out_dim}: the {c.method} paper's width"
                               if "proj_out_dim" in paper else
                               f"{c.proj_out_dim}: the usual width of z")
    if c.head_batch_norm is None:
        c.head_batch_norm = paper["head_batch_norm"]
    if c.optimizer is None:
        c.optimizer = paper["optimizer"]
        why["optimizer"] = f"{c.optimizer}: the {c.method} paper default"
    # A method's paper may fix the learning rate, its scaling and the weight decay for its
    # optimiser (BYOL: LARS at 0.2 x batch / 256); they apply while that optimiser is used.
    own = paper if c.optimizer == paper["optimizer"] else {}
    if c.lr_scaling is None:
        if "lr_scaling" in own:
            c.lr_scaling = own["lr_scaling"]
            why["lr_scaling"] = f"{c.lr_scaling}: the {c.method} paper's rule"
        else:
            # SimCLR (appendix B.1): with LARS, lr = 0.075 x sqrt(batch) beats linear
            # scaling for small batches and short runs; the two agree at batch 4096.
            c.lr_scaling = "sqrt" if c.optimizer == "lars" else "linear"
            why["lr_scaling"] = f"{c.lr_scaling}: the {c.optimizer} default"
    if c.lr is None:
        if "lr" in own:
            c.lr = own["lr"]
            why["lr"] = f"{c.lr} per 256 images, the {c.method} paper default"
        else:
            c.lr = {"lars": 1.2, "sgd": 0.03, "adamw": 0.001}[c.optimizer]
            why["lr"] = f"{c.lr} per 256 images, the {c.optimizer} default"
    if c.weight_decay is None:
        c.weight_decay = own.get("weight_decay",
                                 {"lars": 1e-6, "sgd": 1e-4, "adamw": 1e-4}[c.optimizer])
    if c.warmup_epochs is None:
        c.warmup_epochs = min(10.0, c.epochs / 10)
        why["warmup_epochs"] = f"{c.warmup_epochs:g}: 10 epochs or a tenth of the run"
    if c.precision is None:
        if device.type == "cuda":
            c.precision = "bf16" if device.bf16 else "fp16"
            why["precision"] = f"{c.precision} autocast on this GPU"
        elif device.type == "cpu" and device.bf16:
            c.precision = "bf16"
            why["precision"] = ("bf16 autocast: this CPU has bf16 instructions (about twice "
                                "as fast as fp32)")
        else:
            c.precision = "fp32"
            why["precision"] = f"fp32 on {device.type}"
    if c.channels_last is None:
        # oneDNN's CPU convolutions are faster in channels-last too (BENCHMARKS.md).
        c.channels_last = device.type in ("cuda", "cpu")
    if c.view_passes is None:
        # One pass of 2N: SimCLR's batch-norm semantics. Two passes of N were faster in fp32
        # in one idle measurement and no faster on a busy machine (BENCHMARKS.md, "fp32
        # CPUs"): not yet a reason to change the default's statistics.
        c.view_passes = "one"
        if "view_passes" not in spec.ignores:
            why["view_passes"] = ("one: a forward pass of both views, batch norm over all 2N "
                                  "(SimCLR's own code)")
    if c.augment.blur_p is None:
        c.augment.blur_p = 0.5 if c.image_size > 64 else 0.0
        why["blur_p"] = f"{c.augment.blur_p}: blur is {'on' if c.augment.blur_p else 'off'} " \
                        "above/at 64 px as in SimCLR"
    if device.type == "cpu" and c.precision == "fp16":
        raise ConfigError("precision fp16 needs a GPU; use fp32, bf16 or auto on the CPU")
    if device.type == "cpu" and c.precision == "bf16" and not device.bf16:
        why["precision"] = ("bf16 as asked; this CPU has no bf16 instructions, so it is "
                            "emulated and slower than fp32")
    if device.type == "cuda" and c.precision == "bf16" and not device.bf16:
        raise ConfigError(f"precision bf16 is not supported by {device.name}; use fp16 or auto")

    if num_images is None:
        return c, why
    if num_images < c.batch_size:
        raise ConfigError(
            f"batch_size {c.batch_size} is larger than the {num_images} usable image(s) in "
            f"the folder: lower --batch-size to at most {num_images} or add images")
    changes, reasons = method_spec(c.method).fit_to_data(c, num_images)
    for name, value in changes.items():
        setattr(c, name, value)
    why.update(reasons)
    return c, why


@dataclass(frozen=True)
class RunSettings:
    """A run's settings with every "auto" value chosen (:func:`resolve_config`): what the
    training loop reads. The fields are TrainConfig's; those that may be "auto" there are
    never None here (max_steps None means no limit, num_threads None every core).
    ``config`` is the TrainConfig itself, written whole as the run's config.json."""

    config: TrainConfig
    data: str
    method: str
    backbone: str
    init: str
    small_stem: bool
    image_size: int
    cache_size: int
    cache_format: str  # raw, jpeg or none once the cache is chosen (auto before)
    batch_size: int
    epochs: int
    max_steps: int | None
    temperature: float
    proj_hidden_dim: int
    proj_out_dim: int
    head_batch_norm: bool
    sync_batch_norm: bool
    queue_size: int
    moco_momentum: float
    momentum_ramp: bool
    target_momentum: float
    supcon_unlabelled: float
    bank_size: int | None  # InstDisc: set from the folder; None for the other methods
    bank_momentum: float
    instdisc_loss: str | None  # InstDisc: set from the folder; None for the other methods
    nce_negatives: int
    optimizer: str
    lr: float
    lr_scaling: str
    weight_decay: float
    sgd_momentum: float
    warmup_epochs: float
    precision: str
    channels_last: bool
    view_passes: str
    compile: bool
    device: str
    seed: int
    log_every: int
    keep_every: int
    checkpoint_minutes: float
    knn_every: int
    knn_max_images: int
    live_map: str
    num_threads: int | None
    decode_workers: int | None
    max_image_pixels: int
    augment: AugmentConfig

    @classmethod
    def of(cls, cfg: TrainConfig) -> RunSettings:
        """The settings of a resolved ``cfg``; ValueError names any "auto" value left."""
        values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)
                  if f.name != "config"}
        left = [f.name for f in dataclasses.fields(cls)
                if values.get(f.name, cfg) is None and "None" not in str(f.type)]
        if cfg.augment.blur_p is None:
            left.append("augment.blur_p")
        if left:
            raise ValueError(f"settings not resolved yet: {', '.join(left)} (resolve_config)")
        return cls(config=cfg, **values)

    def to_dict(self) -> dict:
        """The settings as config.json holds them (TrainConfig.to_dict)."""
        return self.config.to_dict()
