"""What train() does before its first step: the settings of a resumed run, the run folder,
and the messages it gives when a run cannot start or go on."""

from __future__ import annotations

import dataclasses
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from engine.config.locations import default_runs_root
from engine.config.resolve import DeviceInfo, RunSettings, default_backbone
from engine.config.settings import ConfigError
from engine.config.train_config import TrainConfig, load_config_file
from engine.data.cache import ImageCache
from engine.data.scan import LIST_SUFFIXES, Manifest
from engine.models.init_weights import InitWeights, check_fits, read_init
from engine.run.checkpoint import (
    CheckpointError,
    find_resume_point,
    remove_partial_writes,
    write_failure,
)
from engine.run.events import EventWriter
from engine.run.layout import RunDir
from engine.training import distributed

#: The settings that --resume may change; the others are the run's own.
RESUMABLE_OVERRIDES = ("epochs", "max_steps", "log_every", "keep_every",
                       "checkpoint_minutes", "device",
                       "num_threads", "compile", "knn_every", "knn_max_images",
                       "live_map")


class TrainingError(Exception):
    """The run could not go on; str() says why and what to do."""


#: Where log() lines go instead of stderr while a terminal report owns the terminal (see
#: :func:`log_to`): called with the line and whether it is a notice.
_sink: list[Callable[[str, bool], None]] = []


