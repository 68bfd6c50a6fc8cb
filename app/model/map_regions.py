"""Which points of a map lie inside a rectangle or a free-hand polygon (a lasso), and which
is nearest to the mouse: numpy only, fast at 100,000 points, no Qt.

The polygon test is the even-odd ray cast (a point is inside when a ray from it to the
right crosses the outline an odd number of times), over only the points whose height each
edge spans: the points are sorted by y once, so each edge touches a slice of them, and all
(edge, point) pairs are tested at once; a lasso of a thousand vertices around 30,000 points
costs a few ms.
:class:`NearestPoint` keeps the points sorted by x, so the point under the mouse is looked
up in the thin strip of them around it.
"""

from __future__ import annotations

import numpy as np

#: A dragged lasso with more vertices than this is thinned to about this many.
MAX_LASSO_VERTICES = 2000
#: The polygon test handles this many (edge, point) pairs at a time (about 40 MB).
PAIRS_PER_CHUNK = 1_000_000


def points_in_rect(coords: np.ndarray, left: float, top: float, right: float,
                   bottom: float) -> np.ndarray:
    """Indices (int64) of the rows of ``coords`` (N, 2) inside the rectangle, edges included
    (``top`` is the smaller y)."""
    x, y = coords[:, 0], coords[:, 1]
    inside = (x >= left) & (x <= right) & (y >= top) & (y <= bottom)
    return np.flatnonzero(inside).astype(np.int64)


def simplify_path(polygon: np.ndarray, max_vertices: int = MAX_LASSO_VERTICES) -> np.ndarray:
    """``polygon`` (V, 2) without repeated vertices and, beyond ``max_vertices``, thinned to
    every k-th vertex (the mouse's path is dense; its shape survives)."""
    polygon = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    if len(polygon) > 1:
        keep = np.ones(len(polygon), bool)
        keep[1:] = (np.diff(polygon, axis=0) != 0).any(axis=1)
        polygon = polygon[keep]
    if len(polygon) > max_vertices:
        step = int(np.ceil(len(polygon) / max_vertices))
        polygon = polygon[::step]
    return polygon


def points_in_polygon(coords: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Indices (int64, ascending) of the rows of ``coords`` (N, 2) inside ``polygon`` (V, 2,
    closed implicitly) by the even-odd rule; fewer than 3 vertices enclose nothing."""
    polygon = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    if len(polygon) < 3 or len(coords) == 0:
        return np.zeros(0, np.int64)
    (left, top), (right, bottom) = polygon.min(axis=0), polygon.max(axis=0)
    candidates = points_in_rect(coords, left, top, right, bottom)
    if len(candidates) == 0:
        return candidates
    px = coords[candidates, 0].astype(np.float64)
    py = coords[candidates, 1].astype(np.float64)
    order = np.argsort(py)  # quicksort: 7x faster than a stable sort here
    px, py = px[order], py[order]
    x1, y1 = polygon[:, 0], polygon[:, 1]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    # an edge crosses the rightward ray of the points with min(y1, y2) <= y < max(y1, y2):
    # the same half-open rule as the classic pnpoly test, so a vertex is counted once
    starts = np.searchsorted(py, np.minimum(y1, y2), side="left")
    stops = np.searchsorted(py, np.maximum(y1, y2), side="left")
    edges = np.flatnonzero(stops > starts)
    crossings = np.zeros(len(order), np.int64)
    # every (edge, point in its slice) pair at once, in chunks of edges with at most
    # PAIRS_PER_CHUNK pairs, so a zigzag of tall edges cannot exhaust memory
    ends = np.cumsum(stops[edges] - starts[edges])
    cuts = np.searchsorted(ends, np.arange(PAIRS_PER_CHUNK, ends[-1], PAIRS_PER_CHUNK)
                           if len(ends) else [], side="left")
    for chunk in np.split(edges, cuts + 1) if len(edges) else []:
        if not len(chunk):
            continue
        counts = stops[chunk] - starts[chunk]
        edge = np.repeat(chunk, counts)
        point = starts[edge] + np.arange(len(edge)) - np.repeat(np.cumsum(counts) - counts,
                                                                counts)
        x_cross = x1[edge] + (py[point] - y1[edge]) * (x2[edge] - x1[edge]) / (y2[edge]
                                                                                - y1[edge])
        crossings += np.bincount(point[px[point] < x_cross], minlength=len(order))
    return np.sort(candidates[order[crossings % 2 == 1]])


class NearestPoint:
    """The point nearest to a position, within a radius, among fixed ``coords`` (N, 2)."""

    def __init__(self, coords: np.ndarray) -> None:
        coords = np.asarray(coords).reshape(-1, 2)
        self.order = np.argsort(coords[:, 0])
        self.xs = coords[self.order, 0].astype(np.float64)
        self.ys = coords[self.order, 1].astype(np.float64)

    def nearest(self, x: float, y: float, rx: float, ry: float) -> int:
        """The index of the point nearest to (x, y) inside the ellipse of radii ``rx``,
        ``ry`` around it (distances scaled by them, so a screen pixel counts the same both
        ways), or -1 for none."""
        if rx <= 0 or ry <= 0 or len(self.xs) == 0:
            return -1
        lo = int(np.searchsorted(self.xs, x - rx, side="left"))
        hi = int(np.searchsorted(self.xs, x + rx, side="right"))
        if lo >= hi:
            return -1
        dx, dy = (self.xs[lo:hi] - x) / rx, (self.ys[lo:hi] - y) / ry
        distance = dx * dx + dy * dy
        k = int(np.argmin(distance))
        return int(self.order[lo + k]) if distance[k] <= 1.0 else -1
