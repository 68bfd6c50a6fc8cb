"""Checkpoints during training: what is saved, when, and restoring it on --resume.

The contents are engine.run.checkpoint.TrainingState; rank 0 alone writes them (the model is
the same in every process).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from engine.config.resolve import RunSettings
from engine.run.checkpoint import TrainingState, save_checkpoints
from engine.run.events import EventWriter
from engine.run.layout import RunDir


@dataclass
class Resumable:
    """The objects whose state a checkpoint saves and --resume restores."""

    model: nn.Module  # the method module: never its DDP or torch.compile wrapper
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    augment_rng: torch.Generator
    device: torch.device

    def state(self, *, step: int, epoch: int, steps_per_epoch: int, settings: RunSettings,
              world_size: int) -> TrainingState:
        cuda = self.device.type == "cuda"
        return TrainingState(
            model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
            scaler=self.scaler.state_dict(), augment_rng=self.augment_rng.get_state(),
            torch_rng=torch.get_rng_state(),
            cuda_rng=torch.cuda.get_rng_state(self.device) if cuda else None,
            step=step, epoch=epoch, steps_per_epoch=steps_per_epoch,
            config=settings.to_dict(), method=settings.method, backbone=settings.backbone,
            world_size=world_size)

    def restore(self, state: TrainingState) -> int:
        """Load ``state`` into the objects and the random generators; the step to go on
        from. Raises what load_state_dict raises when it does not fit (KeyError,
        RuntimeError, TypeError, ValueError)."""
        self.model.load_state_dict(state.model)
        self.optimizer.load_state_dict(state.optimizer)
        self.scaler.load_state_dict(state.scaler)
        self.augment_rng.set_state(state.augment_rng)
        torch.set_rng_state(state.torch_rng)
        if self.device.type == "cuda" and state.cuda_rng is not None:
            torch.cuda.set_rng_state(state.cuda_rng, self.device)
        return int(state.step)


class Checkpointer:
    """Writes the run's checkpoints (on rank 0; a no-op in the other processes) and says
    when a mid-epoch one is due."""

    def __init__(self, folder: RunDir, events: EventWriter, parts: Resumable, *,
                 settings: RunSettings, steps_per_epoch: int, world_size: int,
                 writes: bool) -> None:
        self.folder, self.events, self.parts = folder, events, parts
        self.settings, self.steps_per_epoch = settings, steps_per_epoch
        self.world_size, self.writes = world_size, writes
        self.saved_at = time.monotonic()  # when the last checkpoint was written

    def save(self, step: int, epoch: int, *, keep: bool) -> None:
        """last.pt, and epoch-NNNN.pt too when ``keep``."""
        if not self.writes:
            return
        state = self.parts.state(step=step, epoch=epoch, steps_per_epoch=self.steps_per_epoch,
                                 settings=self.settings, world_size=self.world_size)
        # The numbered file first: a process killed between the two writes leaves it
        # newer than last.pt, and --resume continues from it (find_resume_point), so no
        # kept checkpoint is ever skipped.
        paths = [self.folder.epoch_checkpoint(epoch)] if keep else []
        save_checkpoints(paths + [self.folder.last_checkpoint], state.to_dict(),
                         written=lambda path: self.events.emit("checkpoint", path=str(path),
                                                               epoch=epoch, step=step))
        self.saved_at = time.monotonic()

    def due(self) -> bool:
        """Whether checkpoint_minutes have passed since the last checkpoint (rank 0)."""
        minutes = self.settings.checkpoint_minutes
        return (minutes > 0 and self.writes
                and time.monotonic() - self.saved_at >= 60 * minutes)
