"""The orders the Data page can show a folder's images in (class order, shuffled, by file
name, by file size, by date modified), and the filter to a tag's images, as permutations of
the manifest's image indices (no Qt).

The manifest holds each image's size (the scan read it); dates are read here, once per
scan, with one ``os.stat`` an image (about a second at 100,000 images on a local disk, more
on a network share): the page calls :func:`image_order` in a worker thread.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from engine.data.scan import Manifest

#: The orders, by key, with the words the page shows for them.
ORDERS = {"class": "Class order", "shuffled": "Shuffled", "name": "File name (A-Z)",
          "size": "File size (smallest first)", "modified": "Date modified (newest first)"}


def modified_times(manifest: Manifest) -> np.ndarray:
    """Each image's modification time (Unix seconds, float64), NaN where the file cannot
    be read now (moved or deleted since the scan)."""
    root = Path(manifest.root)
    times = np.full(len(manifest.images), np.nan)
    for i, record in enumerate(manifest.images):
        try:
            times[i] = os.stat(root / record.path).st_mtime
        except OSError:
            pass
    return times


def image_order(manifest: Manifest, how: str, *, seed: int = 0,
                mtimes: np.ndarray | None = None) -> np.ndarray:
    """The manifest's image indices (int64) in the order ``how`` (a key of ORDERS).

    "class" is the manifest's own order (classes, then paths); "shuffled" a permutation
    seeded by ``seed`` (the same seed, the same order); "name" the file names A-Z, ignoring
    case, then the paths; "size" smallest first; "modified" newest first, unreadable files
    last (``mtimes`` from :func:`modified_times`, read when not given). Ties keep the class
    order.
    """
    n = len(manifest.images)
    if how == "class":
        return np.arange(n, dtype=np.int64)
    if how == "shuffled":
        return np.random.default_rng(seed).permutation(n).astype(np.int64)
    if how == "name":
        names = np.array([r.path.rsplit("/", 1)[-1].casefold() for r in manifest.images],
                         dtype=str)
        return np.argsort(names, kind="stable").astype(np.int64)  # the paths are sorted
    if how == "size":
        sizes = np.fromiter((r.size for r in manifest.images), dtype=np.int64, count=n)
        return np.argsort(sizes, kind="stable").astype(np.int64)
    if how == "modified":
        times = modified_times(manifest) if mtimes is None else np.asarray(mtimes, float)
        if times.shape != (n,):
            raise ValueError(f"{times.shape[0]} dates for {n} images")
        return np.argsort(-times, kind="stable").astype(np.int64)  # NaN sorts last
    raise ValueError(f"unknown order {how!r}: one of {', '.join(ORDERS)}")


def only_tagged(order: np.ndarray, tagged: np.ndarray | None) -> np.ndarray:
    """The indices of ``order`` that are in ``tagged`` (all of them when None), in order."""
    if tagged is None:
        return order
    return order[np.isin(order, tagged)]
