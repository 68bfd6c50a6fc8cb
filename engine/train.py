"""The training loop: one flat function you can read top to bottom.

It reports through an :class:`~engine.events.EventWriter` and checks ``should_stop()``
between steps; it knows nothing about any GUI.
"""

from __future__ import annotations

import contextlib
import math
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch

from engine.augment import make_pairs
from engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from engine.config import TrainConfig, load_config_file
from engine.data.cache import build_cache
from engine.data.loader import BatchLoader, typical_side
from engine.data.scan import DataError, scan_folder
from engine.evaluate.monitor import KnnMonitor
from engine.events import EventWriter
from engine.methods import MoCo, SimCLR, key_encoder_momentum
from engine.models import Encoder, ProjectionHead, build_backbone, feature_dim
from engine.optim import build_optimizer, lr_at, scaled_lr
from engine.paths import default_runs_root, user_cache_dir
from engine.resolve import resolve_config, resolve_device
from engine.settings import ConfigError

RESUMABLE_OVERRIDES = ("epochs", "max_steps", "log_every", "keep_every", "device",
                       "num_threads", "compile", "knn_every", "knn_max_images")


class TrainingError(Exception):
    """The run could not go on; str() says why and what to do."""


@dataclass
class RunResult:
    run_dir: Path | None
    status: str  # finished | stopped | failed
    reason: str
    step: int
    epoch: int


def log(message: str) -> None:
    """Human-readable progress goes to stderr; stdout carries only events.

    If whoever reads stderr has gone (the window closed), training goes on regardless.
    """
    try:
        print(message, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def build_model(cfg: TrainConfig) -> SimCLR | MoCo:
    """The one place that reads the configuration to construct a method module."""
    assert cfg.backbone is not None and cfg.proj_hidden_dim is not None
    backbone = build_backbone(cfg.backbone, small_stem=bool(cfg.small_stem))
    head = ProjectionHead(feature_dim(cfg.backbone), cfg.proj_hidden_dim, cfg.proj_out_dim,
                          batch_norm=bool(cfg.head_batch_norm))
    encoder = Encoder(backbone, head)
    assert cfg.temperature is not None
    if cfg.method == "simclr":
        return SimCLR(encoder, temperature=cfg.temperature)
    return MoCo(encoder, dim=cfg.proj_out_dim, queue_size=cfg.queue_size,
                momentum=cfg.moco_momentum, temperature=cfg.temperature)


def new_run_dir(runs_root: Path, cfg: TrainConfig) -> Path:
    """<runs root>/<yyyymmdd-hhmmss>-<method>-<dataset>, made unique with a suffix."""
    dataset = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(cfg.data).name or "data")[:40]
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


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _progress(events: EventWriter, phase: str) -> Callable[[int, int, str], None]:
    """A progress callback that emits at most two events a second."""
    last = [0.0]

    def report(done: int, total: int, message: str) -> None:
        now = time.monotonic()
        if done == total or now - last[0] > 0.5:
            last[0] = now
            events.emit("progress", phase=phase, done=done, total=total, message=message)
    return report


