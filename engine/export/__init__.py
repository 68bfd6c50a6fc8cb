"""Export a trained encoder in a form other code can load, checked against the engine.

Formats (:data:`FORMATS`) and the file each writes (the suffix is fixed per format, see
:func:`export_path`):

- ``torchvision`` (``.pt``): the backbone's ``state_dict`` alone, with exactly the keys of
  ``torchvision.models.<arch>()`` minus ``fc``; loads with ``weights_only=True``.
- ``torchscript`` (``.torchscript``): a traced module, any batch size; needs only torch.
  (torch 2.14 marks torch.jit deprecated in favour of torch.export; TorchScript is still
  what most C++, mobile and serving code loads, so it is offered while torch keeps it.)
- ``onnx`` (``.onnx``): opset 17, dynamic batch axis, input ``images``, outputs ``h`` (and
  ``z``); needs the ``onnx`` extra.
- ``safetensors`` (``.safetensors``): the same tensors as the torchvision format; needs the
  ``safetensors`` extra.

With ``include_head`` the traced/ONNX module returns ``(h, z)``; the two weight formats put
the projection head into a second file ``<stem>-head<suffix>`` whose keys load into a plain
``torch.nn.Sequential`` (the metadata's ``load_snippet`` builds it).

Beside every export, ``<file name>.json`` (e.g. ``encoder.onnx.json``) holds the metadata:
what the model expects (architecture, stem, input size, normalisation), what it returns,
where it came from (method, epochs, data, checkpoint hash) and how it was verified. The
file name keeps its format suffix so that exports of one checkpoint in several formats can
share a folder and a stem without overwriting each other's metadata.

Every file is serialised in memory and written atomically (temporary file + rename). After
writing, the export is loaded back from disk (:func:`load_exported`, or onnxruntime), run on
a batch of images and compared with the engine's own encoder in fp32 eval mode. If the
outputs differ by more than the tolerance, the files are kept for inspection, the metadata
says ``"passed": false`` and :class:`ExportError` is raised: a broken export is never
reported as usable.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import math
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import torch
import torchvision
from torch import nn
from torchvision import models as tvm

from engine import __version__ as ENGINE_VERSION
from engine.config.train_config import BACKBONES, TrainConfig
from engine.models.encoder import Encoder, ProjectionHead
from engine.run.checkpoint import refused_as_unsafe
from engine.run.io import write_atomic, write_json_atomic

FORMATS = ("torchvision", "torchscript", "onnx", "safetensors")
SUFFIXES = {"torchvision": ".pt", "torchscript": ".torchscript", "onnx": ".onnx",
            "safetensors": ".safetensors"}
METADATA_VERSION = 1
# Same kernels run the engine and the fp32 torch formats, so they agree almost exactly.
FP32_TOLERANCE = 1e-4
# onnxruntime runs its own convolution and GEMM kernels (other summation orders, other
# blocking), so fp32 rounding differs a little more; 1e-3 still catches any wrong weight.
ONNX_TOLERANCE = 1e-3
ONNX_OPSET = 17
VERIFY_SEED = 0
VERIFY_BATCH = 4

Outputs = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


class ExportError(Exception):
    """An export could not be written or did not verify; str() says what happened and
    what to do. ``result`` holds the :class:`ExportResult` when files were written."""

    def __init__(self, message: str, result: ExportResult | None = None) -> None:
        super().__init__(message)
        self.result = result


class MissingExtra(ExportError):
    """A format needs an optional package that is not installed."""


@dataclass
class ExportResult:
    path: Path
    metadata_path: Path
    format: str
    max_abs_diff: float
    tolerance: float
    verified: bool
    metadata: dict = field(repr=False)


# --------------------------------------------------------------------------- public API


def export_path(out: Path, fmt: str) -> Path:
    """The file an export to ``out`` writes: ``out`` when it has the format's suffix, ``out``
    with the suffix appended when it has none or an unrelated one (``encoder.v2`` ->
    ``encoder.v2.pt``). A suffix that belongs to another format (``.onnx`` for a
    TorchScript export, ``.pth``, ``.json``) is refused: it is likely a mistake."""
    _check_format(fmt)
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


def export_encoder(encoder: Encoder, cfg: TrainConfig, fmt: str, out: Path, *,
                   include_head: bool = False, checkpoint_path: Path | None = None,
                   dataset_summary: dict | None = None, epochs_trained: int | None = None,
                   verify_images: torch.Tensor | None = None) -> ExportResult:
    """Write ``encoder`` (backbone, plus head with ``include_head``) to ``out`` in ``fmt``,
    with metadata beside it, then load the file back and verify it against ``encoder``.

    ``cfg`` must be resolved (no "auto" values left): its backbone, stem, image size and
    normalisation are recorded. ``verify_images`` is a float (N, 3, S, S) batch, already
    normalised; by default 4 seeded random images at ``cfg.image_size``. The caller's
    encoder is not changed (a CPU fp32 copy in eval mode is exported).

    Raises :class:`MissingExtra` when the format's optional package is missing, and
    :class:`ExportError` for a bad format, name, folder, config or a failed verification.
    """
    _check_format(fmt)
    path = export_path(out, fmt)
    if path.is_dir():
        raise ExportError(f"{path} is a folder; give a file name such as "
                          f"{path / ('encoder' + SUFFIXES[fmt])}")
    _require_extras(fmt)
    if cfg.backbone is None or cfg.image_size is None:
        raise ExportError("the configuration still has automatic values (backbone or "
                          "image_size); export with the run's resolved config.json")
    images = _verify_batch(verify_images, cfg.image_size)
    model = _eval_copy(encoder)
    arch, small_stem = _infer_architecture(model.backbone.state_dict())
    if arch != cfg.backbone or small_stem != bool(cfg.small_stem):
        raise ExportError(
            f"the configuration describes {cfg.backbone} (small stem: "
            f"{bool(cfg.small_stem)}) but the encoder is {arch} (small stem: {small_stem}); "
            "pass the config of the run that trained this encoder")
    head_layout = _head_layout(model.head) if include_head else None
    _check_writable(path.parent)  # before the slow part, so a bad folder fails at once
    with torch.no_grad():
        h, z = model(images[:1])
    head_path = (path.with_name(f"{path.stem}-head{path.suffix}")
                 if fmt in ("torchvision", "safetensors") else None)

    metadata: dict[str, Any] = {
        "metadata_version": METADATA_VERSION,
        "format": fmt,
        "file": path.name,
        "architecture": arch,
        "small_stem": small_stem,
        "input_size": cfg.image_size,
        "channels": 3,
        "input": (f"float32 (N, 3, {cfg.image_size}, {cfg.image_size}) RGB scaled to [0, 1], "
                  "then normalised per channel: (x - mean) / std"),
        "normalization": {"mean": list(cfg.augment.normalize_mean),
                          "std": list(cfg.augment.normalize_std)},
        "outputs": {"h": h.shape[1], **({"z": z.shape[1]} if include_head else {})},
        "include_head": include_head,
        "method": cfg.method,
        "epochs_trained": epochs_trained,
        "dataset": dataset_summary,
        "checkpoint": _checkpoint_info(checkpoint_path),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "engine_version": ENGINE_VERSION,
    }
    if fmt == "onnx":
        metadata["onnx"] = {"opset": ONNX_OPSET, "input_name": "images",
                            "output_names": ["h", "z"] if include_head else ["h"],
                            "dynamic_axes": "batch (dimension 0)"}
    if head_path is not None and head_layout is not None:
        metadata["head_file"] = head_path.name
        metadata["head"] = head_layout
    metadata["load_snippet"] = _load_snippet(fmt, path.name, metadata)
    embedded = json.dumps(metadata, sort_keys=False)  # all but the verification below

    try:
        if fmt == "torchvision":
            _write_torchvision(model, path, head_path if include_head else None)
        elif fmt == "torchscript":
            _write_torchscript(model, path, include_head, images, embedded)
        elif fmt == "onnx":
            _write_onnx(model, path, include_head, images, embedded)
        else:
            _write_safetensors(model, path, head_path if include_head else None, embedded)
        if head_path is not None and not include_head and head_path.exists():
            # This export replaces the one at ``path``; its old head would be picked up
            # by load_exported and paired with the new backbone.
            head_path.unlink()
    except OSError as exc:
        raise ExportError(f"could not write {path}: {exc.strerror or exc}; free disk space "
                          "or choose another folder") from exc

    tolerance = ONNX_TOLERANCE if fmt == "onnx" else FP32_TOLERANCE
    max_diff, scale, error = _compare(path, model, include_head, images)
    limit = tolerance * scale
    passed = error is None and max_diff <= limit
    metadata["verification"] = {
        "passed": passed,
        "max_abs_diff": max_diff if error is None else None,
        "tolerance": limit,
        "tolerance_rule": (f"{tolerance:g} x max(1, largest |output| of the engine); "
                           + ("onnxruntime uses other kernels than PyTorch"
                              if fmt == "onnx" else "fp32, same kernels as PyTorch")),
        "images": (f"{images.shape[0]} caller-supplied images" if verify_images is not None
                   else f"{images.shape[0]} random normalised images (seed {VERIFY_SEED})"),
        "image_shape": list(images.shape[1:]),
        "compared": ["h", "z"] if include_head else ["h"],
        **({"error": error} if error is not None else {}),
    }
    metadata_path = path.with_name(path.name + ".json")
    try:
        write_json_atomic(metadata_path, metadata)
    except OSError as exc:
        raise ExportError(f"wrote {path} but not its metadata {metadata_path}: "
                          f"{exc.strerror or exc}; free disk space and export again") from exc
    result = ExportResult(path, metadata_path, fmt, max_diff if error is None else float("inf"),
                          limit, passed, metadata)
    if not passed:
        what = (f"could not be run back: {error}" if error is not None else
                f"gives outputs that differ from the engine's by {max_diff:.3g} "
                f"(tolerance {limit:.3g})")
        raise ExportError(
            f"the {fmt} export {path} {what}. Do not use it: it is kept only for "
            f"inspection, marked \"passed\": false in {metadata_path.name}. Please report "
            "this with the metadata file", result)
    return result


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
    fmt = _format_of(path)
    if not path.is_file():
        raise ExportError(f"no exported encoder at {path}")
    try:
        if fmt == "torchscript":
            with _quiet_torchscript():
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
    arch, small_stem = _infer_architecture(state)
    backbone = _torchvision_backbone(arch, small_stem)
    backbone.load_state_dict(state, strict=True)
    head_path = path.with_name(f"{path.stem}-head{path.suffix}")
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


# ------------------------------------------------------------------------ writing formats


def _write_torchvision(model: Encoder, path: Path, head_path: Path | None) -> None:
    _write_torch_save(path, _backbone_state(model))
    if head_path is not None:
        _write_torch_save(head_path, _head_state(model))


def _write_torch_save(path: Path, state: dict[str, torch.Tensor]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    _write_bytes(path, buffer.getbuffer())


def _write_torchscript(model: Encoder, path: Path, include_head: bool, images: torch.Tensor,
                       embedded: str) -> None:
    module: nn.Module = model if include_head else model.backbone
    # Tracing records one batch size's shapes, but a ResNet's graph has no shape-dependent
    # branches (flatten keeps dim 0 symbolic), so the trace runs at any batch size; the
    # verification below runs it at another batch size than the example's to prove it.
    example = images[:2]
    buffer = io.BytesIO()
    with _quiet_torchscript(), torch.no_grad():
        traced = torch.jit.trace(module, example, check_trace=False)
        torch.jit.save(traced, buffer, _extra_files={"contrastive_explorer.json": embedded})
    _write_bytes(path, buffer.getbuffer())


def _write_onnx(model: Encoder, path: Path, include_head: bool, images: torch.Tensor,
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
    with warnings.catch_warnings(), _quiet_torchscript(), torch.no_grad():
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
    data = proto.SerializeToString()
    _write_bytes(path, data)


def _write_safetensors(model: Encoder, path: Path, head_path: Path | None,
                       embedded: str) -> None:
    from safetensors.torch import save

    # "format": "pt" is the convention that tells loaders the tensors are PyTorch's.
    header = {"format": "pt", "contrastive_explorer": embedded}
    data = save(_backbone_state(model), metadata=header)
    _write_bytes(path, data)
    if head_path is not None:
        head = save(_head_state(model), metadata=header)
        _write_bytes(head_path, head)


def _write_bytes(path: Path, data: bytes | memoryview) -> None:
    def write(f: IO[bytes]) -> None:
        f.write(data)

    write_atomic(path, write)


def _backbone_state(model: Encoder) -> dict[str, torch.Tensor]:
    """The backbone's tensors, under torchvision's own parameter names."""
    return {k: v.detach().cpu().contiguous().clone()
            for k, v in model.backbone.state_dict().items()}


def _head_state(model: Encoder) -> dict[str, torch.Tensor]:
    """The head's tensors, keyed for a plain ``nn.Sequential`` (``0.weight``, ...)."""
    assert isinstance(model.head, ProjectionHead)
    return {k: v.detach().cpu().contiguous().clone()
            for k, v in model.head.net.state_dict().items()}