def log(message: str, *, notice: bool = False) -> None:
    """Human-readable progress goes to stderr; stdout carries only events.

    ``notice``: the line says something that no event carries (most lines repeat an
    event for whoever reads stderr), so a terminal report (:func:`log_to`) shows it too.
    If whoever reads stderr has gone (the window closed), training goes on regardless.
    With several processes (torchrun) only rank 0 logs.
    """
    if distributed.env_rank() != 0:
        return
    if _sink:
        _sink[-1](message, notice)
        return
    try:
        print(message, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


@contextmanager
def log_to(sink: Callable[[str, bool], None]) -> Iterator[None]:
    """Send log() lines to ``sink(message, notice)`` instead of stderr within the block:
    the CLI's terminal report draws a progress line there and shows the notices above it."""
    _sink.append(sink)
    try:
        yield
    finally:
        _sink.remove(sink)


def progress_events(events: EventWriter, phase: str) -> Callable[[int, int, str], None]:
    """A progress callback that emits at most two events a second."""
    last = [0.0]

    def report(done: int, total: int, message: str) -> None:
        now = time.monotonic()
        if done == total or now - last[0] > 0.5:
            last[0] = now
            events.emit("progress", phase=phase, done=done, total=total, message=message)
    return report


def new_run_dir(runs_root: Path, cfg: TrainConfig) -> Path:
    """<runs root>/<yyyymmdd-hhmmss>-<method>-<dataset>, made unique with a suffix (the
    dataset: the folder's name, or a list file's name without its .txt/.csv)."""
    source = Path(cfg.data)
    name = source.stem if source.suffix.lower() in LIST_SUFFIXES else source.name
    dataset = re.sub(r"[^A-Za-z0-9_.-]+", "_", name or "data")[:40]
    base = f"{datetime.now():%Y%m%d-%H%M%S}-{cfg.method}-{dataset}"
    runs_root.mkdir(parents=True, exist_ok=True)
    for i in range(1000):
        path = runs_root / (base if i == 0 else f"{base}-{i + 1}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise TrainingError(f"could not create a new run folder in {runs_root}")


def resume_settings(folder: RunDir, overrides: dict[str, object] | None, events: EventWriter
                    ) -> tuple[TrainConfig, dict | None, Path | None]:
    """The settings and the newest good checkpoint of the run in ``folder`` (state None
    when the run stopped before its first checkpoint), with warnings for what was passed
    over: damaged checkpoints, or a damaged config.json (the checkpoint holds the
    settings too)."""
    if not folder.config.is_file() and not folder.has_checkpoint():
        raise TrainingError(f"{folder} is not a run folder (no config.json); give the "
                            "folder that `train` created")
    removed = remove_partial_writes(folder)
    if removed:
        log(f"removed {len(removed)} half-written checkpoint file(s) left by an interrupted "
            "save", notice=True)
    try:
        point = find_resume_point(folder)
    except CheckpointError as exc:
        raise TrainingError(
            f"cannot resume {folder}: {exc}. Move the damaged files out of {folder.checkpoints} to "
            "train this run again from step 0, or start a new run with --config "
            f"{folder.config}") from None
    for problem in point.passed_over:
        events.emit("warning", message=f"{problem}; continuing from "
                    f"{point.path.name if point.path else 'step 0'} instead")
    try:
        saved = load_config_file(folder.config)
    except ConfigError as exc:
        kept = point.state.get("config") if point.state else None
        if not isinstance(kept, dict):
            raise TrainingError(f"cannot resume {folder}: {exc}. Restore config.json, or "
                                "start a new run") from None
        assert point.path is not None
        saved = dict(kept)
        events.emit("warning", message=f"{exc}; using the settings saved in "
                    f"{point.path.name} (config.json is written again)")
    overrides = dict(overrides or {})
    refused = sorted(set(overrides) - set(RESUMABLE_OVERRIDES))
    if refused:
        raise ConfigError(
            f"cannot change {', '.join(refused)} when resuming (only "
            f"{', '.join(RESUMABLE_OVERRIDES)}); start a new run instead")
    # Runs from before the view_passes setting encoded both views in one pass: they go on so.
    saved.setdefault("view_passes", "one")
    if "device" in overrides:  # precision and memory format follow the new device
        saved.update(precision=None, channels_last=None)
    saved.update(overrides)
    cfg = TrainConfig.from_dict(saved, where=str(folder.config))
    if point.state is None:
        events.emit("warning", message="no checkpoint yet (the run ended before its first "
                    "epoch did): training again from step 0")
    return cfg, point.state, point.path


def create_run_folder(run_dir: Path | None, runs_root: Path | None, settings: RunSettings,
                      manifest: Manifest, events: EventWriter) -> RunDir:
    """The run folder with its checkpoints folder, config.json and manifest.json, the
    events file attached to ``events``: ``run_dir``, or a new folder under ``runs_root``."""
    try:
        if run_dir is None:
            run_dir = new_run_dir(Path(runs_root) if runs_root else default_runs_root(),
                                  settings.config)
        folder = RunDir(run_dir)
        folder.checkpoints.mkdir(parents=True, exist_ok=True)
        events.attach(folder.events)
        settings.config.save(folder.config)
        manifest.save(folder.manifest)
    except OSError as exc:
        where = exc.filename or run_dir or runs_root or default_runs_root()
        raise TrainingError(
            f"cannot write the run folder ({where}): {write_failure(exc)}. Free some space "
            "or choose a writable --runs-root (or --run-dir)") from None
    return folder


@dataclass
class SetUp:
    """What rank 0 (or a single process) found and made before training: the resolved
    settings, the checkpoint to go on from, the run folder, the data and the device."""

    settings: RunSettings
    why: dict[str, str]
    state: dict[str, Any] | None
    state_path: Path | None
    folder: RunDir
    scanned: Manifest  # as scanned, before decoding: others open the cache with it
    cache: ImageCache | None
    device: torch.device | None
    device_info: DeviceInfo | None
    #: The --init weights read for a run that starts from step 0 (None: random init, or
    #: the checkpoint's weights on a resume).
    init: InitWeights | None = None

    def shared(self) -> SetUp:
        """The part sent to the other processes (the cache and device are their own; the
        init weights reach them from rank 0 when DistributedDataParallel wraps the model,
        which copies rank 0's parameters and buffers to every process)."""
        return dataclasses.replace(self, cache=None, device=None, device_info=None,
                                   init=None)


def read_init_weights(cfg: TrainConfig, device_info: DeviceInfo
                      ) -> tuple[TrainConfig, InitWeights | None]:
    """The weights ``cfg.init`` names, checked against the run's backbone and stem (those
    set, or those the file implies when auto), with ``init`` made an absolute path; before
    anything is scanned, decoded or written, so a missing file or an offline "imagenet"
    stops the run at once."""
    if not cfg.init:
        return cfg, None
    backbone = cfg.backbone or default_backbone(device_info)[0]
    weights = read_init(cfg.init, backbone=backbone)
    check_fits(weights, cfg.backbone or weights.arch,
               weights.small_stem if cfg.small_stem is None else cfg.small_stem)
    return dataclasses.replace(cfg, init=weights.source), weights


def out_of_memory(settings: RunSettings, what: str, folder: RunDir) -> str:
    """Why the run ended out of ``what`` ("GPU memory"), and what to change."""
    smaller = max(2, settings.batch_size // 2)
    lower_precision = " or --precision bf16" if settings.precision == "fp32" else ""
    kept = ("the last checkpoint is kept" if folder.has_checkpoint()
            else "no checkpoint had been saved yet")
    return (f"out of {what} at batch size {settings.batch_size} and {settings.image_size} px: "
            f"start a new run with a smaller batch size (e.g. --batch-size {smaller}) or a "
            f"smaller --image-size{lower_precision}; {kept}")
