"""Checkpoints: written atomically, read without running code from the file."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from engine.io import write_atomic

CHECKPOINT_VERSION = 1


class CheckpointError(Exception):
    """A checkpoint cannot be written or read; str() says why and what to do."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Serialise ``state`` to memory, then write it atomically (temporary file + rename), so
    a kill or a full disk never leaves a half-written checkpoint in place of the old one."""
    buffer = io.BytesIO()
    torch.save({"checkpoint_version": CHECKPOINT_VERSION, **state}, buffer)
    try:
        write_atomic(Path(path), lambda f: f.write(buffer.getbuffer()))
    except OSError as exc:
        raise CheckpointError(
            f"could not write checkpoint {path}: {exc.strerror or exc}. The previous "
            "checkpoint is intact; free disk space or choose another --runs-root, then "
            "--resume the run") from exc


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``: tensors and plain containers only, so
    opening a file from elsewhere never executes code from it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for damaged or foreign files
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); it may be damaged "
            "or from another program") from exc
    if not isinstance(state, dict) or "checkpoint_version" not in state:
        raise CheckpointError(f"{path} is not a Contrastive Explorer checkpoint")
    if state["checkpoint_version"] > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path} was written by a newer version (checkpoint format "
            f"{state['checkpoint_version']}); update Contrastive Explorer to open it")
    return state
