"""The export formats: their names and suffixes, the packages each needs, and the writers.

Each writer serialises in memory and writes the file atomically (temporary file + rename),
so a failed or interrupted export never leaves a half-written file under the export's name.
"""

from __future__ import annotations

import contextlib
import csv
import io
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from engine.models.encoder import Encoder, ProjectionHead
from engine.run.io import write_atomic

if TYPE_CHECKING:
    from engine.export.encoder import ExportResult

FORMATS = ("torchvision", "torchscript", "onnx", "safetensors")
SUFFIXES = {"torchvision": ".pt", "torchscript": ".torchscript", "onnx": ".onnx",
            "safetensors": ".safetensors"}
EMBEDDING_SUFFIXES = {"npy": ".npy", "csv": ".csv"}
ONNX_OPSET = 17


class ExportError(Exception):
    """An export could not be written or did not verify; str() says what happened and
    what to do. ``result`` holds the :class:`ExportResult` when files were written."""

    def __init__(self, message: str, result: ExportResult | None = None) -> None:
        super().__init__(message)
        self.result = result


class MissingExtra(ExportError):
    """A format needs an optional package that is not installed."""


# ------------------------------------------------------------------------------ names


def export_path(out: Path, fmt: str) -> Path:
    """The file an export to ``out`` writes: ``out`` when it has the format's suffix, ``out``
    with the suffix appended when it has none or an unrelated one (``encoder.v2`` ->
    ``encoder.v2.pt``). A suffix that belongs to another format (``.onnx`` for a
    TorchScript export, ``.pth``, ``.json``) is refused: it is likely a mistake."""
    check_format(fmt)
    out = Path(out)
    right = SUFFIXES[fmt]
    suffix = out.suffix.lower()
    if suffix == right:
        return out
    if suffix in set(SUFFIXES.values()) | {".pth", ".json", ".pt2", ".ts"}:
        raise ExportError(
            f"{out.name} ends in {out.suffix}, but {fmt} exports end in {right}; name the "
            f"file {out.with_suffix(right).name} or choose the format that matches")
    return out.with_name(out.name + right)


def head_path_of(path: Path) -> Path:
    """The second file of a torchvision/safetensors export with its head: <stem>-head<suffix>."""
    return path.with_name(f"{path.stem}-head{path.suffix}")


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")


def format_of(path: Path) -> str:
    """The encoder format of an exported file, from its suffix."""
    suffix = path.suffix.lower()
    if suffix == ".pth":
        return "torchvision"
    for fmt, right in SUFFIXES.items():
        if suffix == right:
            return fmt
    raise ExportError(f"cannot tell the format of {path.name}: exports end in "
                      f"{', '.join(SUFFIXES.values())}")


def require_extras(fmt: str) -> None:
    """Raise MissingExtra when ``fmt`` needs a package that is not importable."""
    needed = {"onnx": ("onnx", "onnxruntime"), "safetensors": ("safetensors",)}.get(fmt, ())
    missing = []
    for name in needed:
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        label = "ONNX" if fmt == "onnx" else fmt
        raise MissingExtra(
            f"{label} export needs the {fmt} extra ({', '.join(missing)} not installed): "
            f"pip install 'contrastive-explorer[{fmt}]'")


@contextlib.contextmanager
def quiet_torchscript() -> Iterator[None]:
    """torch 2.14 marks torch.jit.trace/save/load deprecated (FutureWarning) in favour of
    torch.export. TorchScript is still the format most C++/mobile/serving code loads, and
    it is offered on purpose, so the warning is not repeated to every user of an export."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated",
                                category=FutureWarning)
        yield


# ---------------------------------------------------------------------------- encoders


def write_encoder(fmt: str, model: Encoder, path: Path, head_path: Path | None,
                  include_head: bool, images: torch.Tensor, embedded: str) -> None:
    """Write ``model`` in ``fmt``; ``embedded`` is the metadata JSON that formats with a
    place for it (TorchScript extra file, ONNX metadata_props, safetensors header) carry.
    ``head_path`` is the head's file of the weight formats (None: no head file)."""
    if fmt == "torchvision":
        write_torchvision(model, path, head_path)
    elif fmt == "torchscript":
        write_torchscript(model, path, include_head, images, embedded)
    elif fmt == "onnx":
        write_onnx(model, path, include_head, images, embedded)
    else:
        write_safetensors(model, path, head_path, embedded)


def write_torchvision(model: Encoder, path: Path, head_path: Path | None) -> None:
    _write_torch_save(path, backbone_state(model))
    if head_path is not None:
        _write_torch_save(head_path, head_state(model))


