"""What train() reports: the run_start event, the figures of each step and epoch, and the
one warning of a collapse (:class:`CollapseWatch`).

Reading a figure off the device is a sync, so on a GPU the step's tensors are read only at
the logging interval and at the end of an epoch; on the CPU it costs nothing, and every step
is checked for a non-finite loss.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from engine.config.resolve import DeviceInfo, RunSettings
from engine.data.cache import ImageCache
from engine.data.loader import BatchLoader
from engine.methods.base import COLLAPSE_SPREAD, StepOutput
from engine.run.events import EventWriter
from engine.run.layout import RunDir
from engine.training.distributed import DistContext
from engine.training.setup import log


def announce(events: EventWriter, folder: RunDir, settings: RunSettings, *, resumed: bool,
             why: dict[str, str], device_info: DeviceInfo, ctx: DistContext,
             loader: BatchLoader, cache: ImageCache, total_steps: int, start_step: int,
             peak_lr: float) -> None:
    """The run_start event, and its line on stderr."""
    manifest = cache.manifest
    events.emit(
        "run_start", run_dir=str(folder), resumed=resumed, config=settings.to_dict(),
        auto=why, device=device_info.to_dict(), steps_per_epoch=loader.steps_per_epoch,
        total_steps=total_steps, start_step=start_step, peak_lr=peak_lr,
        world_size=ctx.world_size, per_process_batch=loader.local_batch_size,
        nodes=ctx.nodes,
        dataset={"root": manifest.root, "images": len(manifest.images),
                 "classes": manifest.classes,
                 "class_counts": [int((cache.labels == i).sum())
                                  for i in range(len(manifest.classes))],
                 "skipped": len(manifest.skipped), "summary": manifest.summary()})
    processes = (f" ({ctx.world_size} processes on {ctx.nodes} machine(s), "
                 f"{loader.local_batch_size} each)" if ctx.enabled else "")
    log(f"run {folder}: {settings.method} {settings.backbone} {settings.image_size}px batch "
        f"{settings.batch_size}{processes} on {device_info.name}; {manifest.summary()}")


#: Steps after the (re)start that are logged whatever log_every says, so the curves have
#: points within seconds rather than after the first log_every steps.
EARLY_STEPS = (1, 2, 5)


def log_due(step: int, start_step: int, log_every: int) -> bool:
    """Whether ``step`` gets a step event: the first few steps after the start (or resume),
    then every ``log_every`` steps."""
    return step % log_every == 0 or (step - start_step) in EARLY_STEPS


class CollapseWatch:
    """One "warning" event the first time a logged embedding spread falls below
    COLLAPSE_SPREAD (every image mapped to nearly one point), saying what to change."""

    def __init__(self, events: EventWriter) -> None:
        self.events = events
        self.warned = False

    def check(self, spread: float, step: int) -> None:
        if self.warned or not spread < COLLAPSE_SPREAD:  # (a NaN spread is not a collapse)
            return
        self.warned = True
        self.events.emit("warning", message=(
            f"the embeddings are collapsing: their spread (embedding_std) is {spread:.3f} "
            f"at step {step}, below {COLLAPSE_SPREAD}, so every image is mapped to nearly "
            "the same point. Lower --lr, lengthen --warmup-epochs or raise --batch-size; "
            "with a momentum network check --target-momentum (BYOL) or --moco-momentum "
            "(MoCo); on a small folder SimCLR (--method simclr) is the more robust choice"))


class StepMeter:
    """Sums of the steps since the last step event (pairs, for the rate) and since the start
    of the epoch (the loss, on the device).

    Time spent in :meth:`paused` (the kNN evaluation, checkpoints) is left out of the rate,
    so pairs per second measures training alone and does not dip at each epoch's end."""

    def __init__(self, device: torch.device, batch_size: int) -> None:
        self.batch_size = batch_size
        self.read_every_step = device.type == "cpu"  # a sync costs nothing there
        self.window_start, self.window_pairs = time.perf_counter(), 0
        self.epoch_start = time.perf_counter()
        self.epoch_loss = torch.zeros((), device=device)
        self.epoch_steps = 0

    def add(self, out: StepOutput) -> None:
        self.epoch_steps += 1
        self.window_pairs += self.batch_size
        self.epoch_loss += out.loss.detach()

    @staticmethod
    def read(out: StepOutput, ctx: DistContext) -> tuple[float, float, float]:
        """(loss, positive-pair similarity, embedding spread): means over the processes (the
        same values in every process, so all decide alike). A device sync."""
        loss, similarity, spread = ctx.mean(torch.stack([
            out.loss.detach().float(), out.positive_pair_similarity.float(),
            out.embedding_std.float()])).tolist()
        return loss, similarity, spread

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Work inside this block (evaluation, checkpointing) does not count in the rate."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.window_start += time.perf_counter() - start

    def pairs_per_s(self) -> float:
        """Image pairs a second since the last call (or the start), for a step event."""
        now = time.perf_counter()
        rate = self.window_pairs / max(now - self.window_start, 1e-9)
        self.window_start, self.window_pairs = now, 0
        return rate

    def epoch_mean(self, ctx: DistContext) -> tuple[float, float]:
        """The epoch's mean loss over the processes (a device sync), and its seconds."""
        mean_loss = ctx.mean(self.epoch_loss / max(self.epoch_steps, 1)).item()
        return mean_loss, time.perf_counter() - self.epoch_start

    def start_epoch(self) -> None:
        self.epoch_loss.zero_()
        self.epoch_steps = 0
        self.epoch_start = time.perf_counter()
