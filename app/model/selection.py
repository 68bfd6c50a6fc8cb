"""The images a person has selected on the Explore page: one set shared by the map, the
selection grid, the tag bar, the curation views and the export, so a selection made in one
is the selection in all of them.

Indices are image indices of the run (rows of its manifest and embeddings), kept as a
sorted, unique int64 array: 100,000 of them cost 0.8 MB, and every operation is a numpy
set operation (no Python loop over the images).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from PySide6.QtCore import QObject, Signal

#: How a new set of images combines with the selection.
REPLACE, ADD, REMOVE, INTERSECT = "replace", "add", "remove", "intersect"
MODES = (REPLACE, ADD, REMOVE, INTERSECT)


def as_indices(values: Iterable[int] | np.ndarray) -> np.ndarray:
    """``values`` as a sorted, unique int64 array."""
    array = np.asarray(values if isinstance(values, np.ndarray) else list(values))
    return np.unique(array.astype(np.int64, copy=False).ravel())


def combine(current: np.ndarray, new: np.ndarray, mode: str) -> np.ndarray:
    """``current`` combined with ``new`` (both sorted unique) by ``mode``."""
    if mode == REPLACE:
        return new
    if mode == ADD:
        return np.union1d(current, new)
    if mode == REMOVE:
        return np.setdiff1d(current, new, assume_unique=True)
    if mode == INTERSECT:
        return np.intersect1d(current, new, assume_unique=True)
    raise ValueError(f"unknown selection mode {mode!r}; use one of {', '.join(MODES)}")


class Selection(QObject):
    """A set of image indices with a description of where it came from ("lasso",
    "class cat", "tag blurry", "duplicates"...).

    Signals:
        changed(): the indices (or the description) changed.
    """

    changed = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.indices = np.zeros(0, np.int64)
        self.source = ""

    def __len__(self) -> int:
        return len(self.indices)

    def __contains__(self, index: int) -> bool:
        i = np.searchsorted(self.indices, index)
        return bool(i < len(self.indices) and self.indices[i] == index)

    def set(self, values: Iterable[int] | np.ndarray, mode: str = REPLACE,
            source: str = "") -> None:
        """Combine ``values`` with the selection (``mode``: replace, add, remove or
        intersect); ``source`` says what chose them (kept for replace, joined otherwise)."""
        new = combine(self.indices, as_indices(values), mode)
        if mode == REPLACE or not self.source:
            source = source if mode in (REPLACE, ADD) or not source else f"not {source}"
        else:
            word = {ADD: "+", REMOVE: "-", INTERSECT: "&"}[mode]
            source = f"{self.source} {word} {source}" if source else self.source
        if np.array_equal(new, self.indices) and source == self.source:
            return
        self.indices, self.source = new, source
        self.changed.emit()

    def clear(self) -> None:
        self.set(np.zeros(0, np.int64), REPLACE, "")

    def mask(self, n: int) -> np.ndarray:
        """A boolean mask over ``n`` images, True where selected."""
        mask = np.zeros(n, bool)
        mask[self.indices[self.indices < n]] = True
        return mask
