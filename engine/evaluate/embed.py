"""Embeddings: every image of a folder through a run's frozen encoder (h and z).

The evaluation transform is the standard one: the decode-once cache holds each image's
shorter side resized to ``cache_size`` (8/7 of the training size by default, i.e. 256 for 224)
and its centre square; the centre ``image_size`` crop of that is normalised and encoded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.config.locations import user_cache_dir
from engine.config.resolve import cpu_has_native_bf16, resolve_device
from engine.config.train_config import TrainConfig, load_config_file
from engine.data.cache import ImageCache, decode_image
from engine.data.cache_format import choose_cache, open_cache
from engine.data.scan import DataError, scan_data
from engine.models.encoder import Encoder
from engine.run.checkpoint import CheckpointError, load_checkpoint, model_weights
from engine.run.io import file_sha256, free_bytes, write_atomic, write_json_atomic
from engine.run.layout import CHECKPOINT_SUFFIX, LAST, RANDOM_INIT, EmbeddingFiles, RunDir
from engine.training.distributed import DistContext, local_device


class RunError(Exception):
    """A run folder or checkpoint cannot be used; str() says why and what to do."""


def load_run_config(run_dir: Path) -> TrainConfig:
    path = RunDir(run_dir).config
    if not path.is_file():
        raise RunError(f"{run_dir} is not a run folder (no config.json): give a folder that "
                       "`contrastive-engine train` created")
    return TrainConfig.from_dict(load_config_file(path), where=str(path))


def list_checkpoints(run_dir: Path) -> list[str]:
    """Checkpoint names of a run, oldest first, then "last"; "random" is always available."""
    return RunDir(run_dir).checkpoint_names()


def checkpoint_path(run_dir: Path, checkpoint: str) -> Path | None:
    """The file of a checkpoint name ("last", "epoch-0010", a path), None for random init."""
    if checkpoint == RANDOM_INIT:
        return None
    candidate = Path(checkpoint)
    if candidate.suffix == CHECKPOINT_SUFFIX and candidate.is_file():
        return candidate
    path = RunDir(run_dir).checkpoint(candidate.stem)
    if not path.is_file():
        available = ", ".join(list_checkpoints(run_dir) + [RANDOM_INIT])
        raise RunError(f"no checkpoint {checkpoint!r} in {run_dir}; available: {available}")
    return path


def checkpoint_name(run_dir: Path, checkpoint: str) -> str:
    path = checkpoint_path(run_dir, checkpoint)
    return RANDOM_INIT if path is None else path.stem


def load_encoder(run_dir: Path, checkpoint: str = LAST,
                 device: torch.device | str = "cpu") -> tuple[Encoder, TrainConfig, dict]:
    """The run's encoder (backbone + head) at ``checkpoint``, in eval mode on ``device``.

    ``checkpoint="random"`` gives the same architecture freshly initialised with the run's
    seed: the baseline that shows what training bought.
    """
    from engine.methods import build_model  # the one builder that reads the configuration

    cfg = load_run_config(run_dir)
    path = checkpoint_path(run_dir, checkpoint)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    info: dict = {"checkpoint": RANDOM_INIT if path is None else path.stem}
    if path is not None:
        try:
            weights, step, epoch = model_weights(load_checkpoint(path), where=path)
        except CheckpointError as exc:
            raise RunError(str(exc)) from None
        model.load_state_dict(weights)
        info.update(path=str(path), step=step, epoch=epoch, sha256=file_sha256(path))
    else:
        info.update(step=0, epoch=0)
    encoder = model.online_encoder.to(device).eval()
    return encoder, cfg, info


def eval_views(images: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """uint8 (N, 3, S, S) cache images -> normalised float (N, 3, size, size): centre crop."""
    assert cfg.image_size is not None
    s, size = images.shape[-1], cfg.image_size
    top = (s - size) // 2
    x = images[..., top:top + size, top:top + size].float().div_(255)
    mean = torch.tensor(cfg.augment.normalize_mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(cfg.augment.normalize_std, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def embedding_precision(cfg: TrainConfig, device: torch.device) -> str:
    """"bf16" where the run trained in bf16 and ``device`` computes it natively (a GPU, or a
    CPU with AVX-512 BF16 or AMX: 2-3x faster there; the features then agree with fp32 ones
    to about 1% of their length), else "fp32". A run trained in bf16 elsewhere is embedded
    in fp32 on a CPU without native bf16, where bf16 would be emulated and slow."""
    if cfg.precision != "bf16":
        return "fp32"
    return "bf16" if device.type != "cpu" or cpu_has_native_bf16() else "fp32"


@torch.no_grad()
def encode(encoder: Encoder, images: torch.Tensor, cfg: TrainConfig) -> tuple[np.ndarray,
                                                                              np.ndarray]:
    """h and z (float32 numpy) of a uint8 (N, 3, S, S) batch already on the encoder's device."""
    device = next(encoder.parameters()).device
    x = eval_views(images, cfg)
    # As training runs: channels-last for the convolutions (1.1-1.4x in fp32 on a CPU).
    x = x.contiguous(memory_format=torch.channels_last)
    bf16 = embedding_precision(cfg, device) == "bf16"
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        h, z = encoder(x)
    return h.float().cpu().numpy(), z.float().cpu().numpy()


