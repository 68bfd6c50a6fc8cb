"""Checkpoints: written atomically, read without running code from the file."""

from __future__ import annotations

import errno
import io
import pickle
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from engine.run.io import write_atomic

CHECKPOINT_VERSION = 1


class CheckpointError(Exception):
    """A checkpoint cannot be written or read; str() says why and what to do."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Serialise ``state`` to memory, then write it atomically (temporary file + rename), so
    a kill or a full disk never leaves a half-written checkpoint in place of the old one."""
    save_checkpoints([path], state)


def save_checkpoints(paths: Sequence[Path], state: dict[str, Any],
                     written: Callable[[Path], None] = lambda path: None) -> None:
    """:func:`save_checkpoint` to each of ``paths`` in order, serialising ``state`` once;
    ``written(path)`` is called after each file is in place."""
    buffer = io.BytesIO()
    torch.save({"checkpoint_version": CHECKPOINT_VERSION, **state}, buffer)
    for path in paths:
        try:
            write_atomic(Path(path), lambda f: f.write(buffer.getbuffer()))
        except OSError as exc:
            raise CheckpointError(
                f"could not write checkpoint {path}: {write_failure(exc)}. The previous "
                "checkpoint is intact; free disk space (or make the folder writable) or move "
                "the run folder to another disk, then --resume the run") from exc
        written(Path(path))


def write_failure(exc: OSError) -> str:
    """Why a write failed, in words: "the disk is full (No space left on device)"."""
    reasons = {errno.ENOSPC: "the disk is full", errno.EROFS: "the disk is read-only",
               getattr(errno, "EDQUOT", -1): "the disk quota is exceeded",
               errno.EACCES: "permission denied", errno.EPERM: "permission denied"}
    detail = exc.strerror or str(exc)
    what = reasons.get(exc.errno or 0)
    if what is None or what.lower() == detail.lower():
        return what or detail
    return f"{what} ({detail})"


def refused_as_unsafe(exc: Exception) -> bool:
    """Whether torch.load(weights_only=True) refused a file for holding Python objects
    (whose unpickling could run code), rather than for being damaged. torch's own message
    then suggests loading it unsafely, which is not advice to pass on."""
    # A refused object names the function or class it needs ("unsupported GLOBAL
    # posix.mkdir", "Unsupported global: GLOBAL exec"); garbage says "Unsupported operand".
    return isinstance(exc, pickle.UnpicklingError) and "global" in str(exc).lower()


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``: tensors and plain containers only, so
    opening a file from elsewhere never executes code from it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for damaged or foreign files
        if refused_as_unsafe(exc):
            raise CheckpointError(
                f"{path} is not a checkpoint this program will open: it holds Python objects "
                "besides tensors, and loading those could run code from the file. Only open "
                "checkpoints written by Contrastive Explorer") from exc
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


# The keys train() needs to continue a run from a checkpoint.
RESUME_KEYS = ("model", "optimizer", "scaler", "augment_rng", "torch_rng", "step", "epoch")
_NUMBERED = re.compile(r"epoch-(\d+)\.pt")


@dataclass
class ResumePoint:
    """The checkpoint a run continues from (None: there is none yet) and the checkpoint
    files passed over, each with why."""

    path: Path | None
    state: dict[str, Any] | None
    passed_over: list[str] = field(default_factory=list)


def _load_resumable(path: Path) -> dict[str, Any]:
    state = load_checkpoint(path)
    missing = [key for key in RESUME_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}, so a run cannot go on "
                              "from it")
    return state


def find_resume_point(folder: Path) -> ResumePoint:
    """The newest readable checkpoint in a run's ``checkpoints/`` folder.

    last.pt is rewritten every epoch (and every ``checkpoint_minutes`` within one) and
    epoch-NNNN.pt kept every ``keep_every`` epochs;
    train() writes the numbered file first, so a numbered file newer than last.pt means the
    process stopped between the two writes, and it is the one to continue from. A file that
    cannot be read (damaged, cut short, not a checkpoint) is passed over for the next
    newest, and named in ``passed_over``. Raises CheckpointError when checkpoint files
    exist but none can be read: a person should decide what to do then.
    """
    folder = Path(folder)
    point = ResumePoint(None, None)
    last = folder / "last.pt"
    if last.is_file():
        try:
            point.path, point.state = last, _load_resumable(last)
        except CheckpointError as exc:
            point.passed_over.append(str(exc))
    numbered = sorted(((int(m[1]), p) for p in folder.glob("epoch-*.pt")
                       if (m := _NUMBERED.fullmatch(p.name))), reverse=True)
    for epoch, path in numbered:
        if point.state is not None and epoch <= int(point.state["epoch"]):
            break  # no newer numbered checkpoint
        try:
            state = _load_resumable(path)
        except CheckpointError as exc:
            point.passed_over.append(str(exc))
            continue
        if point.state is None or int(state["step"]) > int(point.state["step"]):
            point.path, point.state = path, state
        break
    if point.state is None and point.passed_over:
        raise CheckpointError("no checkpoint in it can be read: "
                              + "; ".join(point.passed_over))
    return point


def remove_partial_writes(folder: Path) -> list[Path]:
    """Delete the temporary files that a process killed while saving a checkpoint leaves
    (``.<name>.<random>.tmp``, see engine.run.io.write_atomic); they are never a checkpoint
    and can be large. Returns the files removed."""
    removed = []
    for path in Path(folder).glob(".*.pt.*.tmp"):
        try:
            path.unlink()
            removed.append(path)
        except OSError:
            pass
    return removed
