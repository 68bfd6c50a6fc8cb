"""Loading an export back: as a callable here (:func:`load_exported`), and as the Python
snippet written beside every export (:func:`encoder_snippet`, :func:`embeddings_snippet`).

A snippet is a self-contained script that needs nothing of this project: it names the
exported file by its absolute path, loads it with the format's own library (torch +
torchvision, safetensors, onnxruntime or numpy), runs the encoder on a dummy batch ``x``
(or reads the arrays) and prints the shapes it got, e.g. ``h: (2, 512)``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision import models as tvm

from engine.config.train_config import BACKBONES
from engine.export.formats import (
    ExportError,
    MissingExtra,
    format_of,
    head_path_of,
    quiet_torchscript,
    require_extras,
)
from engine.models.encoder import ProjectionHead
from engine.run.checkpoint import refused_as_unsafe

Outputs = torch.Tensor | tuple[torch.Tensor, torch.Tensor]
SNIPPET_BATCH = 2  # the dummy batch size the snippets run


def load_exported(path: Path) -> Callable[[torch.Tensor], Outputs]:
    """Load an export (format from its suffix) as a callable in eval mode that maps a float
    (N, 3, S, S) normalised batch to h, or to (h, z) when the head was exported.

    torchvision/safetensors: a torchvision ResNet (stem and architecture read from the
    weights) plus, when ``<stem>-head<suffix>`` exists beside it, the projection head.
    torchscript: ``torch.jit.load``. onnx: an onnxruntime session wrapped to take and
    return torch tensors. No pickled Python is run: weights load with ``weights_only=True``
    (or from safetensors), TorchScript and ONNX files hold graphs, not Python code.
    """
    path = Path(path)
    fmt = format_of(path)
    if not path.is_file():
        raise ExportError(f"no exported encoder at {path}")
    try:
        if fmt == "torchscript":
            with quiet_torchscript():
                return torch.jit.load(str(path), map_location="cpu").eval()
        if fmt == "onnx":
            return _OnnxRuntimeEncoder(path)
    except MissingExtra:
        raise
    except Exception as exc:  # damaged, truncated or foreign files raise many types
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "no detail"
        raise ExportError(f"{path} is not readable as a {fmt} export ({type(exc).__name__}: "
                          f"{detail}); it may be damaged or not an export. Export the "
                          "encoder again") from exc
    state = _read_weights(path, fmt)
    arch, small_stem = infer_architecture(state)
    backbone = torchvision_backbone(arch, small_stem)
    backbone.load_state_dict(state, strict=True)
    head_path = head_path_of(path)
    head = None
    if head_path.is_file():
        head_state = _read_weights(head_path, fmt)
        try:
            head = _head_sequential(**_head_layout_from_state(head_state))
            head.load_state_dict(head_state, strict=True)
        except (KeyError, IndexError, RuntimeError) as exc:
            raise ExportError(f"{head_path} is not a projection head exported with "
                              f"{path.name}; delete it or export again") from exc
    return _ExportedEncoder(backbone, head).eval()


class _ExportedEncoder(nn.Module):
    """A torchvision backbone and optional plain-Sequential head: h, or (h, z)."""

    def __init__(self, backbone: nn.Module, head: nn.Module | None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> Outputs:
        h = self.backbone(x)
        return h if self.head is None else (h, self.head(h))


class _OnnxRuntimeEncoder:
    """An onnxruntime session that takes and returns torch tensors like the modules."""

    def __init__(self, path: Path) -> None:
        require_extras("onnx")
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        self.session = ort.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def eval(self) -> _OnnxRuntimeEncoder:
        return self

    def __call__(self, x: torch.Tensor) -> Outputs:
        arrays = self.session.run(None, {self.input_name: x.detach().cpu().float().numpy()})
        outputs = tuple(torch.from_numpy(a) for a in arrays)
        return outputs[0] if len(outputs) == 1 else (outputs[0], outputs[1])


def _read_weights(path: Path, fmt: str) -> dict[str, torch.Tensor]:
    try:
        if fmt == "safetensors":
            require_extras("safetensors")
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except MissingExtra:
        raise
    except Exception as exc:  # many types for damaged or foreign files
        if refused_as_unsafe(exc):
            raise ExportError(f"{path} is not an export this program will open: it holds "
                              "Python objects besides tensors, and loading those could run "
                              "code from the file") from exc
        raise ExportError(f"{path} is not readable as a {fmt} export "
                          f"({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict):
        raise ExportError(f"{path} does not hold a state_dict")
    return state


# ------------------------------------------------------------------- the architecture


def infer_architecture(state: dict[str, torch.Tensor]) -> tuple[str, bool]:
    """(torchvision ResNet name, small stem) read from a backbone's weights."""
    conv1 = state.get("conv1.weight")
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"layer3\.(\d+)\.", k))}
    if conv1 is None or conv1.dim() != 4 or not blocks:
        raise ExportError("these weights are not a torchvision ResNet backbone")
    small_stem = tuple(conv1.shape[-2:]) == (3, 3)
    bottleneck = "layer1.0.conv3.weight" in state
    arch = {(2, False): "resnet18", (6, False): "resnet34",
            (6, True): "resnet50"}.get((max(blocks) + 1, bottleneck))
    if arch is None or arch not in BACKBONES:
        raise ExportError(f"these ResNet weights are not one of {', '.join(BACKBONES)}")
    return arch, small_stem


