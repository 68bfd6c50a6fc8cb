"""The live map: a 2-D layout of a fixed sample of the images, made while a run trains, so
that a person can watch the clusters form.

At every kNN evaluation (every ``knn_every`` epochs and at the end; with or without labels)
the sample is embedded (the kNN monitor's features are reused when it has them), laid out
in 2-D, turned to fit the layout before it and written to ``run_dir/live_map/``
(:class:`engine.run.layout.LiveMapFiles`): one ``epoch-NNNN.npy`` per frame and an
``index.json`` naming the images and listing the frames.

- Layout: PCA of the L2-normalised h (the first two principal components of the centred
  sample, as the Explore map's PCA), or UMAP (McInnes et al., 2018) started from the layout before
  (``live_map="umap"``: seconds per update instead of a fraction of one).
- Alignment: orthogonal Procrustes (Schönemann, 1966) with a uniform scale onto the layout
  before, so the map neither flips nor spins between frames; then centred and scaled to a
  unit RMS radius, so it neither grows nor shrinks.

Like the kNN monitor it only reads the model (eval mode, no gradient) and draws from no
training random generator: its sample comes from its own seeded ``torch.Generator``, so a
run trains the same with or without it. A resumed run reads the frames written so far
back from disk and goes on from the last one at or before its checkpoint's step.
"""

from __future__ import annotations

import json
import time
import warnings
from typing import Any

import numpy as np
import torch

from engine.config.train_config import TrainConfig
from engine.data.cache import ImageCache
from engine.evaluate.maps import pca_map
from engine.evaluate.monitor import KnnMonitor, embed_rows
from engine.models.encoder import Encoder
from engine.run.io import write_atomic, write_json_atomic
from engine.run.layout import LiveMapFiles

#: Points on the map at most (a fixed random sample of larger folders).
MAX_POINTS = 2000
INDEX_VERSION = 1
#: UMAP's optimisation epochs for a frame started from the one before (it starts close to
#: its answer, so a few hundred fewer than a fresh map's 500 are enough).
UMAP_UPDATE_EPOCHS = 200


def sample_rows(n_images: int, max_points: int, seed: int) -> np.ndarray:
    """Sorted int64 rows of a fixed sample of at most ``max_points`` of ``n_images``, drawn
    from a generator of its own (the training random streams are not touched)."""
    if n_images <= max_points:
        return np.arange(n_images, dtype=np.int64)
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(n_images, generator=generator)[:max_points]
    return np.sort(chosen.numpy()).astype(np.int64)


def pca_layout(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, 2) float32: the L2-normalised rows of ``features`` (N x D) projected on their
    first two principal components, each component's largest-magnitude loading positive
    (columns beyond the data's rank are zero). The Explore map's PCA
    (:func:`engine.evaluate.maps.pca_map`): exact from the smaller of the covariance and
    Gram matrices, a ``seed``-ed randomised SVD for large samples (its own numpy generator):
    about 0.04 s at 2,000 x 2,048 on two cores, where a full SVD of the sample takes 1.5 s
    (float64), and far longer on busy cores."""
    return pca_map(features, metric="cosine", seed=seed)


def procrustes(layout: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                     float]:
    """(aligned, rotation, scale): ``layout`` (N x 2) turned (a rotation, maybe with a
    reflection), scaled and shifted to fit ``reference`` (N x 2) in the least-squares sense
    (orthogonal Procrustes with a uniform scale): ``aligned = scale * (layout - mean) @
    rotation + reference's mean``, rotation from the SVD of the 2 x 2 cross-covariance."""
    a = np.asarray(layout, np.float64)
    b = np.asarray(reference, np.float64)
    a_mean, b_mean = a.mean(axis=0), b.mean(axis=0)
    a, b = a - a_mean, b - b_mean
    u, s, vt = np.linalg.svd(a.T @ b)  # a.T @ b: 2 x 2
    rotation = u @ vt
    norm = float((a ** 2).sum())
    scale = float(s.sum()) / norm if norm > 0 else 1.0
    return scale * a @ rotation + b_mean, rotation, scale


def unit_scale(layout: np.ndarray) -> np.ndarray:
    """``layout`` centred and scaled to a root-mean-square radius of 1 (float32); a layout
    of one point, or of identical points, is only centred."""
    x = np.asarray(layout, np.float64)
    x = x - x.mean(axis=0)
    radius = float(np.sqrt((x ** 2).sum(axis=1).mean())) if len(x) else 0.0
    return (x / radius if radius > 0 else x).astype(np.float32)


def umap_layout(features: np.ndarray, init: np.ndarray | None, seed: int) -> np.ndarray:
    """(N, 2) float32: UMAP (cosine, 15 neighbours) of ``features``, started from ``init``
    (the layout before) or, for the first frame, from the PCA layout; fewer than 4 points
    are laid out with PCA."""
    from engine.evaluate.maps import MIN_UMAP_POINTS, _import_umap

    n = len(features)
    start = pca_layout(features, seed) if init is None else init
    if n < MIN_UMAP_POINTS:
        return pca_layout(features, seed)
    umap = _import_umap(None)
    reducer = umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), min_dist=0.1,
                        metric="cosine", init=np.asarray(start, np.float64),
                        random_state=seed, n_jobs=1,
                        n_epochs=UMAP_UPDATE_EPOCHS if init is not None else None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate or disconnected points: still drawn
        out = reducer.fit_transform(np.asarray(features, np.float32))
    return np.ascontiguousarray(out, dtype=np.float32)


