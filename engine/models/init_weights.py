"""Starting a run's backbone from existing weights (TrainConfig.init, ``--init``).

``init`` is "" (random init, the default), "imagenet", or the path of a file:

- a torchvision ResNet ``state_dict`` saved with ``torch.save`` (.pt/.pth: keys
  ``conv1.weight``, ``layer1.0.conv1.weight``, ``fc.weight``...). It may be wrapped in a
  mapping under ``state_dict``, ``model`` or ``net``, and its backbone keys may sit under
  one prefix, such as ``module.`` (DataParallel/DDP), ``backbone.``, ``encoder.``,
  ``model.`` or ``module.encoder_q.`` (MoCo's query encoder): the prefix is removed and
  named in the description. Keys outside it (a projection head) and ``fc`` (a classifier:
  our backbone's fc is the identity) are left out;
- a ``.safetensors`` file of such a state_dict (needs the optional ``safetensors``
  package);
- an export of this program (engine.export) in the torchvision (.pt) or safetensors
  format, or its metadata JSON (``<file>.json``, naming the file beside it);
- a run's checkpoint (``checkpoints/last.pt``, or the run folder: its last.pt), whose
  method's online encoder gives the backbone.

"imagenet" is torchvision's published ImageNet weights for the run's ResNet
(ResNet18_Weights.IMAGENET1K_V1, ResNet34_Weights.IMAGENET1K_V1,
ResNet50_Weights.IMAGENET1K_V2), read from torch's hub cache
(``torch.hub.get_dir()/checkpoints/<file>``) and downloaded there when missing.
They need the standard 7x7 stem, and the default normalisation (ImageNet's mean and
std) is theirs.

Files load with ``torch.load(weights_only=True)`` (no pickled code runs) or safetensors.
The checks run before anything else starts: the file's architecture and stem against the
run's (:func:`check_fits`), naming the expected and found shapes. The training loop
applies the weights through ``engine.methods.build_model(cfg, init=...)``, to the encoder
before the method's module is built, so a method's copies of it (MoCo's key encoder)
start from them too. Embedding and export never read the file: they load a checkpoint.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from engine.config.settings import ConfigError
from engine.run.io import file_sha256

IMAGENET = "imagenet"
#: torchvision's published ImageNet weights per backbone: (weights enum, member).
IMAGENET_WEIGHTS = {"resnet18": ("ResNet18_Weights", "IMAGENET1K_V1"),
                    "resnet34": ("ResNet34_Weights", "IMAGENET1K_V1"),
                    "resnet50": ("ResNet50_Weights", "IMAGENET1K_V2")}
#: Wrappers of a state_dict in a saved mapping (tried in this order).
_WRAPPERS = ("state_dict", "model", "net")
#: Prefix words of a copy that is not the online network (a momentum/target encoder).
_NOT_ONLINE = ("encoder_k", "target", "teacher", "momentum", "ema", "key")
_SHOWN = 5  # keys listed in a message at most


@dataclass(frozen=True)
class InitWeights:
    """Backbone weights read for ``init``: torchvision parameter names, no ``fc``."""

    source: str  # "imagenet" or the file's absolute path (what config.json records)
    path: Path  # the file read
    description: str  # for people: what the file is and what was taken from it
    sha256: str
    arch: str  # resnet18, resnet34 or resnet50
    small_stem: bool  # conv1 is 3x3 (the small-image stem) rather than 7x7
    state: dict[str, torch.Tensor] = field(repr=False)


# -------------------------------------------------------------------------- reading


def read_init(init: str, *, backbone: str | None = None) -> InitWeights:
    """The backbone weights ``init`` names ("imagenet" or a path); ConfigError saying what
    to do when they cannot be read. ``backbone``: the run's ResNet, needed for "imagenet"
    (a file says its own)."""
    if init.strip().lower() == IMAGENET:
        if backbone is None:
            raise ConfigError("--init imagenet needs a backbone: give --backbone")
        return imagenet_weights(backbone)
    path = Path(init).expanduser()
    if path.is_dir():
        from engine.run.layout import RunDir

        run = RunDir(path)
        if not run.is_run():
            raise ConfigError(f"--init {init}: a folder, but not a run folder (no config.json)"
                              "; give a weights file, a run folder or imagenet")
        path = run.last_checkpoint
        if not path.is_file():
            raise ConfigError(f"--init {init}: this run has no checkpoint yet ({path})")
    if path.suffix.lower() == ".json":
        path = _export_of_metadata(path)
    if not path.is_file():
        raise ConfigError(f"--init {init}: no such file. Give a .pt/.pth or .safetensors "
                          "weights file, an export of this program, a run folder, or imagenet")
    path = path.resolve()
    suffix = path.suffix.lower()
    if suffix in (".onnx", ".torchscript", ".ts"):
        raise ConfigError(f"--init {path.name}: weights cannot be read back from a "
                          f"{suffix[1:]} file; export the encoder in the torchvision or "
                          "safetensors format and start from that")
    raw = _read_safetensors(path) if suffix == ".safetensors" else _read_torch(path)
    state, what = backbone_state(raw, path)
    arch, small_stem = architecture(state, path.name)
    return InitWeights(str(path), path, f"{path.name} ({what}: {arch}, "
                       f"{'small 3x3' if small_stem else 'standard 7x7'} stem)",
                       file_sha256(path), arch, small_stem, state)


def _export_of_metadata(path: Path) -> Path:
    """The export file that a metadata JSON beside it describes."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        return path.with_name(str(meta["file"]))
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"--init {path}: not the metadata JSON of an export (it names no "
                          "\"file\"); give the weights file itself") from None


