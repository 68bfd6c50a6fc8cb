"""The metadata JSON written beside every export, ``<file name>.json`` (``encoder.onnx.json``).

For an encoder it says what the model expects (architecture, stem, input size,
normalisation), what it returns, where it came from (method, epochs, the weights it started
from, data, checkpoint hash),
how it was verified, and holds ``load_snippet``: a script that loads the file by its
absolute path (engine.export.loading). For embeddings it says which run, checkpoint and
space they come from, their size and classes, with a ``load_snippet`` that reads them.

The file name keeps the export's format suffix so that exports of one checkpoint in several
formats can share a folder and a stem without overwriting each other's metadata.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torchvision

from engine import __version__ as ENGINE_VERSION
from engine.config.train_config import TrainConfig
from engine.export.formats import ONNX_OPSET, ExportError
from engine.export.loading import embeddings_snippet, encoder_snippet
from engine.run.io import file_sha256, write_json_atomic

METADATA_VERSION = 1


def metadata_path_of(path: Path) -> Path:
    """The metadata JSON beside the export at ``path``."""
    return path.with_name(path.name + ".json")


def init_record(init: str, sha256: str | None = None) -> dict[str, Any]:
    """What an encoder's backbone started from, for its export's metadata: ``weights`` is
    "random", "imagenet" (torchvision's published weights) or the path of the weights file
    the run read, with that file's sha256 when known (the run's run_start event has it)."""
    record: dict[str, Any] = {"weights": init or "random"}
    if init and sha256:
        record["sha256"] = sha256
    return record


def encoder_metadata(fmt: str, path: Path, cfg: TrainConfig, *, arch: str, small_stem: bool,
                     outputs: dict[str, int], head_file: str | None,
                     head: dict[str, Any] | None, checkpoint_path: Path | None,
                     dataset_summary: dict | None,
                     epochs_trained: int | None,
                     init: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything recorded about an encoder export except its verification."""
    include_head = "z" in outputs
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
        "outputs": outputs,
        "include_head": include_head,
        "method": cfg.method,
        "epochs_trained": epochs_trained,
        "init": init if init is not None else init_record(cfg.init),
        "dataset": dataset_summary,
        "checkpoint": checkpoint_info(checkpoint_path),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "engine_version": ENGINE_VERSION,
    }
    if fmt == "onnx":
        metadata["onnx"] = {"opset": ONNX_OPSET, "input_name": "images",
                            "output_names": list(outputs),
                            "dynamic_axes": "batch (dimension 0)"}
    if head_file is not None and head is not None:
        metadata["head_file"] = head_file
        metadata["head"] = head
    metadata["load_snippet"] = encoder_snippet(fmt, path, metadata)
    return metadata


def embeddings_metadata(fmt: str, path: Path, *, source_run: Path, checkpoint: str,
                        space: str, shape: tuple[int, int], root: str | None,
                        classes: list[str]) -> dict[str, Any]:
    """What is recorded beside an embeddings export (.npy or .csv)."""
    return {"source_run": str(source_run), "checkpoint": checkpoint, "space": space,
            "images": shape[0], "dim": shape[1], "root": root, "classes": classes,
            "load_snippet": embeddings_snippet(fmt, path, space, shape)}


def write_metadata(path: Path, metadata: dict[str, Any]) -> Path:
    """Write ``metadata`` beside the export at ``path``; returns the JSON's path."""
    target = metadata_path_of(path)
    write_json_atomic(target, metadata)
    return target


def checkpoint_info(path: Path | None) -> dict[str, str] | None:
    """The checkpoint's file name and SHA-256, or None without one."""
    if path is None:
        return None
    path = Path(path)
    try:
        sha = file_sha256(path)
    except OSError as exc:
        raise ExportError(f"cannot read checkpoint {path} to record its hash: "
                          f"{exc.strerror or exc}") from exc
    return {"file": path.name, "sha256": sha}