class LiveMap:
    """The live map of one run: its fixed sample, the frames written so far and the layout
    the next one is turned to fit.

    With a kNN monitor the sample is drawn from the monitor's images and :meth:`update`
    takes the monitor's features; without one (a folder without labels) it is drawn from
    every image and :meth:`update` embeds it.
    """

    def __init__(self, files: LiveMapFiles, cache: ImageCache, cfg: TrainConfig,
                 device: torch.device, *, monitor: KnnMonitor | None = None,
                 start_step: int = 0, max_points: int = MAX_POINTS,
                 batch_size: int = 256) -> None:
        self.files, self.cache, self.cfg, self.device = files, cache, cfg, device
        self.layout, self.seed, self.batch_size = cfg.live_map, cfg.seed, batch_size
        #: positions of the sample in the monitor's features (None without a monitor)
        self.positions: np.ndarray | None = None
        if monitor is not None:
            self.positions = sample_rows(len(monitor.indices), max_points, cfg.seed)
            self.indices = np.asarray(monitor.indices)[self.positions]
        else:
            self.indices = sample_rows(len(cache.labels), max_points, cfg.seed)
        self.frames: list[dict[str, Any]] = []
        self.previous: np.ndarray | None = None  # the last frame's layout
        #: why the map stopped being written (a disk problem), or None
        self.failed: str | None = None
        self._resume(start_step)

    @classmethod
    def for_run(cls, files: LiveMapFiles, cache: ImageCache, cfg: TrainConfig,
                device: torch.device, *, monitor: KnnMonitor | None,
                start_step: int = 0) -> LiveMap | None:
        """The run's live map, or None when it is off (``live_map`` "off", or ``knn_every``
        0: the map is made when the kNN accuracy would be)."""
        if cfg.live_map == "off" or not cfg.knn_every:
            return None
        return cls(files, cache, cfg, device, monitor=monitor, start_step=start_step)

    def _resume(self, start_step: int) -> None:
        """Go on with the frames on disk up to ``start_step`` when they are of this sample
        (a fresh run, another sample or an unreadable index start a new sequence)."""
        try:
            index = json.loads(self.files.index.read_text(encoding="utf-8"))
            if index.get("indices") != self.indices.tolist():
                return
            frames = [f for f in index.get("frames", []) if int(f["step"]) <= start_step]
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return
        for keep in range(len(frames), 0, -1):  # the newest frame that reads back intact
            try:
                layout = np.load(self.files.path / str(frames[keep - 1]["file"]),
                                 allow_pickle=False)
            except (OSError, ValueError):
                continue
            if layout.shape == (len(self.indices), 2) and np.isfinite(layout).all():
                self.frames, self.previous = frames[:keep], layout.astype(np.float32)
                return

    def features(self, encoder: Encoder, monitor_features: np.ndarray | None) -> np.ndarray:
        """h of the sample: rows of the monitor's features, else embedded now."""
        if monitor_features is not None and self.positions is not None:
            return np.asarray(monitor_features)[self.positions]
        return embed_rows(encoder, self.cache, self.indices, self.cfg, self.device,
                          batch_size=self.batch_size)

    def lay_out(self, features: np.ndarray) -> np.ndarray:
        """The next frame of ``features``: laid out, turned to fit the frame before, at
        unit scale (float32 (n, 2))."""
        if self.layout == "umap":
            layout = umap_layout(features, self.previous, self.seed)
        else:
            layout = pca_layout(features, self.seed)
        if self.previous is not None:
            layout = procrustes(layout, self.previous)[0]
        return unit_scale(layout)

    def update(self, encoder: Encoder, *, epoch: int, step: int,
               features: np.ndarray | None = None) -> dict[str, Any]:
        """Make and write the frame after ``epoch`` epochs (``step`` steps): ``features``
        are the kNN monitor's for its images, if it embedded them. Returns the live_map
        event's fields {"path", "n", "seconds"}. Raises OSError when the folder cannot be
        written, ValueError when the features are not finite."""
        started = time.perf_counter()
        layout = self.lay_out(self.features(encoder, features))
        self.files.path.mkdir(parents=True, exist_ok=True)
        path = self.files.frame(epoch)
        write_atomic(path, lambda f: np.save(f, layout, allow_pickle=False))
        self.frames = [f for f in self.frames if f["file"] != path.name] + [
            {"epoch": epoch, "step": step, "file": path.name}]
        self.previous = layout
        write_json_atomic(self.files.index, self._index())
        return {"path": str(path), "n": len(layout),
                "seconds": round(time.perf_counter() - started, 3)}

    def _index(self) -> dict[str, Any]:
        manifest = self.cache.manifest
        return {"version": INDEX_VERSION, "layout": self.layout, "root": manifest.root,
                "indices": self.indices.tolist(),
                "paths": [manifest.images[int(i)].path for i in self.indices],
                "labels": np.asarray(self.cache.labels)[self.indices].tolist(),
                "classes": list(manifest.classes), "frames": self.frames}
