"""Checkpoints: written atomically, read without running code from the file."""

from __future__ import annotations

import errno
import io
import pickle
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import torch

from engine.run.io import write_atomic
from engine.run.layout import CHECKPOINT_SUFFIX, RunDir

CHECKPOINT_VERSION = 1


@dataclass(kw_only=True)
class TrainingState:
    """What a checkpoint holds, besides its ``checkpoint_version``: everything train()
    needs to go on exactly where it stopped, and what the run was. The one definition of
    a checkpoint's keys (its fields, in the order written): the loop writes one, --resume
    reads one back, evaluation and export read :attr:`MODEL_KEYS` of one.

    The fields without a default are required to resume (:data:`RESUME_KEYS`); the others
    are absent from some older checkpoints.
    """

    model: dict[str, torch.Tensor]  # the method module's state_dict (no DDP/compile wrapper)
    optimizer: dict[str, Any]
    scaler: dict[str, Any]  # torch.amp.GradScaler
    augment_rng: torch.Tensor  # the augmentation generator's state
    torch_rng: torch.Tensor
    cuda_rng: torch.Tensor | None = None  # None when trained on the CPU
    step: int  # optimiser steps done
    epoch: int  # the epoch this checkpoint closes (or is in, mid-epoch)
    steps_per_epoch: int | None = None
    config: dict[str, Any] | None = None  # TrainConfig.to_dict(), as in config.json
    method: str | None = None
    backbone: str | None = None
    world_size: int | None = None  # for information: any number of processes can resume

    #: What evaluation and export read: the weights and how far they were trained.
    MODEL_KEYS: ClassVar[tuple[str, ...]] = ("model", "step", "epoch")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any], *, where: Path | str = "the checkpoint"
                  ) -> TrainingState:
        """The state of a loaded checkpoint; CheckpointError when it lacks a key needed to
        resume. Keys this version does not know are ignored."""
        missing = missing_keys(state, RESUME_KEYS)
        if missing:
            raise CheckpointError(f"{where} lacks {', '.join(missing)}, so a run cannot go "
                                  "on from it")
        return cls(**{f.name: state[f.name] for f in fields(cls) if f.name in state})


#: The keys train() needs to continue a run from a checkpoint.
RESUME_KEYS = tuple(f.name for f in fields(TrainingState)
                    if f.default is MISSING and f.default_factory is MISSING)


def model_weights(state: Mapping[str, Any], *, where: Path | str = "the checkpoint"
                  ) -> tuple[dict[str, torch.Tensor], int, int]:
    """The method module's weights in a loaded checkpoint, with the step and epoch they
    were saved at (:attr:`TrainingState.MODEL_KEYS`: all that evaluation and export read)."""
    missing = missing_keys(state, TrainingState.MODEL_KEYS)
    if missing:
        raise CheckpointError(f"{where} lacks {', '.join(missing)}: it holds no trained model")
    return state["model"], int(state["step"]), int(state["epoch"])


def missing_keys(state: Mapping[str, Any], keys: Sequence[str]) -> list[str]:
    """Those of ``keys`` that the loaded checkpoint ``state`` lacks."""
    return [key for key in keys if key not in state]


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


@dataclass
class ResumePoint:
    """The checkpoint a run continues from (None: there is none yet) and the checkpoint
    files passed over, each with why."""

    path: Path | None
    state: dict[str, Any] | None
    passed_over: list[str] = field(default_factory=list)


def _load_resumable(path: Path) -> dict[str, Any]:
    state = load_checkpoint(path)
    TrainingState.from_dict(state, where=path)  # raises when a key to resume is missing
    return state


def _run_of(folder: Path | RunDir) -> RunDir:
    """The run whose checkpoints folder is ``folder`` (or the run ``folder`` itself)."""
    if isinstance(folder, RunDir):
        return folder
    run = RunDir(Path(folder).parent)
    if run.checkpoints != Path(folder):
        raise ValueError(f"{folder} is not a run's checkpoints folder")
    return run


def find_resume_point(folder: Path | RunDir) -> ResumePoint:
    """The newest readable checkpoint in a run's ``checkpoints/`` folder (or of a RunDir).

    last.pt is rewritten every epoch (and every ``checkpoint_minutes`` within one) and
    epoch-NNNN.pt kept every ``keep_every`` epochs;
    train() writes the numbered file first, so a numbered file newer than last.pt means the
    process stopped between the two writes, and it is the one to continue from. A file that
    cannot be read (damaged, cut short, not a checkpoint) is passed over for the next
    newest, and named in ``passed_over``. Raises CheckpointError when checkpoint files
    exist but none can be read: a person should decide what to do then.
    """
    run = _run_of(folder)
    point = ResumePoint(None, None)
    last = run.last_checkpoint
    if last.is_file():
        try:
            point.path, point.state = last, _load_resumable(last)
        except CheckpointError as exc:
            point.passed_over.append(str(exc))
    for epoch, path in reversed(run.numbered_checkpoints()):
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


def remove_partial_writes(folder: Path | RunDir) -> list[Path]:
    """Delete the temporary files that a process killed while saving a checkpoint leaves
    (``.<name>.<random>.tmp``, see engine.run.io.write_atomic); they are never a checkpoint
    and can be large. Returns the files removed."""
    removed = []
    for path in _run_of(folder).checkpoints.glob(f".*{CHECKPOINT_SUFFIX}.*.tmp"):
        try:
            path.unlink()
            removed.append(path)
        except OSError:
            pass
    return removed