def _read_safetensors(path: Path) -> dict[str, Any]:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise ConfigError(f"--init {path.name}: reading .safetensors files needs the "
                          "safetensors package: pip install safetensors (or "
                          "pip install 'contrastive-explorer[safetensors]')") from None
    try:
        return dict(load_file(str(path)))
    except Exception as exc:  # damaged or foreign files raise several types
        raise ConfigError(f"--init {path}: not a readable safetensors file "
                          f"({type(exc).__name__}: {_first_line(exc)})") from None


def _read_torch(path: Path) -> dict[str, Any]:
    from engine.run.checkpoint import refused_as_unsafe

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged or foreign files
        if refused_as_unsafe(exc):
            raise ConfigError(
                f"--init {path}: the file holds Python objects besides tensors, and loading "
                "those could run code from it, so it is not opened. Save the model's "
                "state_dict() (torch.save(model.state_dict(), path)) and start from that"
            ) from None
        raise ConfigError(f"--init {path}: not a readable weights file "
                          f"({type(exc).__name__}: {_first_line(exc)})") from None
    if not isinstance(state, dict):
        raise ConfigError(f"--init {path}: holds a {type(state).__name__}, not a state_dict "
                          "(a mapping of parameter names to tensors)")
    return state


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no detail"


def backbone_state(raw: dict[str, Any], path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """The ResNet backbone's weights in a loaded file (torchvision names, no fc), and what
    the file was, in words."""
    if "checkpoint_version" in raw and "model" in raw:
        return _checkpoint_backbone(raw, path), "a checkpoint of this program"
    state, wrapper = raw, ""
    for key in _WRAPPERS:
        if isinstance(state.get(key), dict) and not _is_tensors(state):
            state, wrapper = state[key], f"under {key!r}, "
            break
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ConfigError(f"--init {path.name}: holds no tensors; give a ResNet state_dict")
    prefixes = sorted({k[:-len("conv1.weight")] for k in tensors
                       if k.endswith("conv1.weight") and "layer" not in k
                       and k[:-len("conv1.weight")] + "layer1.0.conv1.weight" in tensors})
    if len(prefixes) > 1:
        online = [p for p in prefixes if not any(w in p.lower() for w in _NOT_ONLINE)]
        prefixes = online if len(online) == 1 else prefixes
    if not prefixes:
        raise ConfigError(f"--init {path.name}: not a torchvision ResNet's weights (no "
                          f"conv1.weight with layer1 beside it); its keys begin "
                          f"{', '.join(list(tensors)[:_SHOWN])}")
    if len(prefixes) > 1:
        raise ConfigError(f"--init {path.name}: holds several ResNets (under "
                          f"{', '.join(repr(p) for p in prefixes)}); save the one to start "
                          "from on its own")
    prefix = prefixes[0]
    out = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    out = {k: v for k, v in out.items() if not k.startswith("fc.")}
    kind = ("an export of this program" if path.with_name(path.name + ".json").is_file()
            else "a ResNet state_dict")
    removed = f"prefix {prefix!r} removed" if prefix else ""
    notes = ", ".join(x for x in (wrapper.rstrip(", "), removed) if x)
    return out, kind + (f" ({notes})" if notes else "")


def _is_tensors(state: dict[str, Any]) -> bool:
    return any(isinstance(v, torch.Tensor) for v in state.values())


def _checkpoint_backbone(raw: dict[str, Any], path: Path) -> dict[str, torch.Tensor]:
    """The online encoder's backbone of a run's checkpoint: its method's module is built
    from the checkpoint's settings and loaded, so any method's layout is understood."""
    from engine.config.resolve import RunSettings
    from engine.config.train_config import TrainConfig
    from engine.methods import build_model

    config = raw.get("config")
    if not isinstance(config, dict):
        raise ConfigError(f"--init {path}: this checkpoint holds no settings; start from an "
                          "export of it instead")
    try:
        settings = RunSettings.of(TrainConfig.from_dict(config, where=str(path)))
        model = build_model(settings)
        model.load_state_dict(raw["model"])
    except (ConfigError, ValueError, KeyError, RuntimeError) as exc:
        raise ConfigError(f"--init {path}: cannot read its model ({_first_line(exc)}); "
                          "start from an export of the run instead") from None
    return {k: v.detach().clone() for k, v in
            model.online_encoder.backbone.state_dict().items()}


def architecture(state: dict[str, torch.Tensor], name: str) -> tuple[str, bool]:
    """(ResNet name, small stem) told from a backbone's weights: bottleneck blocks (conv3)
    make a ResNet-50 (layer4 width 2048), basic blocks a ResNet-18 or -34 (width 512: 2 or 6
    blocks in layer3); conv1's kernel gives the stem (3x3 small, 7x7 standard)."""
    conv1 = state.get("conv1.weight")
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"layer3\.(\d+)\.", k))}
    if conv1 is None or conv1.dim() != 4 or not blocks:
        raise ConfigError(f"--init {name}: not a torchvision ResNet backbone (conv1.weight or "
                          "layer3 missing)")
    bottleneck = "layer1.0.conv3.weight" in state
    arch = {(2, False): "resnet18", (6, False): "resnet34",
            (6, True): "resnet50"}.get((max(blocks) + 1, bottleneck))
    if arch is None:
        raise ConfigError(f"--init {name}: a ResNet with {max(blocks) + 1} blocks in layer3 "
                          f"({'bottleneck' if bottleneck else 'basic'} blocks); this program "
                          "trains resnet18, resnet34 and resnet50 only")
    return arch, tuple(conv1.shape[-2:]) == (3, 3)