# ---------------------------------------------------------------------------- verification


def _compare(path: Path, model: Encoder, include_head: bool,
             images: torch.Tensor) -> tuple[float, float, str | None]:
    """(max |exported - engine| over h (and z), max(1, max |engine output|), error or None)."""
    with torch.no_grad():
        h, z = model(images)
        expected = [h, z] if include_head else [h]
        try:
            got = load_exported(path)(images)
        except Exception as exc:  # noqa: BLE001  # unloadable or unrunnable: a failed check
            return float("nan"), 1.0, f"{type(exc).__name__}: {exc}"
    got_list = list(got) if isinstance(got, (tuple, list)) else [got]
    if len(got_list) != len(expected) or any(
            g.shape != e.shape for g, e in zip(got_list, expected, strict=True)):
        return float("nan"), 1.0, (
            f"outputs have shapes {[tuple(g.shape) for g in got_list]}, expected "
            f"{[tuple(e.shape) for e in expected]}")
    diffs = [float((g.float() - e).abs().max()) for g, e in zip(got_list, expected, strict=True)]
    if any(math.isnan(d) for d in diffs):
        return float("nan"), 1.0, "the export produced NaN outputs"
    diff = max(diffs)
    scale = max(1.0, max(float(e.abs().max()) for e in expected))
    return diff, scale, None