def embed_cache(encoder: Encoder, cache: ImageCache, cfg: TrainConfig, *, batch_size: int = 256,
                progress: Callable[[int, int], None] | None = None,
                rows: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """h (N, D_h) and z (N, D_z) for every image in the cache (or the cache rows
    [``rows[0]``, ``rows[1]``): one process's shard), in cache order."""
    device = next(encoder.parameters()).device
    first, last = rows if rows is not None else (0, len(cache.labels))
    n = last - first
    hs, zs = [], []
    for start in range(first, last, batch_size):
        stop = min(start + batch_size, last)
        batch = torch.from_numpy(np.array(cache.images[start:stop]))  # a copy
        h, z = encode(encoder, batch.to(device).permute(0, 3, 1, 2), cfg)
        hs.append(h)
        zs.append(z)
        if progress is not None:
            progress(stop - first, n)
    if not hs:  # an empty shard
        probe = torch.from_numpy(np.array(cache.images[:1])).to(device).permute(0, 3, 1, 2)
        h, z = encode(encoder, probe, cfg)
        return h[:0], z[:0]
    return np.concatenate(hs), np.concatenate(zs)


def _output_dims(encoder: Encoder, cache: ImageCache, cfg: TrainConfig) -> tuple[int, int]:
    """The widths of h and z, from encoding the cache's first image."""
    device = next(encoder.parameters()).device
    probe = torch.from_numpy(np.array(cache.images[:1])).to(device).permute(0, 3, 1, 2)
    h, z = encode(encoder, probe, cfg)
    return int(h.shape[1]), int(z.shape[1])


def embed_file(encoder: Encoder, cfg: TrainConfig, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """h and z of one image file, through the same decoding and evaluation transform."""
    from engine.data.cache import BadImage

    assert cfg.cache_size is not None
    try:
        array = decode_image(Path(path), cfg.cache_size, max_pixels=cfg.max_image_pixels)
    except BadImage as exc:
        raise DataError(f"{path} cannot be used as a query: {exc}") from None
    except OSError as exc:
        raise DataError(f"{path} cannot be read: {exc.strerror or exc}") from None
    device = next(encoder.parameters()).device
    batch = torch.from_numpy(np.array(array[None])).to(device).permute(0, 3, 1, 2)
    h, z = encode(encoder, batch, cfg)
    return h[0], z[0]


@dataclass
class Embeddings:
    """A saved embedding of a run's images. ``features`` and ``projections`` are read-only
    memory maps of the .npy files (:func:`load_embeddings`): opening them reads nothing,
    and rows are read from disk (or the page cache) as they are used."""

    folder: Path  # embeddings/<checkpoint>/
    features: np.ndarray  # h: (N, D_h) float32
    projections: np.ndarray  # z: (N, D_z) float32
    paths: list[str]  # relative to root
    labels: np.ndarray  # int64 (N,), -1 without labels
    classes: list[str]
    root: str
    checkpoint: str

    @property
    def has_labels(self) -> bool:
        return bool(self.classes) and bool((self.labels >= 0).any())

    @property
    def nbytes(self) -> int:
        """Bytes of the two arrays (about the size of their files)."""
        return int(self.features.nbytes + self.projections.nbytes)


def embeddings_bytes(images: int, h_dim: int, z_dim: int) -> int:
    """Bytes the float32 features and projections files of ``images`` images take (their
    .npy headers left out: 128 bytes each)."""
    return images * (h_dim + z_dim) * np.dtype(np.float32).itemsize


def format_bytes(n: int) -> str:
    """"0.87 GB", "12.3 MB", "25 kB"."""
    if n >= 1e8:
        return f"{n / 1e9:.2f} GB"
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def storage_plan(folder: Path, images: int, h_dim: int, z_dim: int) -> tuple[int, str]:
    """The bytes the embeddings of ``images`` images will take in ``folder`` and a sentence
    that says so; raises RunError when the disk there has less free space than that."""
    need = embeddings_bytes(images, h_dim, z_dim)
    free = free_bytes(folder)
    text = (f"embeddings of {images:,} images: h {h_dim}-d + z {z_dim}-d float32 = "
            f"{format_bytes(need)} in {folder} ({format_bytes(free)} free)")
    if need > free:
        raise RunError(f"not enough disk space for the {text}: free some space there")
    return need, text


def _save_npy(path: Path, array: np.ndarray) -> None:
    write_atomic(path, lambda f: np.save(f, array))


def load_embeddings(folder: Path, *, index: Any = None) -> Embeddings:
    """The embeddings saved in ``folder``, their arrays memory-mapped read-only (opening
    100k x 2048 features is instant and copies nothing; the files written by every version
    of the engine load the same way). ``index``: its index.json, when already read."""
    folder = Path(folder)
    files = EmbeddingFiles(folder)
    try:
        if index is None:
            index = json.loads(files.index.read_text(encoding="utf-8"))
        h = np.load(files.features, mmap_mode="r", allow_pickle=False)
        z = np.load(files.projections, mmap_mode="r", allow_pickle=False)
        if not isinstance(index, dict):
            raise ValueError(f"index.json holds {type(index).__name__}, not an object")
        labels = np.asarray(index["labels"], dtype=np.int64)
        if not len(index["paths"]) == len(labels) == len(h) == len(z):
            raise ValueError("index.json and the arrays disagree on the number of images")
        if h.ndim != 2 or z.ndim != 2:
            raise ValueError(f"the arrays have shapes {h.shape} and {z.shape}, not "
                             "(images x dimensions)")
        return Embeddings(folder, h, z, list(index["paths"]), labels, list(index["classes"]),
                          str(index["root"]), str(index["checkpoint"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunError(f"the embeddings in {folder} cannot be read ({exc}); compute them "
                       "again with `contrastive-engine embed`") from None


def embed_run(run_dir: Path, checkpoint: str = LAST, *, data: Path | None = None,
              device: str = "auto", batch_size: int = 256, cache_dir: Path | None = None,
              force: bool = False,
              progress: Callable[[str, int, int], None] | None = None,
              message: Callable[[str], None] | None = None,
              ctx: DistContext | None = None) -> Embeddings:
    """Embed the run's folder (or ``data``) at ``checkpoint`` and save the result under
    ``run_dir/embeddings/<checkpoint>/`` (``<checkpoint>-<folder>`` for another folder).

    Under torchrun (``ctx``: engine.training.distributed.from_env) each process embeds a
    contiguous shard of the images on its own device, rank 0 gathers the shards and writes
    the one result, and every process returns it.

    A saved result is reused when it was made from the same checkpoint file and the same
    folder content, unless ``force``. Before embedding, ``message`` is told how large the
    files will be and how much space is free (RunError when they do not fit).
    """
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    name = checkpoint_name(run_dir, checkpoint)
    source = Path(data) if data is not None else Path(cfg.data)
    manifest = scan_data(source, max_pixels=cfg.max_image_pixels, progress=(
        lambda d, t, m: progress("scan", d, t)) if progress else None)
    if not manifest.images:
        raise DataError(f"no usable images in {source}")
    ckpt = checkpoint_path(run_dir, checkpoint)
    ckpt_sha = file_sha256(ckpt) if ckpt is not None else RANDOM_INIT
    files = RunDir(run_dir).embedding(name if data is None else f"{name}-{source.name}")
    folder, index_path = files.path, files.index
    if index_path.is_file() and not force:
        try:
            old = json.loads(index_path.read_text(encoding="utf-8"))
            if old.get("checkpoint_sha256") == ckpt_sha and old.get("data_key") == manifest.key():
                return load_embeddings(folder)
        except (OSError, ValueError):
            pass  # unreadable: compute again

    assert cfg.cache_size is not None
    ctx = ctx if ctx is not None else DistContext()
    torch_device, _ = resolve_device(local_device(device, ctx))
    folder_of_caches = Path(cache_dir) if cache_dir else user_cache_dir()

    def open_images() -> ImageCache:
        # the run's own cache format (config.json keeps the one training chose), so the
        # training cache is reused, and a folder too big for a raw cache still embeds
        plan = choose_cache(manifest, cfg.cache_format, cfg.cache_size, folder_of_caches,
                            max_image_pixels=cfg.max_image_pixels,
                            num_workers=cfg.decode_workers)
        return open_cache(plan, manifest, folder_of_caches,
                          max_image_pixels=cfg.max_image_pixels,
                          num_workers=cfg.decode_workers,
                          progress=(lambda d, t, m: progress("decode", d, t))
                          if progress and ctx.is_main else None,
                          decode_device=str(torch_device) if torch_device.type == "cuda"
                          else "")

    cache = ctx.local_leaders_first(open_images)
    encoder, cfg, info = load_encoder(run_dir, checkpoint, torch_device)
    encoder = encoder.to(memory_format=torch.channels_last)  # (its inputs are too: encode)
    error: Exception | None = None
    if ctx.is_main:
        h_dim, z_dim = _output_dims(encoder, cache, cfg)
        try:
            _, text = storage_plan(folder, len(cache.labels), h_dim, z_dim)
            if message is not None:
                message(text[0].upper() + text[1:])
        except RunError as exc:
            error = exc
    ctx.raise_if_any(error)
    started = time.perf_counter()
    bounds = np.linspace(0, len(cache.labels), ctx.world_size + 1).astype(int)
    shard = (int(bounds[ctx.rank]), int(bounds[ctx.rank + 1]))
    h, z = embed_cache(encoder, cache, cfg, batch_size=batch_size, rows=shard,
                       progress=(lambda d, t: progress("embed", d, t))
                       if progress and ctx.is_main else None)
    parts = ctx.gather_to_main((h, z))
    if ctx.is_main:
        assert parts is not None
        try:
            h = np.concatenate([part[0] for part in parts])
            z = np.concatenate([part[1] for part in parts])
            folder.mkdir(parents=True, exist_ok=True)
            index_path.unlink(missing_ok=True)  # written last: it marks a complete set
            _save_npy(files.features, h.astype(np.float32))
            _save_npy(files.projections, z.astype(np.float32))
            records = cache.manifest.images
            write_json_atomic(index_path, {
                "checkpoint": name, "checkpoint_sha256": ckpt_sha, "step": info["step"],
                "epoch": info["epoch"], "root": cache.manifest.root,
                "data_key": manifest.key(), "classes": cache.manifest.classes,
                "paths": [r.path for r in records], "labels": cache.labels.tolist(),
                "skipped": len(cache.manifest.skipped), "image_size": cfg.image_size,
                "processes": ctx.world_size,
                "precision": embedding_precision(cfg, torch_device),
                "seconds": round(time.perf_counter() - started, 3),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        except OSError as exc:
            error = exc
    ctx.raise_if_any(error)  # every rank waits for rank 0's files, or fails with it
    return load_embeddings(folder)