# ------------------------------------------------------------------------- ImageNet


def imagenet_url(backbone: str) -> tuple[str, str]:
    """(weights name, url) of torchvision's ImageNet weights for ``backbone``."""
    from torchvision import models as tvm

    if backbone not in IMAGENET_WEIGHTS:
        raise ConfigError(f"--init imagenet: no ImageNet weights for {backbone!r}")
    enum, member = IMAGENET_WEIGHTS[backbone]
    return f"{enum}.{member}", getattr(getattr(tvm, enum), member).url


def imagenet_cache_path(backbone: str) -> Path:
    """Where torch's hub keeps the file (``$TORCH_HOME/hub/checkpoints/<name>``)."""
    _, url = imagenet_url(backbone)
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def imagenet_weights(backbone: str) -> InitWeights:
    """torchvision's ImageNet weights for ``backbone``, from the hub cache, downloaded
    there first when missing; ConfigError saying how to supply the file when offline."""
    name, url = imagenet_url(backbone)
    path = imagenet_cache_path(backbone)
    if not path.is_file():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # The file name carries the first hex digits of its sha256, which torch checks.
            match = re.search(r"-([a-f0-9]+)\.", path.name)
            torch.hub.download_url_to_file(url, str(path), match.group(1) if match else None,
                                           progress=False)
        except Exception as exc:  # URLError offline, HTTPError, a bad hash, a full disk
            path.unlink(missing_ok=True)
            raise ConfigError(
                f"--init imagenet: the {name} weights could not be fetched from {url} "
                f"({type(exc).__name__}: {_first_line(exc)}). On a machine with a network, "
                f"download that file and put it at {path} (torch's hub cache; TORCH_HOME "
                "moves it), or pass --init PATH with the file's path") from None
    raw = _read_torch(path)
    state, _ = backbone_state(raw, path)
    arch, small_stem = architecture(state, path.name)
    if arch != backbone:
        raise ConfigError(f"--init imagenet: {path} holds a {arch}, not the {backbone} "
                          f"weights; delete it so that it is fetched again")
    return InitWeights(IMAGENET, path, f"imagenet ({name}, {path.name})", file_sha256(path),
                       arch, small_stem, state)


