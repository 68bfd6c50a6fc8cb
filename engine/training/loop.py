"""The training loop: one flat function you can read top to bottom.

It reports through an :class:`~engine.run.events.EventWriter` and checks ``should_stop()``
between steps; it knows nothing about any GUI.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch

from engine.config.locations import default_runs_root, user_cache_dir
from engine.config.resolve import DeviceInfo, resolve_config, resolve_device
from engine.config.settings import ConfigError
from engine.config.train_config import TrainConfig, load_config_file
from engine.data.augment import make_pairs
from engine.data.cache import ImageCache, build_cache
from engine.data.loader import BatchLoader, typical_side
from engine.data.scan import DataError, Manifest, scan_folder
from engine.evaluate.monitor import KnnMonitor
from engine.methods import MoCo, build_model, key_encoder_momentum
from engine.run.checkpoint import (
    CheckpointError,
    find_resume_point,
    remove_partial_writes,
    save_checkpoints,
    write_failure,
)
from engine.run.events import EventWriter
from engine.training import distributed
from engine.training.distributed import DistContext, SilentEvents, local_device
from engine.training.optim import build_optimizer, lr_at, scaled_lr

RESUMABLE_OVERRIDES = ("epochs", "max_steps", "log_every", "keep_every",
                       "checkpoint_minutes", "device",
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
    With several processes (torchrun) only rank 0 logs.
    """
    if distributed.env_rank() != 0:
        return
    try:
        print(message, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


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


def _out_of_memory(cfg: TrainConfig, what: str, run_dir: Path) -> str:
    assert cfg.batch_size is not None
    smaller = max(2, cfg.batch_size // 2)
    lower_precision = " or --precision bf16" if cfg.precision == "fp32" else ""
    kept = ("the last checkpoint is kept" if any((run_dir / "checkpoints").glob("*.pt"))
            else "no checkpoint had been saved yet")
    return (f"out of {what} at batch size {cfg.batch_size} and {cfg.image_size} px: start "
            f"a new run with a smaller batch size (e.g. --batch-size {smaller}) or a "
            f"smaller --image-size{lower_precision}; {kept}")


def _resume(run_dir: Path, overrides: dict[str, object] | None, events: EventWriter
            ) -> tuple[TrainConfig, dict | None, Path | None]:
    """The settings and the newest good checkpoint of the run in ``run_dir`` (state None
    when the run stopped before its first checkpoint), with warnings for what was passed
    over: damaged checkpoints, or a damaged config.json (the checkpoint holds the
    settings too)."""
    config_path, folder = run_dir / "config.json", run_dir / "checkpoints"
    if not config_path.is_file() and not any(folder.glob("*.pt")):
        raise TrainingError(f"{run_dir} is not a run folder (no config.json); give the "
                            "folder that `train` created")
    removed = remove_partial_writes(folder)
    if removed:
        log(f"removed {len(removed)} half-written checkpoint file(s) left by an interrupted "
            "save")
    try:
        point = find_resume_point(folder)
    except CheckpointError as exc:
        raise TrainingError(
            f"cannot resume {run_dir}: {exc}. Move the damaged files out of {folder} to "
            "train this run again from step 0, or start a new run with --config "
            f"{config_path}") from None
    for problem in point.passed_over:
        events.emit("warning", message=f"{problem}; continuing from "
                    f"{point.path.name if point.path else 'step 0'} instead")
    try:
        saved = load_config_file(config_path)
    except ConfigError as exc:
        kept = point.state.get("config") if point.state else None
        if not isinstance(kept, dict):
            raise TrainingError(f"cannot resume {run_dir}: {exc}. Restore config.json, or "
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
    if "device" in overrides:  # precision and memory format follow the new device
        saved.update(precision=None, channels_last=None)
    saved.update(overrides)
    cfg = TrainConfig.from_dict(saved, where=str(config_path))
    if point.state is None:
        events.emit("warning", message="no checkpoint yet (the run ended before its first "
                    "epoch did): training again from step 0")
    return cfg, point.state, point.path


@dataclass
class _SetUp:
    """What rank 0 (or a single process) found and made before training: the resolved
    settings, the checkpoint to go on from, the run folder, the data and the device."""

    cfg: TrainConfig
    why: dict[str, str]
    state: dict | None
    state_path: Path | None
    run_dir: Path
    scanned: Manifest  # as scanned, before decoding: others open the cache with it
    cache: ImageCache | None
    device: torch.device | None
    device_info: DeviceInfo | None

    def shared(self) -> _SetUp:
        """The part sent to the other processes (the cache and device are their own)."""
        return dataclasses.replace(self, cache=None, device=None, device_info=None)


def _set_up(cfg: TrainConfig, *, runs_root: Path | None, run_dir: Path | None,
            resume: Path | None, cache_dir: Path, events: EventWriter,
            resume_overrides: dict[str, object] | None, ctx: DistContext) -> _SetUp:
    """Settings, data, cache and run folder: done by rank 0 alone when several processes
    train together (the others wait, then open the cache it built)."""
    state = state_path = None
    if resume is not None:
        run_dir = Path(resume)
        cfg, state, state_path = _resume(run_dir, resume_overrides, events)

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device, device_info = resolve_device(local_device(cfg.device, ctx))

    manifest = scanned = scan_folder(cfg.data, progress=_progress(events, "scan"))
    if not manifest.images:
        found = f" ({len(manifest.skipped)} unusable file(s) skipped)" if manifest.skipped else ""
        raise DataError(
            f"no usable images in {cfg.data}{found}. Point --data at a folder of JPEG, PNG, "
            "BMP, WebP, TIFF or GIF images (class sub-folders give labels)")
    cfg, why = resolve_config(cfg, device_info, typical_side=typical_side(manifest),
                              num_images=None, world_size=ctx.world_size)
    assert cfg.cache_size is not None
    cache = build_cache(manifest, cfg.cache_size, cache_dir,
                        max_image_pixels=cfg.max_image_pixels,
                        progress=_progress(events, "decode"))
    manifest = cache.manifest
    cfg, why_more = resolve_config(cfg, device_info, typical_side=None,
                                   num_images=len(cache.labels), world_size=ctx.world_size)
    why.update(why_more)
    assert cfg.batch_size and cfg.image_size and cfg.optimizer and cfg.lr is not None

    try:
        if run_dir is None:
            run_dir = new_run_dir(Path(runs_root) if runs_root else default_runs_root(), cfg)
        run_dir = Path(run_dir)
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        events.attach(run_dir / "events.jsonl")
        cfg.save(run_dir / "config.json")
        manifest.save(run_dir / "manifest.json")
    except OSError as exc:
        where = exc.filename or run_dir or runs_root or default_runs_root()
        raise TrainingError(
            f"cannot write the run folder ({where}): {write_failure(exc)}. Free some space "
            "or choose a writable --runs-root (or --run-dir)") from None
    if manifest.skipped:
        events.emit("warning", message=f"{len(manifest.skipped)} file(s) skipped; see "
                                       f"manifest.json. {manifest.summary()}")
    if "queue_size" in why and why["queue_size"].startswith("reduced"):
        events.emit("warning", message="queue_size " + why["queue_size"])
    return _SetUp(cfg, why, state, state_path, run_dir, scanned, cache, device, device_info)


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

    Under torchrun with several processes (RANK, WORLD_SIZE... set) every process calls
    this: they train one model with DistributedDataParallel, each on its share of every
    global batch (engine.training.distributed), and only rank 0 writes events, the run folder and
    checkpoints. The process group stays up for the caller (the CLI ends it).
    """
    events = events or EventWriter()
    cache_dir = Path(cache_dir) if cache_dir else user_cache_dir()
    ctx = distributed.from_env()
    if not ctx.is_main:
        events = SilentEvents()  # rank 0 alone reports and writes the run folder
    setup = ctx.run_on_main(lambda: _set_up(
        cfg, runs_root=runs_root, run_dir=run_dir, resume=resume, cache_dir=cache_dir,
        events=events, resume_overrides=resume_overrides, ctx=ctx), keep=_SetUp.shared)
    cfg, why, state, state_path, run_dir = (setup.cfg, setup.why, setup.state,
                                            setup.state_path, setup.run_dir)
    if setup.device is None:  # another process than rank 0: its own device
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        setup.device, setup.device_info = resolve_device(local_device(cfg.device, ctx))
    device, device_info = setup.device, setup.device_info
    assert device_info is not None and cfg.cache_size is not None

    def open_cache() -> ImageCache:
        if setup.cache is not None:
            return setup.cache
        return build_cache(setup.scanned, cfg.cache_size, cache_dir,
                           max_image_pixels=cfg.max_image_pixels)

    # Rank 0 built the cache; one process per other machine reuses it from a shared
    # --cache-dir or decodes its own copy, then the other processes there open it.
    cache = ctx.local_leaders_first(open_cache)
    manifest = cache.manifest
    counts = ctx.gather_objects(len(cache.labels))
    if len(set(counts)) > 1:
        raise DataError(f"the processes found different images ({', '.join(map(str, counts))} "
                        f"usable images by rank): every machine needs the same folder at "
                        f"{cfg.data}")
    assert cfg.batch_size and cfg.image_size and cfg.optimizer and cfg.lr is not None
    if ctx.enabled and not cfg.sync_batch_norm:
        events.emit("warning", message=f"sync_batch_norm is off: each of the "
                    f"{ctx.world_size} processes normalises over its own share of the batch, "
                    "so the model can tell positives apart by per-device statistics; turn "
                    "it on for results that match one device")

    torch.manual_seed(cfg.seed)  # the same initial model in every process
    model = build_model(cfg).to(device)
    if ctx.enabled and cfg.sync_batch_norm:
        model = distributed.convert_sync_batchnorm(model, device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    peak_lr = scaled_lr(cfg.lr, cfg.batch_size, cfg.lr_scaling or "linear")
    optimizer = build_optimizer(model, cfg.optimizer, peak_lr, cfg.weight_decay or 0.0,
                                cfg.sgd_momentum, fused=device.type == "cuda")
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    aug_gen = torch.Generator().manual_seed(cfg.seed)
    # The augmentation generator draws for the global batch in every process (make_pairs
    # takes this process's rows), so its state is one and resumes with any world size.
    loader = BatchLoader(cache, cfg.batch_size, seed=cfg.seed, device=device, rank=ctx.rank,
                         world_size=ctx.world_size)
    knn_monitor = KnnMonitor.for_run(cache, cfg, device) if ctx.is_main else None
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
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scaler.load_state_dict(state["scaler"])
            aug_gen.set_state(state["augment_rng"])
            torch.set_rng_state(state["torch_rng"])
            if device.type == "cuda" and state.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(state["cuda_rng"], device)
            step = int(state["step"])
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            loader.close()
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TrainingError(
                f"cannot resume {run_dir}: {state_path} does not fit the run's model and "
                f"settings ({detail}). Move it out of the checkpoints folder to continue "
                "from an older checkpoint, or start a new run") from None
        if int(state.get("steps_per_epoch", steps_per_epoch)) != steps_per_epoch:
            events.emit("warning", message="the folder changed since this run started: "
                        f"{steps_per_epoch} steps per epoch now, {state['steps_per_epoch']} "
                        "before; continuing on the current images")

    train_model: torch.nn.Module = model  # checkpoints hold ``model``, never the wrappers
    if ctx.enabled:
        train_model = distributed.data_parallel(model, device)
    if cfg.compile:
        train_model = torch.compile(train_model)

    events.emit(
        "run_start", run_dir=str(run_dir), resumed=resume is not None, config=cfg.to_dict(),
        auto=why, device=device_info.to_dict(), steps_per_epoch=steps_per_epoch,
        total_steps=total_steps, start_step=step, peak_lr=peak_lr,
        world_size=ctx.world_size, per_process_batch=loader.local_batch_size,
        nodes=ctx.nodes,
        dataset={"root": manifest.root, "images": len(manifest.images),
                 "classes": manifest.classes,
                 "class_counts": [int((cache.labels == i).sum())
                                  for i in range(len(manifest.classes))],
                 "skipped": len(manifest.skipped), "summary": manifest.summary()})
    processes = (f" ({ctx.world_size} processes on {ctx.nodes} machine(s), "
                 f"{loader.local_batch_size} each)" if ctx.enabled else "")
    log(f"run {run_dir}: {cfg.method} {cfg.backbone} {cfg.image_size}px batch "
        f"{cfg.batch_size}{processes} on {device_info.name}; {manifest.summary()}")

    def checkpoint_state(epoch: int) -> dict:
        return {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(), "augment_rng": aug_gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "step": step, "epoch": epoch, "steps_per_epoch": steps_per_epoch,
            "config": cfg.to_dict(), "method": cfg.method, "backbone": cfg.backbone,
            "world_size": ctx.world_size,  # for information: any number can resume
        }

    saved_at = [time.monotonic()]  # when the last checkpoint was written (rank 0)

    def save(epoch: int, keep: bool) -> None:
        if not ctx.is_main:  # the model is the same in every process: rank 0 saves it
            return
        # The numbered file first: a process killed between the two writes leaves it
        # newer than last.pt, and --resume continues from it (find_resume_point), so no
        # kept checkpoint is ever skipped.
        paths = [run_dir / "checkpoints" / f"epoch-{epoch:04d}.pt"] if keep else []
        save_checkpoints(paths + [run_dir / "checkpoints" / "last.pt"], checkpoint_state(epoch),
                         written=lambda path: events.emit("checkpoint", path=str(path),
                                                          epoch=epoch, step=step))
        saved_at[0] = time.monotonic()

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
            if ctx.any(should_stop()):  # every process stops at the same step
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
            x1, x2 = make_pairs(images, cfg.augment, cfg.image_size, aug_gen,
                                global_batch=cfg.batch_size, offset=loader.offset)
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
                # Means over the processes (the same values in every process, so all
                # decide alike); a device sync: only at the logging interval on a GPU.
                loss, similarity, spread = ctx.mean(torch.stack([
                    out.loss.detach().float(), out.positive_pair_similarity.float(),
                    out.embedding_std.float()])).tolist()
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
                        positive_pair_similarity=similarity, embedding_std=spread, **fields)
                    log(f"step {step}/{total_steps} epoch {epoch + 1}/{cfg.epochs} loss "
                        f"{loss:.4f} lr {lr:.3g} {rate:.1f} pairs/s")
                    window_start, window_pairs = now, 0
            if last_of_epoch:
                mean_loss = ctx.mean(epoch_loss / max(epoch_steps, 1)).item()
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
            elif (cfg.checkpoint_minutes > 0 and ctx.is_main
                  and time.monotonic() - saved_at[0] >= 60 * cfg.checkpoint_minutes):
                save(step // steps_per_epoch, keep=False)  # mid-epoch: last.pt only
    except torch.OutOfMemoryError:
        return end("failed", _out_of_memory(cfg, "GPU memory", run_dir))
    except (MemoryError, RuntimeError) as exc:
        if not isinstance(exc, MemoryError) and "can't allocate memory" not in str(exc):
            raise
        return end("failed", _out_of_memory(cfg, "memory (RAM)", run_dir))
    except CheckpointError as exc:
        return end("failed", str(exc))
    except (DataError, OSError) as exc:
        return end("failed", f"{exc}; the last checkpoint is kept, --resume to go on")
    return end("finished", f"trained {step} steps")