def _write_torch_save(path: Path, state: dict[str, torch.Tensor]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_bytes(path, buffer.getbuffer())


def write_torchscript(model: Encoder, path: Path, include_head: bool, images: torch.Tensor,
                      embedded: str) -> None:
    module: nn.Module = model if include_head else model.backbone
    # Tracing records one batch size's shapes, but a ResNet's graph has no shape-dependent
    # branches (flatten keeps dim 0 symbolic), so the trace runs at any batch size; the
    # verification runs it at another batch size than the example's to prove it.
    example = images[:2]
    buffer = io.BytesIO()
    with quiet_torchscript(), torch.no_grad():
        traced = torch.jit.trace(module, example, check_trace=False)
        torch.jit.save(traced, buffer, _extra_files={"contrastive_explorer.json": embedded})
    write_bytes(path, buffer.getbuffer())


def write_onnx(model: Encoder, path: Path, include_head: bool, images: torch.Tensor,
               embedded: str) -> None:
    import onnx

    module: nn.Module = model if include_head else model.backbone
    outputs = ["h", "z"] if include_head else ["h"]
    buffer = io.BytesIO()
    # torch >= 2.9 defaults to the torch.export-based ("dynamo") exporter, which needs the
    # onnxscript package, takes ~10x longer for a ResNet-18 here and prints its progress to
    # stdout (where the engine's child process writes its JSON events). The TorchScript-based
    # exporter needs nothing beyond torch, handles a plain ResNet fully (opset 17, dynamic
    # batch axis) and is what we verify against onnxruntime. It is deprecated: if a future
    # torch drops it, switch to dynamo=True with dynamic_shapes and add onnxscript to the
    # extra. Its deprecation warnings (the call and its internals) are silenced because
    # this choice is deliberate; the block runs nothing else.
    with warnings.catch_warnings(), quiet_torchscript(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module, (images[:2],), buffer,  # type: ignore[arg-type]  # legacy path takes BytesIO
            dynamo=False, opset_version=ONNX_OPSET,
            input_names=["images"], output_names=outputs,
            dynamic_axes={name: {0: "batch"} for name in ["images", *outputs]},
            do_constant_folding=True)
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto)
    entry = proto.metadata_props.add()
    entry.key, entry.value = "contrastive_explorer", embedded
    write_bytes(path, proto.SerializeToString())


def write_safetensors(model: Encoder, path: Path, head_path: Path | None,
                      embedded: str) -> None:
    from safetensors.torch import save

    # "format": "pt" is the convention that tells loaders the tensors are PyTorch's.
    header = {"format": "pt", "contrastive_explorer": embedded}
    write_bytes(path, save(backbone_state(model), metadata=header))
    if head_path is not None:
        write_bytes(head_path, save(head_state(model), metadata=header))


def write_bytes(path: Path, data: bytes | memoryview) -> None:
    def write(f: IO[bytes]) -> None:
        f.write(data)

    write_atomic(path, write)


def backbone_state(model: Encoder) -> dict[str, torch.Tensor]:
    """The backbone's tensors, under torchvision's own parameter names."""
    return {k: v.detach().cpu().contiguous().clone()
            for k, v in model.backbone.state_dict().items()}


def head_state(model: Encoder) -> dict[str, torch.Tensor]:
    """The head's tensors, keyed for a plain ``nn.Sequential`` (``0.weight``, ...): the
    ProjectionHead's MLP, or a one-layer linear head (InstDisc's embedding, the rotation
    classifier) as ``Sequential(Linear)``."""
    if isinstance(model.head, nn.Linear):
        state = {f"0.{k}": v for k, v in model.head.state_dict().items()}
    else:
        assert isinstance(model.head, ProjectionHead)
        state = model.head.net.state_dict()
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


# -------------------------------------------------------------------------- embeddings


def write_embeddings(out: Path, vectors: np.ndarray, paths: Sequence[str],
                     labels: Sequence[int], classes: Sequence[str], space: str) -> str:
    """Write an (images, dim) matrix to ``out``: .npy (the matrix alone) or .csv (one row
    per image: path, label, class, then the vector with 7 significant digits). Returns the
    format ("npy" or "csv")."""
    fmt = out.suffix.lower()[1:]
    if fmt == "npy":
        write_atomic(out, lambda f: np.save(f, vectors))
    elif fmt == "csv":
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(["path", "label", "class"] + [f"{space}{i}" for i in
                                                      range(vectors.shape[1])])
        for path, label, row in zip(paths, labels, vectors):
            name = classes[label] if label >= 0 and classes else ""
            writer.writerow([path, label if label >= 0 else "", name]
                            + [f"{v:.7g}" for v in row.tolist()])
        data = text.getvalue().encode("utf-8")
        write_atomic(out, lambda f: f.write(data))
    else:
        raise ValueError(f"embeddings export needs a .npy or .csv file name; got {out.name}")
    return fmt