def train(
    cfg: TrainConfig,
    *,
    runs_root: Path | None = None,
    run_dir: Path | None = None,
    resume: Path | None = None,
    cache_dir: Path | None = None,
    events: EventWriter | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    resume_overrides: dict[str, object] | None = None,
) -> RunResult:
    """Train ``cfg`` (or continue the run in ``resume``) and return how it ended.

    When resuming, the run's own config.json is used; ``resume_overrides`` may change the
    settings in RESUMABLE_OVERRIDES (for example more epochs), and no others.

    Raises ConfigError, DataError or TrainingError for problems found before the first
    step; problems after it end the run with a ``run_end`` event of status "failed".
    """
    events = events or EventWriter()
    cache_dir = Path(cache_dir) if cache_dir else user_cache_dir()
    state = None
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "config.json").is_file():
            raise TrainingError(f"{run_dir} is not a run folder (no config.json); give the "
                                "folder that `train` created")
        saved = load_config_file(run_dir / "config.json")
        overrides = dict(resume_overrides or {})
        refused = sorted(set(overrides) - set(RESUMABLE_OVERRIDES))
        if refused:
            raise ConfigError(
                f"cannot change {', '.join(refused)} when resuming (only "
                f"{', '.join(RESUMABLE_OVERRIDES)}); start a new run instead")
        if "device" in overrides:  # precision and memory format follow the new device
            saved.update(precision=None, channels_last=None)
        saved.update(overrides)
        cfg = TrainConfig.from_dict(saved, where=str(run_dir / "config.json"))
        try:
            state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
        except CheckpointError as exc:
            raise TrainingError(f"cannot resume {run_dir}: {exc}") from None

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device, device_info = resolve_device(cfg.device)

    manifest = scan_folder(cfg.data, progress=_progress(events, "scan"))
    if not manifest.images:
        found = f" ({len(manifest.skipped)} unusable file(s) skipped)" if manifest.skipped else ""
        raise DataError(
            f"no usable images in {cfg.data}{found}. Point --data at a folder of JPEG, PNG, "
            "BMP, WebP, TIFF or GIF images (class sub-folders give labels)")
    cfg, why = resolve_config(cfg, device_info, typical_side=typical_side(manifest),
                              num_images=None)
    assert cfg.cache_size is not None
    cache = build_cache(manifest, cfg.cache_size, cache_dir,
                        max_image_pixels=cfg.max_image_pixels,
                        progress=_progress(events, "decode"))
    manifest = cache.manifest
    cfg, why_more = resolve_config(cfg, device_info, typical_side=None,
                                   num_images=len(cache.labels))
    why.update(why_more)
    assert cfg.batch_size and cfg.image_size and cfg.optimizer and cfg.lr is not None

    if run_dir is None:
        run_dir = new_run_dir(Path(runs_root) if runs_root else default_runs_root(), cfg)
    run_dir = Path(run_dir)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    events.attach(run_dir / "events.jsonl")
    cfg.save(run_dir / "config.json")
    manifest.save(run_dir / "manifest.json")
    if manifest.skipped:
        events.emit("warning", message=f"{len(manifest.skipped)} file(s) skipped; see "
                                       f"manifest.json. {manifest.summary()}")
    if "queue_size" in why and why["queue_size"].startswith("reduced"):
        events.emit("warning", message="queue_size " + why["queue_size"])

    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    peak_lr = scaled_lr(cfg.lr, cfg.batch_size, cfg.lr_scaling or "linear")
    optimizer = build_optimizer(model, cfg.optimizer, peak_lr, cfg.weight_decay or 0.0,
                                cfg.sgd_momentum, fused=device.type == "cuda")
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    aug_gen = torch.Generator().manual_seed(cfg.seed)
    loader = BatchLoader(cache, cfg.batch_size, seed=cfg.seed, device=device)
    knn_monitor = KnnMonitor.for_run(cache, cfg, device)
    if knn_monitor is not None and knn_monitor.sampled:
        log(f"kNN accuracy per epoch on a fixed sample of {len(knn_monitor.indices)} images")
    steps_per_epoch = loader.steps_per_epoch
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    warmup_steps = int(round((cfg.warmup_epochs or 0.0) * steps_per_epoch))
    warmup_steps = min(warmup_steps, total_steps)

    step = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        aug_gen.set_state(state["augment_rng"])
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        step = int(state["step"])
        if int(state.get("steps_per_epoch", steps_per_epoch)) != steps_per_epoch:
            events.emit("warning", message="the folder changed since this run started: "
                        f"{steps_per_epoch} steps per epoch now, {state['steps_per_epoch']} "
                        "before; continuing on the current images")

    train_model: torch.nn.Module = model
    if cfg.compile:
        train_model = torch.compile(model)

    events.emit(
        "run_start", run_dir=str(run_dir), resumed=state is not None, config=cfg.to_dict(),
        auto=why, device=device_info.to_dict(), steps_per_epoch=steps_per_epoch,
        total_steps=total_steps, start_step=step, peak_lr=peak_lr,
        dataset={"root": manifest.root, "images": len(manifest.images),
                 "classes": manifest.classes,
                 "class_counts": [int((cache.labels == i).sum())
                                  for i in range(len(manifest.classes))],
                 "skipped": len(manifest.skipped), "summary": manifest.summary()})
    log(f"run {run_dir}: {cfg.method} {cfg.backbone} {cfg.image_size}px batch "
        f"{cfg.batch_size} on {device_info.name}; {manifest.summary()}")

    def checkpoint_state(epoch: int) -> dict:
        return {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(), "augment_rng": aug_gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "step": step, "epoch": epoch, "steps_per_epoch": steps_per_epoch,
            "config": cfg.to_dict(), "method": cfg.method, "backbone": cfg.backbone,
        }

    def save(epoch: int, keep: bool) -> None:
        path = run_dir / "checkpoints" / "last.pt"
        save_checkpoint(path, checkpoint_state(epoch))
        events.emit("checkpoint", path=str(path), epoch=epoch, step=step)
        if keep:
            kept = run_dir / "checkpoints" / f"epoch-{epoch:04d}.pt"
            save_checkpoint(kept, checkpoint_state(epoch))
            events.emit("checkpoint", path=str(kept), epoch=epoch, step=step)

    def end(status: str, reason: str) -> RunResult:
        epoch = step // steps_per_epoch
        events.emit("run_end", status=status, reason=reason, step=step, epoch=epoch,
                    run_dir=str(run_dir))
        log(f"run {status}: {reason}")
        loader.close()
        return RunResult(run_dir, status, reason, step, epoch)

    model.train()
    check_every_step = device.type == "cpu"  # a sync costs nothing there
    window_start, window_pairs = time.perf_counter(), 0
    epoch_start = time.perf_counter()
    epoch_loss = torch.zeros((), device=device)
    epoch_steps = 0
    try:
        while step < total_steps:
            if should_stop():
                save(step // steps_per_epoch, keep=False)
                return end("stopped", "stop requested; checkpoint saved, --resume to go on")
            epoch, batch_index = divmod(step, steps_per_epoch)
            lr = lr_at(step, peak=peak_lr, warmup_steps=warmup_steps, total_steps=total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if isinstance(model, MoCo):
                model.momentum = key_encoder_momentum(cfg.moco_momentum, step, total_steps,
                                                      ramp=cfg.momentum_ramp)

            images = loader.batch(epoch, batch_index)  # uint8 (N, 3, S, S) on device
            x1, x2 = make_pairs(images, cfg.augment, cfg.image_size, aug_gen)
            if cfg.channels_last:
                x1 = x1.contiguous(memory_format=torch.channels_last)
                x2 = x2.contiguous(memory_format=torch.channels_last)
            with _autocast(device, cfg.precision or "fp32"):
                out = train_model(x1, x2)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(out.loss).backward()
            scaler.step(optimizer)
            scaler.update()
            step += 1
            epoch_steps += 1
            window_pairs += cfg.batch_size
            epoch_loss += out.loss.detach()

            last_of_epoch = step % steps_per_epoch == 0 or step == total_steps
            if step % cfg.log_every == 0 or last_of_epoch or check_every_step:
                loss = out.loss.item()  # device sync: only at the logging interval on a GPU
                if not math.isfinite(loss):
                    return end("failed",
                               f"the loss became {loss} at step {step} (learning rate "
                               f"{lr:.3g}): lower --lr or use --precision fp32; the last "
                               "good checkpoint is kept")
                if step % cfg.log_every == 0 or last_of_epoch:
                    now = time.perf_counter()
                    fields = {}
                    if isinstance(model, MoCo):
                        fields["momentum"] = model.momentum
                    rate = window_pairs / max(now - window_start, 1e-9)
                    events.emit(
                        "step", step=step, epoch=epoch, loss=loss, lr=lr, pairs_per_s=rate,
                        positive_pair_similarity=out.positive_pair_similarity.item(),
                        embedding_std=out.embedding_std.item(), **fields)
                    log(f"step {step}/{total_steps} epoch {epoch + 1}/{cfg.epochs} loss "
                        f"{loss:.4f} lr {lr:.3g} {rate:.1f} pairs/s")
                    window_start, window_pairs = now, 0
            if last_of_epoch:
                mean_loss = (epoch_loss / max(epoch_steps, 1)).item()
                finished_epoch = epoch + 1 if step % steps_per_epoch == 0 else epoch
                events.emit("epoch_end", epoch=epoch, step=step, loss=mean_loss,
                            seconds=time.perf_counter() - epoch_start)
                if not math.isfinite(mean_loss):
                    return end("failed", f"the loss became {mean_loss} during epoch {epoch}: "
                               "lower --lr; the last good checkpoint is kept")
                keep = (finished_epoch % cfg.keep_every == 0) or step == total_steps
                save(finished_epoch, keep=keep and step % steps_per_epoch == 0)
                if knn_monitor is not None and (step == total_steps or (
                        finished_epoch % cfg.knn_every == 0 and step % steps_per_epoch == 0)):
                    events.emit("eval", epoch=finished_epoch, step=step,
                                **knn_monitor.measure(model.online_encoder))
                epoch_loss.zero_()
                epoch_steps = 0
                epoch_start = time.perf_counter()
    except torch.OutOfMemoryError:
        return end("failed", f"out of GPU memory at batch size {cfg.batch_size} and "
                   f"{cfg.image_size} px: lower --batch-size or --image-size (or use "
                   "--precision bf16/fp16); the last checkpoint is kept")
    except CheckpointError as exc:
        return end("failed", str(exc))
    except (DataError, OSError) as exc:
        return end("failed", f"{exc}; the last checkpoint is kept, --resume to go on")
    return end("finished", f"trained {step} steps")