def _verify_batch(images: torch.Tensor | None, size: int) -> torch.Tensor:
    if images is None:
        generator = torch.Generator().manual_seed(VERIFY_SEED)
        return torch.randn(VERIFY_BATCH, 3, size, size, generator=generator)
    if (not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3
            or not images.is_floating_point() or images.shape[0] < 1):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
        raise ExportError(
            f"verify_images must be a float (N, 3, H, W) batch of normalised images; got "
            f"{shape}{'' if not isinstance(images, torch.Tensor) else ' ' + str(images.dtype)}")
    return images.detach().to("cpu", torch.float32).contiguous()


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
        _require_extras("onnx")
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


# ------------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _quiet_torchscript() -> Iterator[None]:
    """torch 2.14 marks torch.jit.trace/save/load deprecated (FutureWarning) in favour of
    torch.export. TorchScript is still the format most C++/mobile/serving code loads, and
    it is offered on purpose, so the warning is not repeated to every user of an export."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated",
                                category=FutureWarning)
        yield


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".pth":
        return "torchvision"
    for fmt, right in SUFFIXES.items():
        if suffix == right:
            return fmt
    raise ExportError(f"cannot tell the format of {path.name}: exports end in "
                      f"{', '.join(SUFFIXES.values())}")


def _require_extras(fmt: str) -> None:
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


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".export-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ExportError(f"cannot write into {folder}: {exc.strerror or exc}; choose a "
                          "folder you can write to") from exc


def _eval_copy(encoder: Encoder) -> Encoder:
    """A CPU, fp32, contiguous, eval-mode copy, so the caller's module is left as it was."""
    encoder = getattr(encoder, "_orig_mod", encoder)  # unwrap torch.compile
    if not isinstance(encoder, Encoder):
        raise ExportError(f"expected an engine Encoder (model.online_encoder); got "
                          f"{type(encoder).__name__}")
    model = copy.deepcopy(encoder).to("cpu", torch.float32)
    return model.to(memory_format=torch.contiguous_format).eval()


