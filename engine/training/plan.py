"""``contrastive-engine plan``: what a run on a folder will take on this machine, before it
starts, and the settings that fit a time a person has.

From the folder's scan and the settings resolved as ``train`` resolves them it reports:
the images and classes; the decoded cache's size, folder and the free space there, its format
(raw, jpeg or none: engine.data.cache_format) with the reason, and the size on disk of each
format (the JPEG cache's estimated from a sample encoded here); the time to decode the
folder, from a sample decoded here; the time per epoch, from training steps timed here on
random images (as ``bench`` does); the peak memory of those steps; and the whole run's time.

With a time budget (``--time 1h``) it times a few candidate configurations that suit the
device (backbone x image size; the method and the other settings as given) and picks
one, each choice with its reason: the largest model and image size that still trains
:data:`ENOUGH_EPOCHS` epochs in the time (contrastive methods gain more from epochs than
from capacity while the epochs are few), else the fastest with the epochs that fit.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.config.resolve import RunSettings, resolve_config, resolve_device
from engine.config.train_config import ConfigError, TrainConfig
from engine.data.cache import _read_and_decode, plan_cache
from engine.data.cache_format import choose_cache
from engine.data.loader import typical_side
from engine.data.scan import DataError, scan_data

#: Epochs a budget should buy before a larger model or image size is worth it.
ENOUGH_EPOCHS = 20
#: Images decoded to measure the decoding rate.
DECODE_SAMPLE = 48
#: (backbone, image size) candidates for a budget, cheapest first, per kind of device.
CANDIDATES = {
    "cpu": [("resnet18", 32), ("resnet50", 32), ("resnet18", 64), ("resnet50", 64),
            ("resnet50", 96)],
    "cuda": [("resnet18", 96), ("resnet50", 96), ("resnet50", 160), ("resnet50", 224)],
}


def parse_duration(text: str) -> float:
    """Seconds in "90m", "1h", "1h30m", "45s", "2.5h" or a plain number of minutes."""
    text = str(text).strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text) * 60
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|min|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ConfigError(f"cannot read the time {text!r}: write e.g. 1h, 90m, 1h30m or 45s")
    scale = {"h": 3600, "m": 60, "min": 60, "s": 1}
    seconds = sum(float(n) * scale[u] for n, u in parts)
    if seconds <= 0:
        raise ConfigError(f"the time must be positive; got {text!r}")
    return seconds


def decode_rate(manifest, size: int, max_pixels: int, sample: int = DECODE_SAMPLE) -> float:
    """Images per second that one core decodes and resizes to ``size`` px, from an evenly
    spread sample of the folder's images."""
    images = manifest.images
    if not images:
        return 0.0
    step = max(1, len(images) // sample)
    chosen = images[::step][:sample]
    root = Path(manifest.root)
    started = time.perf_counter()
    for record in chosen:
        _read_and_decode(root / record.path, record.sha, size, max_pixels)
    return len(chosen) / max(time.perf_counter() - started, 1e-6)


def peak_rss_gb() -> float:
    """This process's peak resident memory so far, in GB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**30 if sys.platform == "darwin" else 2**20)


def _timed(settings: RunSettings, device: str, seconds: float) -> dict[str, Any]:
    from engine.training.bench import bench_one

    keep = {"precision": settings.precision, "channels_last": settings.channels_last,
            "compile": settings.compile, "proj_hidden_dim": settings.proj_hidden_dim,
            "proj_out_dim": settings.proj_out_dim, "queue_size": settings.queue_size,
            "small_stem": settings.small_stem, "cache_size": settings.cache_size}
    result = bench_one(settings.backbone, settings.image_size, settings.batch_size, device,
                       seconds, method=settings.method, settings=keep)
    return {"pairs_per_s": round(result.pairs_per_s, 2), "step_seconds":
            round(result.step_seconds, 4), "timed_steps": result.timed_steps,
            "gflops_per_pair": round(result.gflops_per_pair, 3),
            "gpu_peak_memory_gb": (round(result.peak_memory_gb, 2)
                                   if result.peak_memory_gb is not None else None),
            "precision": result.precision}


def _epoch_seconds(images: int, batch: int, pairs_per_s: float) -> float:
    return (images // batch) * batch / pairs_per_s if pairs_per_s > 0 else math.inf


def _resolve(cfg: TrainConfig, info, manifest) -> tuple[RunSettings, dict[str, str]]:
    resolved, why = resolve_config(cfg, info, typical_side=typical_side(manifest),
                                   num_images=None)
    resolved, more = resolve_config(resolved, info, typical_side=None,
                                    num_images=len(manifest.images))
    why.update(more)
    return RunSettings.of(resolved), why


def plan_run(cfg: TrainConfig, *, cache_dir: Path, budget_s: float | None = None,
             seconds: float = 20.0, report: Callable[[str], None] = lambda line: None
             ) -> dict[str, Any]:
    """The plan of training ``cfg`` (see the module's docstring); ``seconds`` of timed steps
    in all (shared by the candidates when ``budget_s`` is given)."""
    device, info = resolve_device(cfg.device)
    report(f"scanning {cfg.data}")
    manifest = scan_data(cfg.data, max_pixels=cfg.max_image_pixels)
    n = len(manifest.images)
    if n == 0:
        raise DataError(f"no usable images in {cfg.data}: nothing to plan")
    settings, why = _resolve(cfg, info, manifest)
    workers = settings.decode_workers or os.cpu_count() or 1
    rate = decode_rate(manifest, settings.cache_size, settings.max_image_pixels)

    def cache_part(side: int, auto: bool) -> dict[str, Any]:
        def planned(fmt: str) -> Any:
            return plan_cache(manifest, side, cache_dir, fmt=fmt, num_workers=workers,
                              max_image_pixels=settings.max_image_pixels)

        refused = ""
        try:
            plan = choose_cache(manifest, settings.cache_format, side, cache_dir,
                                max_image_pixels=settings.max_image_pixels,
                                num_workers=workers,
                                smallest=settings.image_size if auto else None)
        except DataError as exc:  # a format set by hand that does not fit: said, not raised
            plan, refused = planned(settings.cache_format), str(exc)
        raw, jpeg = (plan if plan.format == f and plan.size == side else planned(f)
                     for f in ("raw", "jpeg"))
        left = 0 if plan.reuse or plan.format == "none" else plan.images - plan.resume_from
        # one core's rate times the workers: threads and processes both measured 0.84-0.85
        # of that per core on two cores (engine/data/cache.py, PROCESS_MIN_IMAGES)
        decode_s = left / (rate * min(workers, max(left, 1))) if left and rate else 0.0
        return {"size": plan.size, "asked_size": side, "bytes": plan.bytes,
                "format": plan.format, "reason": plan.reason, "refused": refused,
                "folder": plan.folder, "free": plan.free, "fits": not refused and plan.fits,
                "reuse": plan.reuse, "resume_from": plan.resume_from,
                "decode_seconds": round(decode_s, 1), "message": plan.describe(),
                "formats": {
                    "raw": {"bytes": raw.bytes, "fits": raw.fits},
                    "jpeg": {"bytes": jpeg.bytes, "fits": jpeg.fits,
                             "estimated_from": jpeg.sample},
                    "none": {"bytes": 0, "fits": True,
                             "epoch_decode_seconds": round(
                                 plan.images / (rate * workers), 1) if rate else None}}}

    cache = cache_part(settings.cache_size, "cache_size" in why)
    report(f"{n:,} images; {cache['message']}")
    report(f"decoding: {rate:.0f} images/s on one core here; {workers} workers")
    report(f"timing {settings.method} {settings.backbone} {settings.image_size} px batch "
           f"{settings.batch_size} on {info.name}")
    share = seconds / (1 + (len(CANDIDATES["cuda" if device.type == "cuda" else "cpu"])
                            if budget_s else 0))
    speed = _timed(settings, cfg.device, share)
    epoch_s = _epoch_seconds(n, settings.batch_size, speed["pairs_per_s"])
    result: dict[str, Any] = {
        "kind": "plan", "data": str(cfg.data), "images": n,
        "classes": len(manifest.classes), "skipped": len(manifest.skipped),
        "device": info.name, "device_type": device.type,
        "settings": {k: getattr(settings, k) for k in (
            "method", "backbone", "image_size", "cache_size", "batch_size", "epochs",
            "precision", "channels_last")},
        "why": why, "cache": cache,
        "decode": {"images_per_s_one_core": round(rate, 1), "workers": workers},
        "speed": speed, "epoch_seconds": round(epoch_s, 1),
        "run_seconds": round(cache["decode_seconds"] + settings.epochs * epoch_s, 1),
        "memory": {"peak_rss_gb": round(peak_rss_gb(), 2),
                   "gpu_peak_gb": speed["gpu_peak_memory_gb"],
                   "cache_gb": round(cache["bytes"] / 1e9, 3),
                   "note": "the cache is memory-mapped: the system keeps what fits of it in "
                           "memory and reads the rest from disk"}}
    if budget_s is not None:
        result["budget"] = fit_budget(cfg, info, device.type, manifest, budget_s, share,
                                      cache_part, report, (settings, speed))
    return result


def candidates(cfg: TrainConfig, device_type: str, asked: tuple[str, int], largest: int
               ) -> list[tuple[str, int]]:
    """(backbone, image size) pairs to time for a budget: the settings asked first, then
    the device's candidates no larger than the images (sides above ``largest`` px are left
    out, but the smallest candidate always stays); a backbone or image size given by hand
    stays fixed."""
    pairs = [asked] + [c for c in CANDIDATES[device_type] if c != asked]
    smallest = CANDIDATES[device_type][0][1]
    pairs = [(b, s) for b, s in pairs if (b, s) == asked or s <= max(largest, smallest)]
    if cfg.backbone is not None:
        pairs = [(cfg.backbone, s) for _, s in pairs]
    if cfg.image_size is not None:
        pairs = [(b, cfg.image_size) for b, _ in pairs]
    return list(dict.fromkeys(pairs))


def fit_budget(cfg: TrainConfig, info, device_type: str, manifest, budget_s: float,
               share: float, cache_part: Callable[[int, bool], dict[str, Any]],
               report: Callable[[str], None], timed: tuple[RunSettings, dict[str, Any]]
               ) -> dict[str, Any]:
    """Time each candidate (backbone, image size) and choose the settings for ``budget_s``."""
    n = len(manifest.images)
    largest = max(32, typical_side(manifest) or 32)
    options = []
    for backbone, size in candidates(cfg, device_type, (timed[0].backbone,
                                                        timed[0].image_size), largest):
        asked_first = [(timed[0].backbone, timed[0].image_size)]
        asked = dataclasses.replace(cfg, backbone=backbone, image_size=size,
                                    cache_size=cfg.cache_size if (backbone, size) in asked_first
                                    else None)
        settings, why = _resolve(asked, info, manifest)
        same = (settings.backbone, settings.image_size, settings.batch_size) == (
            timed[0].backbone, timed[0].image_size, timed[0].batch_size)
        if same:
            speed = timed[1]
        else:
            report(f"timing {backbone} {size} px batch {settings.batch_size}")
            speed = _timed(settings, cfg.device, share)
        cache = cache_part(settings.cache_size, True)
        epoch_s = round(_epoch_seconds(n, settings.batch_size, speed["pairs_per_s"]), 3)
        left = budget_s - cache["decode_seconds"]
        epochs = int(left // epoch_s) if left > 0 and math.isfinite(epoch_s) else 0
        options.append({"backbone": backbone, "image_size": size,
                        "batch_size": settings.batch_size, "cache_size": cache["size"],
                        "pairs_per_s": speed["pairs_per_s"],
                        "gflops_per_pair": speed["gflops_per_pair"],
                        "epoch_seconds": epoch_s,
                        "decode_seconds": cache["decode_seconds"], "epochs": epochs})
    enough = [o for o in options if o["epochs"] >= ENOUGH_EPOCHS]
    if enough:
        pick = max(enough, key=lambda o: (o["gflops_per_pair"], o["image_size"]))
        rule = (f"the largest model and image size that still trains at least "
                f"{ENOUGH_EPOCHS} epochs in the time")
    else:
        pick = max(options, key=lambda o: (o["epochs"], o["pairs_per_s"]))
        rule = (f"none of the candidates trains {ENOUGH_EPOCHS} epochs in the time, so the "
                "one that trains the most")
    minutes = budget_s / 60
    reasons = {
        "method": f"{cfg.method}: the method asked for (the default is SimCLR)",
        "backbone": f"{pick['backbone']}: {rule}",
        "image_size": f"{pick['image_size']} px: {rule}; larger images cost about the square "
                      "of the side",
        "batch_size": f"{pick['batch_size']}: the automatic batch for this device and size",
        "epochs": (f"{pick['epochs']}: {pick['epoch_seconds']:.0f} s an epoch of {n:,} images "
                   f"after {pick['decode_seconds']:.0f} s of decoding fit "
                   f"{minutes:.0f} min" if pick["epochs"] else
                   f"0: one epoch ({pick['epoch_seconds']:.0f} s) does not fit "
                   f"{minutes:.0f} min; train on a subset of the images, with a smaller "
                   "image size, or on a GPU"),
    }
    return {"seconds": budget_s, "options": options, "choice": {
        "method": cfg.method, "backbone": pick["backbone"], "image_size": pick["image_size"],
        "batch_size": pick["batch_size"], "epochs": pick["epochs"]}, "reasons": reasons,
        "rule": rule}


def _size(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _formats_text(c: dict[str, Any]) -> str:
    """The size on disk of each cache format, and the one chosen."""
    f = c["formats"]
    jpeg = f["jpeg"]
    parts = [f"raw {_size(f['raw']['bytes'])}" + ("" if f["raw"]["fits"] else
                                                   " (does not fit)"),
             (f"jpeg about {_size(jpeg['bytes'])} (estimated from {jpeg['estimated_from']} "
              "images)" if jpeg["estimated_from"] else f"jpeg {_size(jpeg['bytes'])}")
             + ("" if jpeg["fits"] else " (does not fit)"),
             "none 0 (each epoch decodes the files"
             + (f", about {f['none']['epoch_decode_seconds']:.0f} s of decoding)"
                if f["none"]["epoch_decode_seconds"] is not None else ")")]
    chosen = f"refused: {c['refused']}" if c["refused"] else f"chosen: {c['format']}"
    return f"cache formats at {c['asked_size']} px: {', '.join(parts)}; {chosen}"


def plan_text(r: dict[str, Any]) -> str:
    """The plan for people."""
    s, c, m = r["settings"], r["cache"], r["memory"]
    lines = [
        f"{r['images']:,} images in {r['classes']} classes ({r['skipped']} unusable) on "
        f"{r['device']}",
        f"settings: {s['method']} {s['backbone']} {s['image_size']} px, batch "
        f"{s['batch_size']}, {s['epochs']} epochs, {s['precision']}",
        f"cache: {c['message']}" + ("" if c["size"] == c["asked_size"] else
                                     f"; it does not fit, so {c['size']} px is used"),
        _formats_text(c),
        "decoding: none (the cache is reused)" if c["reuse"] else
        f"decoding: {c['decode_seconds']:.0f} s ({r['decode']['images_per_s_one_core']:.0f} "
        f"images/s a core, {r['decode']['workers']} workers)",
        f"speed: {r['speed']['pairs_per_s']:.1f} pairs/s -> {r['epoch_seconds']:.0f} s an "
        f"epoch; the run: {r['run_seconds'] / 60:.1f} min",
        f"memory: peak {m['peak_rss_gb']:.1f} GB resident while timing"
        + (f", GPU {m['gpu_peak_gb']:.1f} GB" if m["gpu_peak_gb"] is not None else "")
        + f"; cache {_size(c['bytes'])} memory-mapped",
    ]
    budget = r.get("budget")
    if budget:
        lines.append(f"for {budget['seconds'] / 60:.0f} min:")
        for name, reason in budget["reasons"].items():
            lines.append(f"  {name}: {reason}")
        choice = budget["choice"]
        lines.append(f"  train: contrastive-engine train --data {r['data']} --method "
                     f"{choice['method']} --backbone {choice['backbone']} --image-size "
                     f"{choice['image_size']} --batch-size {choice['batch_size']} --epochs "
                     f"{max(choice['epochs'], 1)}")
    return "\n".join(lines)