def torchvision_backbone(arch: str, small_stem: bool) -> nn.Module:
    """Exactly what the load snippet builds: torchvision's constructor, nothing of ours."""
    net = getattr(tvm, arch)(weights=None)
    if small_stem:
        net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net


def head_layout(head: nn.Module) -> dict[str, Any]:
    """The head's sizes, as the metadata records them and the snippet builds it: the
    ProjectionHead's MLP, or one linear layer (hidden_dim None)."""
    if isinstance(head, nn.Linear):
        return {"in_dim": head.in_features, "hidden_dim": None, "out_dim": head.out_features,
                "batch_norm": False}
    if not isinstance(head, ProjectionHead):
        raise ExportError(f"cannot export a head of type {type(head).__name__}; only the "
                          "engine's ProjectionHead or one linear layer")
    return _head_layout_from_state(head.net.state_dict())


def _head_layout_from_state(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    first = state["0.weight"]  # (hidden, in), or (out, in) for a one-layer head
    if not any(k.startswith(("1.", "2.", "3.")) for k in state):
        return {"in_dim": first.shape[1], "hidden_dim": None, "out_dim": first.shape[0],
                "batch_norm": False}
    batch_norm = "1.running_mean" in state
    last = state["3.weight" if batch_norm else "2.weight"]  # (out, hidden)
    return {"in_dim": first.shape[1], "hidden_dim": first.shape[0], "out_dim": last.shape[0],
            "batch_norm": batch_norm}


def _head_sequential(in_dim: int, hidden_dim: int | None, out_dim: int,
                     batch_norm: bool) -> nn.Module:
    """The projection head as a plain Sequential with the same indices as ProjectionHead
    (a one-layer head: ``Sequential(Linear)``)."""
    if hidden_dim is None:
        return nn.Sequential(nn.Linear(in_dim, out_dim))
    layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(hidden_dim))
    layers += [nn.ReLU(), nn.Linear(hidden_dim, out_dim)]
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------- snippets