def _infer_architecture(state: dict[str, torch.Tensor]) -> tuple[str, bool]:
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


def _torchvision_backbone(arch: str, small_stem: bool) -> nn.Module:
    """Exactly what the load snippet builds: torchvision's constructor, nothing of ours."""
    net = getattr(tvm, arch)(weights=None)
    if small_stem:
        net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net


def _head_layout(head: nn.Module) -> dict[str, Any]:
    if not isinstance(head, ProjectionHead):
        raise ExportError(f"cannot export a head of type {type(head).__name__}; only the "
                          "engine's ProjectionHead")
    return _head_layout_from_state(head.net.state_dict())


def _head_layout_from_state(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    first = state["0.weight"]  # (hidden, in)
    batch_norm = "1.running_mean" in state
    last = state["3.weight" if batch_norm else "2.weight"]  # (out, hidden)
    return {"in_dim": first.shape[1], "hidden_dim": first.shape[0], "out_dim": last.shape[0],
            "batch_norm": batch_norm}


def _head_sequential(in_dim: int, hidden_dim: int, out_dim: int, batch_norm: bool) -> nn.Module:
    """The projection head as a plain Sequential with the same indices as ProjectionHead."""
    layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(hidden_dim))
    layers += [nn.ReLU(), nn.Linear(hidden_dim, out_dim)]
    return nn.Sequential(*layers)


