"""The training loop: one flat function you can read top to bottom.

It reports through an :class:`~engine.run.events.EventWriter` and checks ``should_stop()``
between steps; it knows nothing about any GUI. Its phases: set up (settings, data, run
folder, model), restore (a resumed run's checkpoint), the loop (step, log, evaluate,
checkpoint) and finish (the run_end event).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.config.locations import user_cache_dir
from engine.config.resolve import RunSettings, resolve_config, resolve_device
from engine.config.train_config import TrainConfig
from engine.data.augment import make_pairs
from engine.data.cache import CachePlan, ImageCache
from engine.data.cache_format import choose_cache, open_cache
from engine.data.loader import BatchLoader, typical_side
from engine.data.scan import DataError, is_list_file, scan_data
from engine.evaluate.live_map import LiveMap
from engine.evaluate.monitor import KnnMonitor
from engine.methods import BatchInfo, build_model, method_spec
from engine.models.encoder import Encoder
from engine.run.checkpoint import CheckpointError, TrainingState
from engine.run.events import EventWriter
from engine.run.io import write_atomic
from engine.run.layout import RunDir
from engine.training import distributed
from engine.training.checkpointing import Checkpointer, Resumable
from engine.training.distributed import DistContext, SilentEvents, local_device
from engine.training.optim import build_optimizer, lr_at, scaled_lr
from engine.training.report import CollapseWatch, StepMeter, announce, log_due
from engine.training.setup import (  # noqa: F401 - RESUMABLE_OVERRIDES: part of the interface
    RESUMABLE_OVERRIDES,
    SetUp,
    TrainingError,
    create_run_folder,
    log,
    out_of_memory,
    progress_events,
    read_init_weights,
    resume_settings,
)
from engine.training.step import grad_scaler, train_step


@dataclass
class RunResult:
    run_dir: Path | None
    status: str  # finished | stopped | failed
    reason: str
    step: int
    epoch: int


def _set_up(cfg: TrainConfig, *, runs_root: Path | None, run_dir: Path | None,
            resume: Path | None, cache_dir: Path, events: EventWriter,
            resume_overrides: dict[str, object] | None, ctx: DistContext) -> SetUp:
    """Settings, data, cache and run folder: done by rank 0 alone when several processes
    train together (the others wait, then open the cache it built)."""
    state = state_path = None
    if resume is not None:
        run_dir = Path(resume)
        cfg, state, state_path = resume_settings(RunDir(run_dir), resume_overrides, events)
        copies = RunDir(run_dir).data_lists()
        if copies and not Path(cfg.data).exists():  # the list trained on was moved away
            events.emit("warning", message=f"the image list {cfg.data} is gone; using the "
                        f"run's copy {copies[0]}")
            cfg = dataclasses.replace(cfg, data=str(copies[0]))

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device, device_info = resolve_device(local_device(cfg.device, ctx))
    init = None
    if state is None:  # a resumed run's checkpoint holds its weights: the file is not read
        cfg, init = read_init_weights(cfg, device_info)

    data_list = Path(cfg.data).expanduser().absolute() if is_list_file(cfg.data) else None
    if data_list is not None and str(data_list) != cfg.data:  # config.json names the list
        cfg = dataclasses.replace(cfg, data=str(data_list))
    manifest = scanned = scan_data(cfg.data, progress=progress_events(events, "scan"),
                                   max_pixels=cfg.max_image_pixels)
    if not manifest.images:
        found = f" ({len(manifest.skipped)} unusable file(s) skipped)" if manifest.skipped else ""
        raise DataError(
            f"no usable images in {cfg.data}{found}. Point --data at a folder of JPEG, PNG, "
            "BMP, WebP, TIFF or GIF images (class sub-folders give labels), or at a .txt/.csv "
            "list of such images")
    spec = method_spec(cfg.method)
    if spec.uses_labels and not manifest.has_labels:
        raise DataError(
            f"{spec.title} learns from labels, and {cfg.data} has none: labels come from class "
            "sub-folders. Put each class's images in a sub-folder named after the class (and "
            "any images without a class in one named 'unlabelled'), or use --method simclr, "
            "which needs no labels")
    cfg, why = resolve_config(cfg, device_info, typical_side=typical_side(manifest),
                              num_images=None, world_size=ctx.world_size, init=init)
    assert cfg.cache_size is not None
    cfg, plan = fit_cache_to_disk(cfg, manifest, cache_dir, why, events)
    cache = open_cache(plan, manifest, cache_dir, max_image_pixels=cfg.max_image_pixels,
                       num_workers=cfg.decode_workers,
                       progress=progress_events(events, "decode"),
                       announce=lambda plan: announce_cache(plan, events),
                       decode_device=str(device) if device.type == "cuda" else "")
    cfg, why_more = resolve_config(cfg, device_info, typical_side=None,
                                   num_images=len(cache.labels), world_size=ctx.world_size)
    why.update(why_more)
    settings = RunSettings.of(cfg)

    folder = create_run_folder(run_dir, runs_root, settings, cache.manifest, events)
    if data_list is not None:
        keep_list_copy(data_list, folder)
    if cache.manifest.skipped:
        events.emit("warning", message=f"{len(cache.manifest.skipped)} file(s) skipped; see "
                                       f"manifest.json. {cache.manifest.summary()}")
    for name in method_spec(settings.method).settings:
        if name in why:  # a method's own setting changed to fit the data
            events.emit("warning", message=f"{name} {why[name]}")
    return SetUp(settings, why, state, state_path, folder, scanned, cache, device, device_info,
                 init)


def announce_cache(plan: CachePlan, events: EventWriter) -> None:
    """State what the decoded cache will take, where, and the free space there (an event,
    which the terminal shows on stderr and the app in its log)."""
    events.emit("cache_plan", message=plan.describe(), images=plan.images, size=plan.size,
                bytes=plan.bytes, to_write=plan.to_write, folder=plan.folder, free=plan.free,
                reuse=plan.reuse, resume_from=plan.resume_from, workers=plan.workers,
                processes=plan.processes, format=plan.format, reason=plan.reason)
    if not plan.reuse:
        log(plan.describe())  # stderr, for whoever reads it beside the JSON events


def fit_cache_to_disk(cfg: TrainConfig, manifest, cache_dir: Path, why: dict[str, str],
                      events: EventWriter) -> tuple[TrainConfig, CachePlan]:
    """``cfg`` with the cache chosen to fit the free space of the cache folder
    (engine.data.cache_format.choose_cache), and its plan. An automatic format becomes the
    one chosen and an automatic side may shrink, each with its reason in ``why``; a choice
    other than a raw cache at the automatic side is also a warning. A format or size set by
    hand that does not fit is refused (DataError) with what to do."""
    auto_format, auto_size = cfg.cache_format == "auto", "cache_size" in why
    plan = choose_cache(manifest, cfg.cache_format, cfg.cache_size, cache_dir,
                        max_image_pixels=cfg.max_image_pixels, num_workers=cfg.decode_workers,
                        smallest=cfg.image_size if auto_size else None)
    if plan.size != cfg.cache_size:
        reason = (f"{plan.size} px: a {cfg.cache_size} px cache of {plan.images:,} images "
                  f"({plan.images * cfg.cache_size ** 2 * 3 / 1e9:.1f} GB) does not fit in the "
                  f"{plan.free / 1e9:.1f} GB free in {plan.folder}; crops come from "
                  f"{plan.size} px images instead (free space, or choose another --cache-dir, "
                  "for the full size)")
        why["cache_size"] = reason
        events.emit("warning", message=f"cache_size {reason}")
    if auto_format:
        why["cache_format"] = plan.reason
        if plan.format != "raw":
            events.emit("warning", message=f"cache_format {plan.reason}")
    return dataclasses.replace(cfg, cache_size=plan.size, cache_format=plan.format), plan


def keep_list_copy(data_list: Path, folder: RunDir) -> None:
    """Copy the image list trained on into the run folder (config.json names the original)."""
    copy = folder.data_list(data_list.suffix)
    if copy.resolve() == data_list.resolve():
        return  # resumed from the run's own copy
    try:
        content = data_list.read_bytes()
        write_atomic(copy, lambda f: f.write(content))
    except OSError as exc:
        raise TrainingError(f"cannot copy the image list {data_list} into {folder}: "
                            f"{exc.strerror or exc}") from None


def _open_cache(setup: SetUp, cache_dir: Path, ctx: DistContext) -> ImageCache:
    """This process's image cache: rank 0 built it; one process per other machine reuses it
    from a shared --cache-dir or decodes its own copy, then the other processes there open
    it. Every process must find the same images."""
    settings = setup.settings

    def this_process_cache() -> ImageCache:
        if setup.cache is not None:
            return setup.cache
        plan = choose_cache(setup.scanned, settings.cache_format, settings.cache_size,
                            cache_dir, max_image_pixels=settings.max_image_pixels,
                            num_workers=settings.decode_workers)
        return open_cache(plan, setup.scanned, cache_dir,
                          max_image_pixels=settings.max_image_pixels,
                          num_workers=settings.decode_workers,
                          decode_device=str(setup.device) if setup.device is not None
                          and setup.device.type == "cuda" else "")

    cache = ctx.local_leaders_first(this_process_cache)
    counts = ctx.gather_objects(len(cache.labels))
    if len(set(counts)) > 1:
        raise DataError(f"the processes found different images ({', '.join(map(str, counts))} "
                        f"usable images by rank): every machine needs the same folder at "
                        f"{settings.data}")
    return cache


def _evaluate(events: EventWriter, encoder: Encoder, monitor: KnnMonitor | None,
              live_map: LiveMap | None, *, epoch: int, step: int) -> None:
    """The kNN accuracy and the live map's next frame, from one embedding of the sample.
    A live map that cannot be made or written is given up with a warning: training goes
    on."""
    started = time.perf_counter()
    features = None
    if monitor is not None:
        features = monitor.embed(encoder)
        events.emit("eval", epoch=epoch, step=step, **monitor.score(features, started))
    if live_map is not None and live_map.failed is None:
        try:
            events.emit("live_map", epoch=epoch, step=step,
                        **live_map.update(encoder, epoch=epoch, step=step, features=features))
        except (OSError, ValueError) as exc:  # a disk problem, or features not finite
            live_map.failed = str(getattr(exc, "strerror", None) or exc)
            events.emit("warning", message=f"the live map stops at epoch {epoch} "
                        f"({live_map.failed}; {live_map.files.path}); training goes on "
                        "without it")


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
    # --- set up: settings, data and run folder on rank 0; each process's device and cache
    events = events or EventWriter()
    cache_dir = Path(cache_dir) if cache_dir else user_cache_dir()
    ctx = distributed.from_env()
    if not ctx.is_main:
        events = SilentEvents()  # rank 0 alone reports and writes the run folder
    setup = ctx.run_on_main(lambda: _set_up(
        cfg, runs_root=runs_root, run_dir=run_dir, resume=resume, cache_dir=cache_dir,
        events=events, resume_overrides=resume_overrides, ctx=ctx), keep=SetUp.shared)
    run, folder = setup.settings, setup.folder
    spec = method_spec(run.method)
    device, device_info = setup.device, setup.device_info
    if device is None or device_info is None:  # another process than rank 0: its own device
        if run.num_threads:
            torch.set_num_threads(run.num_threads)
        device, device_info = resolve_device(local_device(run.device, ctx))
    cache = _open_cache(setup, cache_dir, ctx)
    if ctx.enabled and not run.sync_batch_norm:
        events.emit("warning", message=f"sync_batch_norm is off: each of the "
                    f"{ctx.world_size} processes normalises over its own share of the batch, "
                    "so the model can tell positives apart by per-device statistics; turn "
                    "it on for results that match one device")

    # --- the model, optimiser, data and schedule: the same in every process
    torch.manual_seed(run.seed)
    model = build_model(run, init=setup.init).to(device)
    if ctx.enabled and run.sync_batch_norm:
        model = distributed.convert_sync_batchnorm(model, device)
    if run.channels_last:
        model = model.to(memory_format=torch.channels_last)
    peak_lr = scaled_lr(run.lr, run.batch_size, run.lr_scaling)
    optimizer = build_optimizer(model, run.optimizer, peak_lr, run.weight_decay,
                                run.sgd_momentum, fused=device.type == "cuda")
    scaler = grad_scaler(device, run.precision)
    aug_gen = torch.Generator().manual_seed(run.seed)
    # The augmentation generator draws for the global batch in every process (make_pairs
    # takes this process's rows), so its state is one and resumes with any world size.
    loader = BatchLoader(cache, run.batch_size, seed=run.seed, device=device, rank=ctx.rank,
                         world_size=ctx.world_size, decode_workers=run.decode_workers)
    # -1 where an image has no class, or where the method hides its label from training
    labels = torch.from_numpy(spec.training_labels(run, cache.labels))
    if spec.uses_labels:
        seen = int((labels >= 0).sum())
        log(f"{spec.title}: {seen} images train with their labels, {len(labels) - seen} "
            "without", notice=True)
    knn_monitor = KnnMonitor.for_run(cache, run.config, device) if ctx.is_main else None
    if knn_monitor is not None and knn_monitor.sampled:
        log(f"kNN accuracy per epoch on a fixed sample of {len(knn_monitor.indices)} images",
            notice=True)
    steps_per_epoch = loader.steps_per_epoch
    total_steps = run.epochs * steps_per_epoch
    if run.max_steps is not None:
        total_steps = min(total_steps, run.max_steps)
    warmup_steps = min(int(round(run.warmup_epochs * steps_per_epoch)), total_steps)
    parts = Resumable(model, optimizer, scaler, aug_gen, device)
    checkpoints = Checkpointer(folder, events, parts, settings=run,
                               steps_per_epoch=steps_per_epoch, world_size=ctx.world_size,
                               writes=ctx.is_main)

    # --- restore: a resumed run goes on from its checkpoint
    step = 0
    if setup.state is not None:
        saved = TrainingState.from_dict(setup.state, where=str(setup.state_path))
        try:
            step = parts.restore(saved)
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            loader.close()
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TrainingError(
                f"cannot resume {folder}: {setup.state_path} does not fit the run's model "
                f"and settings ({detail}). Move it out of the checkpoints folder to continue "
                "from an older checkpoint, or start a new run") from None
        if (saved.steps_per_epoch or steps_per_epoch) != steps_per_epoch:
            events.emit("warning", message="the folder changed since this run started: "
                        f"{steps_per_epoch} steps per epoch now, {saved.steps_per_epoch} "
                        "before; continuing on the current images")

    live_map = LiveMap.for_run(folder.live_map, cache, run.config, device, monitor=knn_monitor,
                               start_step=step) if ctx.is_main else None

    train_model: torch.nn.Module = model  # checkpoints hold ``model``, never the wrappers
    if ctx.enabled:
        train_model = distributed.data_parallel(model, device)
    if run.compile:
        train_model = torch.compile(train_model)
    announce(events, folder, run, resumed=resume is not None, why=setup.why,
             device_info=device_info, ctx=ctx, loader=loader, cache=cache,
             total_steps=total_steps, start_step=step, peak_lr=peak_lr, init=setup.init)

    # --- the loop: step, log, evaluate and checkpoint at the end of each epoch
    model.train()
    meter = StepMeter(device, run.batch_size)
    collapse = CollapseWatch(events) if spec.warns_of_collapse else None
    start_step = step
    status, reason = "finished", ""
    try:
        while step < total_steps:
            if ctx.any(should_stop()):  # every process stops at the same step
                checkpoints.save(step, step // steps_per_epoch, keep=False)
                status, reason = "stopped", "stop requested; checkpoint saved, --resume to go on"
                break
            # schedules, per step
            epoch, batch_index = divmod(step, steps_per_epoch)
            lr = lr_at(step, peak=peak_lr, warmup_steps=warmup_steps, total_steps=total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            spec.before_step(model, run, step, total_steps)

            # the step
            images = loader.batch(epoch, batch_index)  # uint8 (N, 3, S, S) on device
            rows = torch.from_numpy(loader.indices(epoch, batch_index))
            x1, x2 = make_pairs(images, run.augment, run.image_size, aug_gen,
                                global_batch=run.batch_size, offset=loader.offset)
            batch = BatchInfo(indices=rows.to(device), labels=labels[rows].to(device))
            out = train_step(train_model, optimizer, scaler, x1, x2, device=device,
                             precision=run.precision, channels_last=run.channels_last,
                             batch=batch)
            step += 1
            meter.add(out)

            # log: reading the figures is a device sync, so only at the interval on a GPU
            last_of_epoch = step % steps_per_epoch == 0 or step == total_steps
            logged = log_due(step, start_step, run.log_every) or last_of_epoch
            if logged or meter.read_every_step:
                loss, similarity, spread = meter.read(out, ctx)
                if not math.isfinite(loss):
                    status, reason = "failed", (
                        f"the loss became {loss} at step {step} (learning rate {lr:.3g}): "
                        "lower --lr or use --precision fp32; the last good checkpoint is kept")
                    break
                if logged:
                    rate = meter.pairs_per_s()
                    events.emit(
                        "step", step=step, epoch=epoch, loss=loss, lr=lr, pairs_per_s=rate,
                        positive_pair_similarity=similarity, embedding_std=spread,
                        **spec.step_fields(model))
                    if collapse is not None:
                        collapse.check(spread, step)
                    log(f"step {step}/{total_steps} epoch {epoch + 1}/{run.epochs} loss "
                        f"{loss:.4f} lr {lr:.3g} {rate:.1f} pairs/s")

            # end of an epoch: its mean loss, a checkpoint, the kNN accuracy
            if last_of_epoch:
                mean_loss, seconds = meter.epoch_mean(ctx)
                whole_epoch = step % steps_per_epoch == 0
                finished_epoch = epoch + 1 if whole_epoch else epoch
                events.emit("epoch_end", epoch=epoch, step=step, loss=mean_loss,
                            seconds=seconds)
                if not math.isfinite(mean_loss):
                    status, reason = "failed", (f"the loss became {mean_loss} during epoch "
                                                f"{epoch}: lower --lr; the last good "
                                                "checkpoint is kept")
                    break
                keep = (finished_epoch % run.keep_every == 0) or step == total_steps
                with meter.paused():
                    checkpoints.save(step, finished_epoch, keep=keep and whole_epoch)
                    if (knn_monitor is not None or live_map is not None) and (
                            step == total_steps or (
                                finished_epoch % run.knn_every == 0 and whole_epoch)):
                        _evaluate(events, model.online_encoder, knn_monitor, live_map,
                                  epoch=finished_epoch, step=step)
                meter.start_epoch()
            elif checkpoints.due():
                with meter.paused():
                    checkpoints.save(step, step // steps_per_epoch, keep=False)  # last.pt only
    except torch.OutOfMemoryError:
        status, reason = "failed", out_of_memory(run, "GPU memory", folder)
    except (MemoryError, RuntimeError) as exc:
        if not isinstance(exc, MemoryError) and "can't allocate memory" not in str(exc):
            raise
        status, reason = "failed", out_of_memory(run, "memory (RAM)", folder)
    except CheckpointError as exc:
        status, reason = "failed", str(exc)
    except (DataError, OSError) as exc:
        status, reason = "failed", f"{exc}; the last checkpoint is kept, --resume to go on"

    # --- finish: say how the run ended
    if status == "finished":
        reason = f"trained {step} steps"
    epoch = step // steps_per_epoch
    events.emit("run_end", status=status, reason=reason, step=step, epoch=epoch,
                run_dir=str(folder))
    log(f"run {status}: {reason}")
    loader.close()
    return RunResult(folder.path, status, reason, step, epoch)