# --------------------------------------------------------------------------- checks


def stem_words(small_stem: bool) -> str:
    return "the small 3x3 stem" if small_stem else "the standard 7x7 stem"


def check_fits(weights: InitWeights, backbone: str, small_stem: bool) -> None:
    """ConfigError unless ``weights`` load into this run's ``backbone`` with
    ``small_stem``: names the expected and found shapes, or the keys missing and
    unexpected (the first few)."""
    from engine.models.encoder import build_backbone

    name = IMAGENET if weights.source == IMAGENET else weights.path.name
    run = f"this run's {backbone} with {stem_words(small_stem)}"
    if weights.arch != backbone:
        raise ConfigError(
            f"--init {name} holds a {weights.arch} backbone but {run} is set: use --backbone "
            f"{weights.arch} (or leave the backbone auto: it follows the file), or a file "
            f"for {backbone}")
    with torch.device("meta"):  # shapes only: no memory, no random init
        expected = {k: tuple(v.shape) for k, v in
                    build_backbone(backbone, small_stem=small_stem).state_dict().items()}
    found = {k: tuple(v.shape) for k, v in weights.state.items()}
    wrong = [k for k in expected if k in found and found[k] != expected[k]]
    if "conv1.weight" in wrong:
        fix = "--small-stem false" if small_stem else "--small-stem true"
        why = " (ImageNet weights need the standard stem)" if name == IMAGENET else ""
        raise ConfigError(
            f"--init {name}: conv1.weight: {run} expects {expected['conv1.weight']}, the "
            f"file has {found['conv1.weight']}{why}: use {fix} (or leave small_stem auto: it "
            f"follows the file), or a file for {backbone} with {stem_words(small_stem)}")
    if wrong:
        listed = "; ".join(f"{k}: expected {expected[k]}, found {found[k]}"
                           for k in wrong[:_SHOWN])
        raise ConfigError(f"--init {name}: {len(wrong)} weight(s) do not fit {run}: {listed}")
    # Old torchvision files have no num_batches_tracked (batch norm then counts from 0).
    missing = [k for k in expected if k not in found and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in found if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({', '.join(missing[:_SHOWN])}"
                         f"{', ...' if len(missing) > _SHOWN else ''})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({', '.join(unexpected[:_SHOWN])}"
                         f"{', ...' if len(unexpected) > _SHOWN else ''})")
        raise ConfigError(f"--init {name}: the keys do not match {run}'s: "
                          f"{'; '.join(parts)}")


def apply_init(backbone: torch.nn.Module, weights: InitWeights) -> None:
    """Copy ``weights`` into ``backbone`` (checked already by :func:`check_fits`)."""
    result = backbone.load_state_dict(weights.state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise ConfigError(f"--init {weights.path.name}: keys do not match the backbone "
                          f"(missing {missing[:_SHOWN]}, unexpected "
                          f"{result.unexpected_keys[:_SHOWN]})")