def _read_weights(path: Path, fmt: str) -> dict[str, torch.Tensor]:
    try:
        if fmt == "safetensors":
            _require_extras("safetensors")
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


def _checkpoint_info(path: Path | None) -> dict[str, str] | None:
    if path is None:
        return None
    path = Path(path)
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise ExportError(f"cannot read checkpoint {path} to record its hash: "
                          f"{exc.strerror or exc}") from exc
    return {"file": path.name, "sha256": digest.hexdigest()}


def _load_snippet(fmt: str, name: str, meta: dict[str, Any]) -> str:
    """Ready-to-paste Python that loads the export with nothing of this project installed."""
    size, norm = meta["input_size"], meta["normalization"]
    shape = f"(N, 3, {size}, {size})"
    usage = (f"# x: float32 {shape}, RGB in [0, 1] normalised with\n"
             f"#    mean={norm['mean']} std={norm['std']}\n")
    dims = ", ".join(f"{k}: (N, {v})" for k, v in meta["outputs"].items())
    if fmt == "torchscript":
        return ("import torch\n"
                f"model = torch.jit.load({name!r}, map_location='cpu').eval()\n"
                + usage + ("h, z" if meta["include_head"] else "h") + f" = model(x)  # {dims}\n")
    if fmt == "onnx":
        call = "session.run({}, {{'images': x}})".format(meta["onnx"]["output_names"])
        return ("import onnxruntime as ort\n"
                f"session = ort.InferenceSession({name!r}, providers=['CPUExecutionProvider'])\n"
                + usage.replace("float32", "numpy float32")
                + (f"h, z = {call}" if meta["include_head"] else f"h = {call}[0]")
                + f"  # {dims}\n")
    loader = ("from safetensors.torch import load_file\n" if fmt == "safetensors" else "")
    read = ("load_file({!r})" if fmt == "safetensors"
            else "torch.load({!r}, map_location='cpu', weights_only=True)")
    lines = ["import torch", "import torchvision", "from torch import nn"]
    if loader:
        lines.append(loader.rstrip())
    lines += [f"model = torchvision.models.{meta['architecture']}()",
              "model.fc = nn.Identity()"]
    if meta["small_stem"]:
        lines += ["# small-image stem (3x3 convolution, no max-pool), as trained",
                  "model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)",
                  "model.maxpool = nn.Identity()"]
    lines += [f"model.load_state_dict({read.format(name)}, strict=True)", "model.eval()"]
    if "head" in meta:
        head = meta["head"]
        linear = (f"nn.Linear({head['in_dim']}, {head['hidden_dim']}, "
                  f"bias={not head['batch_norm']})")
        layers = [linear]
        if head["batch_norm"]:
            layers.append(f"nn.BatchNorm1d({head['hidden_dim']})")
        layers += ["nn.ReLU()", f"nn.Linear({head['hidden_dim']}, {head['out_dim']})"]
        lines += ["head = nn.Sequential(" + ", ".join(layers) + ")",
                  f"head.load_state_dict({read.format(meta['head_file'])}, strict=True)",
                  "head.eval()"]
    text = "\n".join(lines) + "\n" + usage
    text += f"h = model(x)  # h: (N, {meta['outputs']['h']})\n"
    if "head" in meta:
        text += f"z = head(h)  # z: (N, {meta['head']['out_dim']})\n"
    return text
