"""Exporting one encoder: check the request, write the format, describe it, verify it."""

from __future__ import annotations

import copy
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from engine.config.train_config import TrainConfig
from engine.export.formats import (
    SUFFIXES,
    ExportError,
    check_format,
    export_path,
    head_path_of,
    require_extras,
    write_encoder,
)
from engine.export.loading import head_layout, infer_architecture
from engine.export.metadata import (
    encoder_metadata,
    init_record,
    metadata_path_of,
    write_metadata,
)
from engine.export.verification import verify, verify_batch
from engine.models.encoder import Encoder


@dataclass
class ExportResult:
    path: Path
    metadata_path: Path
    format: str
    max_abs_diff: float
    tolerance: float
    verified: bool
    metadata: dict = field(repr=False)

    @property
    def load_snippet(self) -> str:
        """The script that loads this export by its absolute path (also in the metadata)."""
        return str(self.metadata["load_snippet"])


def export_encoder(encoder: Encoder, cfg: TrainConfig, fmt: str, out: Path, *,
                   include_head: bool = False, checkpoint_path: Path | None = None,
                   dataset_summary: dict | None = None, epochs_trained: int | None = None,
                   init: dict[str, Any] | None = None,
                   verify_images: torch.Tensor | None = None) -> ExportResult:
    """Write ``encoder`` (backbone, plus head with ``include_head``) to ``out`` in ``fmt``,
    with metadata beside it, then load the file back and verify it against ``encoder``.

    ``cfg`` must be resolved (no "auto" values left): its backbone, stem, image size and
    normalisation are recorded. ``verify_images`` is a float (N, 3, S, S) batch, already
    normalised; by default 4 seeded random images at ``cfg.image_size``. ``init`` says what
    the backbone started from (see :func:`engine.export.metadata.init_record`); by default
    what ``cfg.init`` names. The caller's
    encoder is not changed (a CPU fp32 copy in eval mode is exported).

    Raises :class:`MissingExtra` when the format's optional package is missing, and
    :class:`ExportError` for a bad format, name, folder, config or a failed verification.
    """
    check_format(fmt)
    path = export_path(out, fmt)
    if path.is_dir():
        raise ExportError(f"{path} is a folder; give a file name such as "
                          f"{path / ('encoder' + SUFFIXES[fmt])}")
    require_extras(fmt)
    if cfg.backbone is None or cfg.image_size is None:
        raise ExportError("the configuration still has automatic values (backbone or "
                          "image_size); export with the run's resolved config.json")
    images = verify_batch(verify_images, cfg.image_size)
    model = _eval_copy(encoder)
    arch, small_stem = infer_architecture(model.backbone.state_dict())
    if arch != cfg.backbone or small_stem != bool(cfg.small_stem):
        raise ExportError(
            f"the configuration describes {cfg.backbone} (small stem: "
            f"{bool(cfg.small_stem)}) but the encoder is {arch} (small stem: {small_stem}); "
            "pass the config of the run that trained this encoder")
    head = head_layout(model.head) if include_head else None
    _check_writable(path.parent)  # before the slow part, so a bad folder fails at once
    with torch.no_grad():
        h, z = model(images[:1])
    head_path = head_path_of(path) if fmt in ("torchvision", "safetensors") else None
    outputs = {"h": h.shape[1], **({"z": z.shape[1]} if include_head else {})}
    metadata = encoder_metadata(
        fmt, path, cfg, arch=arch, small_stem=small_stem, outputs=outputs,
        head_file=head_path.name if head_path is not None and head is not None else None,
        head=head, checkpoint_path=checkpoint_path, dataset_summary=dataset_summary,
        epochs_trained=epochs_trained, init=init if init is not None else init_record(cfg.init))
    embedded = json.dumps(metadata, sort_keys=False)  # all but the verification below

    try:
        write_encoder(fmt, model, path, head_path if include_head else None, include_head,
                      images, embedded)
        if head_path is not None and not include_head and head_path.exists():
            # This export replaces the one at ``path``; its old head would be picked up
            # by load_exported and paired with the new backbone.
            head_path.unlink()
    except OSError as exc:
        raise ExportError(f"could not write {path}: {exc.strerror or exc}; free disk space "
                          "or choose another folder") from exc

    check = verify(path, fmt, model, include_head, images, verify_images is not None)
    metadata["verification"] = check
    try:
        metadata_path = write_metadata(path, metadata)
    except OSError as exc:
        raise ExportError(f"wrote {path} but not its metadata {metadata_path_of(path)}: "
                          f"{exc.strerror or exc}; free disk space and export again") from exc
    max_diff = check["max_abs_diff"]
    limit = check["tolerance"]
    result = ExportResult(path, metadata_path, fmt,
                          float("inf") if max_diff is None else max_diff, limit,
                          check["passed"], metadata)
    if not check["passed"]:
        what = (f"could not be run back: {check['error']}" if "error" in check else
                f"gives outputs that differ from the engine's by {max_diff:.3g} "
                f"(tolerance {limit:.3g})")
        raise ExportError(
            f"the {fmt} export {path} {what}. Do not use it: it is kept only for "
            f"inspection, marked \"passed\": false in {metadata_path.name}. Please report "
            "this with the metadata file", result)
    return result


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
