"""Nearest-neighbour search by cosine similarity: exact, or fast in float16 and re-ranked.

Contrastive losses (NT-Xent in SimCLR, InfoNCE in MoCo) compare embeddings by cosine
similarity, so that is the similarity used to find an image's neighbours.

:class:`NeighbourIndex` reads the embeddings it is given without copying them (a
memory-mapped embeddings file stays on disk and in the page cache) and keeps one float per
image, the inverse of its norm. It answers a query in one of two ways:

- **exact**: one float32 matrix product over the embeddings, scaled by the inverse norms,
  and a top-k. This is the reference; 100k x 2048 takes about 45 ms on two idle cores.
- **fast**: the unit-length rows held in float16 (half the memory of float32: 0.4 GB at
  100k x 2048) give approximate scores in a product that reads half the bytes; the top k
  plus :data:`RERANK_MARGIN` candidates, and every other image whose float16 score is within
  twice the float16 error bound of the k-th, are then scored exactly in float32 from the
  embeddings themselves. The result is the exact search's, except that images whose exact
  scores differ by less than float32 rounding may swap places. Batches of more than a few
  queries are searched exactly (float16 matrix products are slow on CPUs without float16
  arithmetic, and a batch reads the embeddings once for all its queries anyway).

``search="auto"`` (the default) is exact below :data:`FAST_MIN_IMAGES` images and fast from
there on, unless this CPU's float16 product turns out no faster than the float32 one (one
of each is timed when the index is built); the index's ``search`` and ``reason`` say which
was chosen and why. On a GPU the search is exact (well under a millisecond at 100k).

Beyond a few million vectors an approximate index (faiss, hnswlib) trades a little recall
for much less time and memory; it would replace :class:`NeighbourIndex` behind the same
``query`` interface.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Callable

import numpy as np
import torch

# Largest block of the (queries x images) score matrix computed at once: 2**26 float32
# scores = 256 MB, so a batch of queries never needs more memory than that on top of the
# index itself.
_MAX_SCORES_PER_CHUNK = 2**26
# Rows normalised at once while an index is built (2**22 floats: 16 MB of float32), so a
# build never holds a full-size float32 copy.
_BUILD_ELEMENTS = 2**22
# The most queries of a chunk that the fast search takes in half precision: CPUs without
# native float16 arithmetic multiply matrices (several queries at once) in float16 more
# slowly than in float32, and a batch of queries amortises reading the embeddings anyway,
# so larger batches are searched exactly.
_FAST_MAX_QUERIES = 8
# Queries re-ranked together (their candidates gathered as one (rows, k + margin, D) block).
_RERANK_ROWS = 64

#: Search modes of :class:`NeighbourIndex`.
SEARCH_MODES = ("auto", "exact", "fast")
#: From this many images ``search="auto"`` uses the fast float16 search (below it the
#: exact search takes under 10 ms on two cores and needs no second copy).
FAST_MIN_IMAGES = 20_000
#: Candidates beyond k that the fast search re-ranks exactly (more are taken when scores
#: near the k-th lie within the float16 error bound).
RERANK_MARGIN = 32

# Unit roundoff of each half-precision format.
_UNIT_ROUNDOFF = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` (or the vector ``x``) scaled to unit length, as float32.

    Zero rows stay zero (their cosine similarity with anything is then 0, not NaN).
    """
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    # Dividing a zero row by 1 leaves it zero; every other row is divided by its norm.
    return x / np.where(norms > 0, norms, np.float32(1.0))


def check_finite(x: np.ndarray, what: str, *, first_row: int = 0) -> None:
    """Raise ValueError naming the first row of ``x`` that holds NaN or infinity
    (``first_row``: the row number of ``x[0]`` when ``x`` is a block of a larger array).

    A diverged training run gives NaN embeddings; saying so beats a map of nothing.
    """
    bad = ~np.isfinite(x)
    if bad.any():
        row = first_row + (int(np.argwhere(bad)[0][0]) if x.ndim > 1 else 0)
        raise ValueError(
            f"the {what} contain NaN or infinite values (first in row {row}); the encoder "
            "probably diverged: embed an earlier checkpoint or train again with a lower "
            "learning rate")


