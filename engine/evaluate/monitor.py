"""Weighted kNN accuracy of the encoder while it trains (the quality curve of a run).

At the end of an epoch the online encoder is put in eval mode, a fixed sample of the cached
images is embedded with the evaluation transform, and :func:`engine.evaluate.knn.knn_accuracy`
scores it on a fixed stratified split (k=20, T=0.07, as InstDisc and SimCLR's kNN monitor).
It only reads the model: no gradient, batch-norm statistics untouched (eval mode), no draw
from the training random generators, so a run trains the same with or without it.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from engine.config.train_config import TrainConfig
from engine.data.cache import ImageCache
from engine.evaluate.embed import encode
from engine.evaluate.knn import knn_accuracy
from engine.models.encoder import Encoder

K, TEMPERATURE, TEST_FRACTION = 20, 0.07, 0.2


class KnnMonitor:
    """kNN top-1 of a fixed sample of a labelled cache, measured on demand."""

    def __init__(self, cache: ImageCache, cfg: TrainConfig, device: torch.device, *,
                 max_images: int, seed: int = 0, batch_size: int = 256) -> None:
        labels = np.asarray(cache.labels)
        labelled = np.flatnonzero(labels >= 0)
        if len(labelled) > max_images:  # a fixed sample, the same every epoch
            labelled = np.sort(np.random.default_rng(seed).choice(labelled, max_images,
                                                                  replace=False))
        self.cache, self.cfg, self.device = cache, cfg, device
        self.indices = labelled
        self.labels = labels[labelled]
        self.seed, self.batch_size = seed, batch_size
        self.sampled = len(labelled) < int((labels >= 0).sum())

    @classmethod
    def for_run(cls, cache: ImageCache, cfg: TrainConfig,
                device: torch.device) -> KnnMonitor | None:
        """A monitor when the run asks for one and its folder has 2+ labelled classes."""
        if not cfg.knn_every:
            return None
        labels = np.asarray(cache.labels)
        counts = np.bincount(labels[labels >= 0]) if (labels >= 0).any() else np.zeros(0)
        if int((counts >= 2).sum()) < 2:
            return None
        return cls(cache, cfg, device, max_images=cfg.knn_max_images, seed=cfg.seed)

    def measure(self, encoder: Encoder) -> dict[str, Any]:
        """{"knn_top1", "knn_k", "images", "seconds"} for ``encoder`` as it is now."""
        started = time.perf_counter()
        return self.score(self.embed(encoder), started)

    def embed(self, encoder: Encoder) -> np.ndarray:
        """h (float32, one row per image of :attr:`indices`) of ``encoder`` as it is now."""
        return embed_rows(encoder, self.cache, self.indices, self.cfg, self.device,
                          batch_size=self.batch_size)

    def score(self, features: np.ndarray, started: float) -> dict[str, Any]:
        """What :meth:`measure` gives for ``features`` from :meth:`embed`, timed from
        ``started`` (a ``time.perf_counter()`` value)."""
        result = knn_accuracy(features, self.labels, k=K, temperature=TEMPERATURE,
                              test_fraction=TEST_FRACTION, seed=self.seed)
        return {"knn_top1": result["top1"], "knn_k": result["k"],
                "images": int(len(self.indices)),
                "seconds": round(time.perf_counter() - started, 3)}


@torch.no_grad()
def embed_rows(encoder: Encoder, cache: ImageCache, rows: np.ndarray, cfg: TrainConfig,
               device: torch.device, *, batch_size: int = 256) -> np.ndarray:
    """h (float32, one row per entry of ``rows``) of the cached images ``rows``, with the
    evaluation transform, the encoder in eval mode (batch-norm statistics untouched) and
    put back in the mode it was in."""
    was_training = encoder.training
    encoder.eval()
    try:
        features = []
        for start in range(0, len(rows), batch_size):
            batch = torch.from_numpy(np.asarray(cache.images[rows[start:start + batch_size]]))
            h, _ = encode(encoder, batch.to(device).permute(0, 3, 1, 2), cfg)
            features.append(h)
    finally:
        encoder.train(was_training)
    return np.concatenate(features)