def encoder_snippet(fmt: str, path: Path, meta: dict[str, Any]) -> str:
    """A script that loads the encoder exported to ``path`` (absolute) with nothing of this
    project installed, runs it on a dummy batch ``x`` and prints the shapes of h (and z).
    ``meta`` is the export's metadata (architecture, stem, input size, outputs, head)."""
    path = Path(path).absolute()
    size, norm = meta["input_size"], meta["normalization"]
    outputs = meta["outputs"]
    names = list(outputs)  # ["h"] or ["h", "z"]
    dims = ", ".join(f"{k}: (N, {v})" for k, v in outputs.items())
    usage = [f"# x: float32 (N, 3, {size}, {size}), RGB in [0, 1] normalised per channel with",
             f"#    mean={norm['mean']} std={norm['std']}"]
    dummy = f"(N={SNIPPET_BATCH}): put your own images here"
    prints = [f"print('{k}:', tuple({k}.shape))" for k in names]
    if fmt == "torchscript":
        lines = ["import torch", "",
                 f"model = torch.jit.load({str(path)!r}, map_location='cpu').eval()", "",
                 *usage, f"x = torch.randn({SNIPPET_BATCH}, 3, {size}, {size})  # a dummy batch "
                 + dummy, "with torch.no_grad():", f"    {', '.join(names)} = model(x)  # {dims}"]
        return "\n".join(lines + prints) + "\n"
    if fmt == "onnx":
        run = f"session.run({names!r}, {{'images': x}})"
        lines = ["import numpy as np", "import onnxruntime as ort", "",
                 f"session = ort.InferenceSession({str(path)!r}, "
                 "providers=['CPUExecutionProvider'])", "",
                 *[line.replace("float32", "numpy float32", 1) for line in usage],
                 "x = np.random.default_rng(0).standard_normal("
                 f"({SNIPPET_BATCH}, 3, {size}, {size}), dtype=np.float32)  # a dummy batch "
                 + dummy, (f"h, z = {run}" if len(names) == 2 else f"h = {run}[0]")
                 + f"  # {dims}"]
        return "\n".join(lines + prints) + "\n"
    read = ("load_file({!r})" if fmt == "safetensors"
            else "torch.load({!r}, map_location='cpu', weights_only=True)")
    lines = ["import torch", "import torchvision", "from torch import nn"]
    if fmt == "safetensors":
        lines.append("from safetensors.torch import load_file")
    lines += ["", f"model = torchvision.models.{meta['architecture']}()",
              "model.fc = nn.Identity()"]
    if meta["small_stem"]:
        lines += ["# small-image stem (3x3 convolution, no max-pool), as trained",
                  "model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)",
                  "model.maxpool = nn.Identity()"]
    lines += [f"model.load_state_dict({read.format(str(path))}, strict=True)", "model.eval()"]
    head = meta.get("head")
    if head is not None and head.get("hidden_dim") is None:  # one linear layer
        layers = [f"nn.Linear({head['in_dim']}, {head['out_dim']})"]
    elif head is not None:
        layers = [f"nn.Linear({head['in_dim']}, {head['hidden_dim']}, "
                  f"bias={not head['batch_norm']})"]
        if head["batch_norm"]:
            layers.append(f"nn.BatchNorm1d({head['hidden_dim']})")
        layers += ["nn.ReLU()", f"nn.Linear({head['hidden_dim']}, {head['out_dim']})"]
    if head is not None:
        head_file = str(path.with_name(meta["head_file"]))
        lines += ["head = nn.Sequential(" + ", ".join(layers) + ")",
                  f"head.load_state_dict({read.format(head_file)}, strict=True)",
                  "head.eval()"]
    lines += ["", *usage, f"x = torch.randn({SNIPPET_BATCH}, 3, {size}, {size})  # a dummy "
              "batch " + dummy, "with torch.no_grad():",
              f"    h = model(x)  # h: (N, {outputs['h']})"]
    if head is not None:
        lines.append(f"    z = head(h)  # z: (N, {head['out_dim']})")
    return "\n".join(lines + prints) + "\n"


def embeddings_snippet(fmt: str, path: Path, space: str, shape: tuple[int, int]) -> str:
    """A script that reads the embeddings written to ``path`` (absolute): the matrix as
    ``h`` or ``z`` (numpy, one row per image) and, for CSV, ``paths``, ``labels``
    (-1: none) and ``classes``; it prints the matrix's shape."""
    path = Path(path).absolute()
    rows, dim = shape
    if fmt == "npy":
        lines = ["import numpy as np", "",
                 f"{space} = np.load({str(path)!r})  # float32 ({rows}, {dim}): one row per "
                 "image, in the folder's order"]
    else:
        lines = ["import csv", "", "import numpy as np", "",
                 f"with open({str(path)!r}, newline='', encoding='utf-8') as f:",
                 "    header, *rows = list(csv.reader(f))",
                 "paths = [row[0] for row in rows]",
                 "labels = [int(row[1]) if row[1] else -1 for row in rows]  # -1: no label",
                 "classes = [row[2] for row in rows]",
                 f"{space} = np.array([[float(v) for v in row[3:]] for row in rows], "
                 f"dtype=np.float32)  # ({rows}, {dim})"]
    lines.append(f"print('{space}:', tuple({space}.shape))")
    return "\n".join(lines) + "\n"
