"""What the Compare page shows, in plain Python (no Qt): which point of one map is the same
image on the other, and a comparison result (``contrastive-engine compare --json``) laid
onto side A's map.

Everything is numpy over whole arrays, so 100,000 points cost a few sort passes, not a
Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.evaluate.compare import match_images

#: The overlap buckets shown, as the engine's result names them in "shares".
SHARE_NAMES = (("0", "0"), ("<0.5", "under 0.5"), (">=0.5", "0.5 or more"), ("1", "1"))


@dataclass
class PointLinks:
    """The same image on two maps, matched by path relative to each map's root:
    ``a_to_b[i]`` is the index on map B of image ``i`` of map A (-1: not on B), and
    ``b_to_a`` the other way."""

    a_to_b: np.ndarray
    b_to_a: np.ndarray

    @classmethod
    def of_paths(cls, paths_a: list[str], paths_b: list[str]) -> PointLinks:
        ia, ib = match_images(paths_a, paths_b)
        a_to_b = np.full(len(paths_a), -1, np.int64)
        b_to_a = np.full(len(paths_b), -1, np.int64)
        a_to_b[ia] = ib
        b_to_a[ib] = ia
        return cls(a_to_b, b_to_a)

    @property
    def matched(self) -> int:
        return int((self.a_to_b >= 0).sum())

    def other(self, side: int, index: int) -> int:
        """The index on the other map of image ``index`` of map ``side`` (0: A, 1: B), or
        -1 when it is not there (or out of range)."""
        links = self.a_to_b if side == 0 else self.b_to_a
        return int(links[index]) if 0 <= index < len(links) else -1

    def others(self, side: int, indices: np.ndarray) -> np.ndarray:
        """The indices on the other map of images ``indices`` of map ``side``, those not
        there left out (int64)."""
        links = self.a_to_b if side == 0 else self.b_to_a
        indices = np.asarray(indices, np.int64)
        indices = indices[(indices >= 0) & (indices < len(links))]
        found = links[indices]
        return found[found >= 0]


def overlap_on_a(result: dict[str, Any], n_a: int) -> np.ndarray:
    """The comparison's overlap per image of side A's embeddings (``n_a`` images): float64,
    NaN where an image was not compared (it is not in B)."""
    overlap = np.full(n_a, np.nan)
    index = np.asarray(result["index_a"], np.int64)
    values = np.asarray(result["overlap"], np.float64)
    inside = index < n_a
    overlap[index[inside]] = values[inside]
    return overlap


def summary(result: dict[str, Any]) -> str:
    """The comparison in two lines for people: what was compared, the mean overlap and the
    share of images in each overlap bucket."""
    a, b = result["a"], result["b"]
    name_a = f"{a['name']} {a['checkpoint']} ({a['space']})"
    name_b = (f"{b['checkpoint']} ({b['space']})" if a["run"] == b["run"]
              else f"{b['name']} {b['checkpoint']} ({b['space']})")
    left = []
    if result["only_a"] or result["only_b"]:
        left.append(f"{result['only_a']:,} only in A, {result['only_b']:,} only in B")
    if result["different_content"]:
        left.append(f"{result['different_content']:,} left out: same path, other content")
    shares = ", ".join(f"{name} {100 * result['shares'][key]:.0f}%"
                       for key, name in SHARE_NAMES)
    return (f"A: {name_a} vs B: {name_b}; {result['images']:,} images in both"
            + (f" ({'; '.join(left)})" if left else "")
            + f".\nMean overlap of the {result['k']} nearest neighbours: "
            f"{result['mean_overlap']:.3f} (1: the same neighbours). Images by overlap: "
            f"{shares}.")