def _check_k(k: int) -> int:
    k = operator.index(k)
    if k < 1:
        raise ValueError(f"k (the number of neighbours) must be at least 1; got {k}")
    return k


def error_bound(dtype: torch.dtype, dim: int) -> float:
    """A bound on |s' - s| for the cosine similarity s of two unit vectors and the s' that
    a product in ``dtype`` (float16 or bfloat16) gives: rounding each vector's components
    (at most 2u + u^2 by Cauchy-Schwarz), summing ``dim`` products in float32 (at most
    dim x 2^-24) and rounding the result (u), u being the format's unit roundoff."""
    u = _UNIT_ROUNDOFF[dtype]
    return 3 * u + u * u + dim * 2.0**-24 + 1e-6


def _best_seconds(fn: Callable[[], object], repeats: int = 2) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


class NeighbourIndex:
    """Cosine-similarity search over a fixed set of embeddings ``features`` (N x D).

    ``features`` is read, not copied, when it is already a C-contiguous float32 array (a
    memory-mapped .npy file stays mapped): do not change it while the index is in use.
    Other arrays are converted to float32 once.

    ``search`` is "exact", "fast" or "auto" (see the module docstring); ``fast_dtype`` is
    the fast search's format (float16, or bfloat16: 8 times the error bound, so more
    candidates to re-rank). ``device`` "cpu" (the default: the app may be training on the
    GPU at the same time) or e.g. "cuda", where the unit rows are kept in float32 on the
    device and the search is exact.

    Attributes: ``search`` ("exact" or "fast"), ``precision`` (the dtype the scores are
    first computed in), ``reason`` (why, for people).
    """

    def __init__(self, features: np.ndarray, *, device: str | torch.device = "cpu",
                 search: str = "auto", fast_dtype: torch.dtype = torch.float16) -> None:
        if search not in SEARCH_MODES:
            raise ValueError(f"search must be one of {', '.join(SEARCH_MODES)}; got "
                             f"{search!r}")
        if fast_dtype not in _UNIT_ROUNDOFF:
            raise ValueError(f"fast_dtype must be torch.float16 or torch.bfloat16; got "
                             f"{fast_dtype}")
        features = np.asarray(features)
        if features.ndim != 2:
            raise ValueError(
                f"embeddings must be a 2-D array (images x dimensions); got shape "
                f"{features.shape}")
        if features.shape[0] == 0:
            raise ValueError("there are no embeddings to search (0 images)")
        self.device = torch.device(device)
        n, dim = features.shape
        self._source = np.ascontiguousarray(features, dtype=np.float32)  # (N, D), no copy
        self.search, self.precision, self.reason = "exact", torch.float32, (
            "exact float32 search, as asked" if search == "exact" else
            f"exact float32 search on {self.device.type}" if self.device.type != "cpu" else
            f"exact float32 search: fewer than {FAST_MIN_IMAGES:,} images")
        if self.device.type == "cpu" and (search == "fast" or (
                search == "auto" and n >= FAST_MIN_IMAGES)):
            self.search, self.precision = "fast", fast_dtype
        self._inv_norm = np.empty(n, np.float32)  # (N,) 1 / |row|, 0 for a zero row
        self._half: torch.Tensor | None = None  # (N, D) unit rows in self.precision
        self._unit: torch.Tensor | None = None  # (N, D) float32 unit rows on a GPU
        if self.search == "fast":
            self._half = torch.empty((n, dim), dtype=self.precision)
        elif self.device.type != "cpu":
            self._unit = torch.empty((n, dim), dtype=torch.float32, device=self.device)
        block = max(1, _BUILD_ELEMENTS // dim)
        for a in range(0, n, block):
            rows = self._source[a:a + block]
            check_finite(rows, "embeddings", first_row=a)
            norms = np.sqrt(np.einsum("ij,ij->i", rows, rows))
            self._inv_norm[a:a + block] = np.divide(
                1.0, norms, out=np.zeros_like(norms), where=norms > 0)
            if self._half is not None or self._unit is not None:
                unit = torch.from_numpy(rows * self._inv_norm[a:a + block, None])
                target = self._half if self._half is not None else self._unit
                assert target is not None
                target[a:a + block].copy_(unit)  # converted as it is copied
        self._bound = error_bound(self.precision, dim) if self.search == "fast" else 0.0
        if self.search == "fast":
            self.reason = self._measure(forced=search == "fast")

    @torch.no_grad()
    def _measure(self, *, forced: bool) -> str:
        """Time one query product each way; under "auto", fall back to the exact search
        where the half-precision one is no faster on this CPU (it is faster on CPUs with
        F16C, i.e. AVX2 and later, which convert float16 as they load it, so the product
        reads half the bytes; bfloat16 products are slower on many CPUs)."""
        assert self._half is not None
        query = self._source[:1] * self._inv_norm[:1, None]
        half = torch.from_numpy(query).to(self.precision)
        exact_s = _best_seconds(lambda: query @ self._source.T)
        fast_s = _best_seconds(lambda: half @ self._half.T)  # type: ignore[union-attr]
        name = str(self.precision).removeprefix("torch.")
        measured = (f"a {name} product takes {fast_s * 1e3:.0f} ms, a float32 one "
                    f"{exact_s * 1e3:.0f} ms here")
        if forced or fast_s < exact_s:
            return f"{name} scores re-ranked exactly in float32 ({measured})"
        self.search, self.precision, self._half, self._bound = "exact", torch.float32, None, 0.0
        return f"exact float32 search: {measured}, no faster"

    def __len__(self) -> int:
        return self._source.shape[0]

    @property
    def dim(self) -> int:
        """Dimension D of the embeddings."""
        return self._source.shape[1]

    @property
    def nbytes(self) -> int:
        """Memory the index holds beyond the embeddings it reads (inverse norms, and the
        float16 rows of a fast index or the float32 rows on a GPU)."""
        held = self._half if self._half is not None else self._unit
        extra = held.element_size() * held.nelement() if held is not None else 0
        return self._inv_norm.nbytes + extra

    def _check_index(self, i: int, what: str = "query index") -> int:
        i = operator.index(i)
        n = len(self)
        if not 0 <= i < n:
            raise ValueError(
                f"{what} {i} is out of range: the embeddings hold {n} images (0-{n - 1})")
        return i

    @torch.no_grad()
    def query(self, vectors: np.ndarray, k: int, *,
              exclude: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most cosine-similar images to each query vector.

        ``vectors`` is (Q, D), or (D,) for one query (then Q = 1). ``exclude`` leaves one
        image out of every result (typically the query image itself). ``k`` larger than
        the number of candidates is clipped to it.

        Returns (indices, scores), both (Q, k): int64 image indices and float32 cosine
        similarities, most similar first.
        """
        k = _check_k(k)
        vectors = np.asarray(vectors)
        if vectors.ndim == 1:
            vectors = vectors[None, :]
        if vectors.ndim != 2:
            raise ValueError(
                f"query vectors must be (queries x dimensions) or one vector; got shape "
                f"{vectors.shape}")
        if vectors.shape[1] != self.dim:
            raise ValueError(
                f"query vectors have {vectors.shape[1]} dimensions but the embeddings have "
                f"{self.dim}: query with the same kind of features (h or z) the index holds")
        check_finite(vectors, "query vectors")
        candidates = len(self)
        if exclude is not None:
            exclude = self._check_index(exclude, "excluded index")
            candidates -= 1
        k = min(k, candidates)
        q = vectors.shape[0]
        if k == 0 or q == 0:  # a one-image index with that image excluded, or no queries
            return np.zeros((q, k), np.int64), np.zeros((q, k), np.float32)

        queries = normalise(vectors)  # (Q, D) float32
        fast = self.search == "fast" and q <= _FAST_MAX_QUERIES
        chunk = max(1, _MAX_SCORES_PER_CHUNK // len(self))
        out_idx, out_score = [], []
        for start in range(0, q, chunk):
            part = queries[start:start + chunk]
            if fast:
                idx, score = self._fast(part, k, exclude, candidates)
            else:
                idx, score = self._exact(part, k, exclude)
            out_idx.append(idx)
            out_score.append(score)
        return (np.concatenate(out_idx).astype(np.int64, copy=False),
                np.concatenate(out_score).astype(np.float32, copy=False))

    def _exact(self, queries: np.ndarray, k: int, exclude: int | None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Top k of (chunk, N) float32 scores: (x . q) / |x| for every image x."""
        if self._unit is not None:
            scores = torch.from_numpy(queries).to(self.device) @ self._unit.T
            if exclude is not None:
                scores[:, exclude] = -torch.inf
            top = torch.topk(scores, k, dim=1, largest=True, sorted=True)
            return top.indices.cpu().numpy(), top.values.cpu().numpy()
        # On the CPU all in numpy: a numpy product followed by torch's top-k makes the two
        # libraries' thread pools compete for the cores (3x slower on two cores).
        scores = queries @ self._source.T  # (chunk, N)
        scores *= self._inv_norm
        if exclude is not None:
            scores[:, exclude] = -np.inf
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]  # the k best, unordered
        return _best(part, np.take_along_axis(scores, part, 1), k)

    def _fast(self, queries: np.ndarray, k: int, exclude: int | None, candidates: int
              ) -> tuple[np.ndarray, np.ndarray]:
        """Half-precision scores, then the candidates they leave re-ranked in float32."""
        assert self._half is not None
        approx = torch.from_numpy(queries).to(self.precision) @ self._half.T  # (chunk, N)
        if exclude is not None:
            approx[:, exclude] = -torch.inf
        m = min(k + RERANK_MARGIN, candidates)
        top = torch.topk(approx, m, dim=1, largest=True, sorted=True)
        values = top.values.float().numpy()  # (chunk, m)
        indices = top.indices.numpy()
        # Any image whose exact score could reach the k-th best has an approximate score
        # of at least the k-th approximate score minus twice the error bound.
        floor = values[:, k - 1] - 2 * self._bound
        complete = (values[:, -1] < floor) | (m == candidates)
        out_idx = np.empty((len(queries), k), np.int64)
        out_score = np.empty((len(queries), k), np.float32)
        rows = np.flatnonzero(complete)
        for a in range(0, len(rows), _RERANK_ROWS):
            r = rows[a:a + _RERANK_ROWS]
            cand = indices[r]  # (rows, m)
            exact = np.matmul(self._source[cand], queries[r][:, :, None])[..., 0]
            exact *= self._inv_norm[cand]
            out_idx[r], out_score[r] = _best(cand, exact, k)
        for row in np.flatnonzero(~complete):  # many near-ties: every image above the floor
            cand = torch.nonzero(approx[row].float() >= float(floor[row]))[:, 0].numpy()
            exact = (self._source[cand] @ queries[row]) * self._inv_norm[cand]
            idx, score = _best(cand[None], exact[None], k)
            out_idx[row], out_score[row] = idx[0], score[0]
        return out_idx, out_score

    def query_index(self, i: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest images to image ``i``, image ``i`` itself first (score 1).

        Returns (indices, scores), both (1, k), like :meth:`query`. The image is placed
        first explicitly, so an exact duplicate elsewhere in the folder cannot displace it.
        """
        i = self._check_index(i)
        k = min(_check_k(k), len(self))
        vector = self._source[i]
        idx, score = self.query(vector, k - 1, exclude=i) if k > 1 else (
            np.zeros((1, 0), np.int64), np.zeros((1, 0), np.float32))
        # The cosine similarity of a vector with itself is 1 (0 for an all-zero embedding).
        self_score = np.float32(1.0 if self._inv_norm[i] > 0 else 0.0)
        return (np.concatenate([np.array([[i]], np.int64), idx], axis=1),
                np.concatenate([np.array([[self_score]], np.float32), score], axis=1))


def _best(cand: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the ``k`` candidates of highest score, most similar first; equal scores in
    index order."""
    by_index = np.argsort(cand, axis=1, kind="stable")
    cand = np.take_along_axis(cand, by_index, 1)
    scores = np.take_along_axis(scores, by_index, 1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(cand, order, 1), np.take_along_axis(scores, order, 1)
