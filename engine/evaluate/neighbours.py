"""Exact nearest-neighbour search by cosine similarity.

Contrastive losses (NT-Xent in SimCLR, InfoNCE in MoCo) compare embeddings by cosine
similarity, so that is the similarity used to find an image's neighbours: the rows are
normalised to unit length once, and a query is one matrix product followed by a top-k.

Exact search is the right tool up to hundreds of thousands of images: 100k x 2048 float32
embeddings take 0.8 GB and a query reads them once (tens of milliseconds on a laptop CPU,
well under a millisecond on a GPU). Beyond a few million vectors, or when memory is short,
an approximate index (faiss, hnswlib) trades a little recall for much less time and memory;
it would replace :class:`NeighbourIndex` behind the same ``query`` interface.
"""

from __future__ import annotations

import operator

import numpy as np
import torch

# Largest block of the (queries x images) score matrix computed at once: 2**26 float32
# scores = 256 MB, so a batch of queries never needs more memory than that on top of the
# index itself.
_MAX_SCORES_PER_CHUNK = 2**26


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` (or the vector ``x``) scaled to unit length, as float32.

    Zero rows stay zero (their cosine similarity with anything is then 0, not NaN).
    """
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    # Dividing a zero row by 1 leaves it zero; every other row is divided by its norm.
    return x / np.where(norms > 0, norms, np.float32(1.0))


def check_finite(x: np.ndarray, what: str) -> None:
    """Raise ValueError naming the first row of ``x`` that holds NaN or infinity.

    A diverged training run gives NaN embeddings; saying so beats a map of nothing.
    """
    bad = ~np.isfinite(x)
    if bad.any():
        row = int(np.argwhere(bad)[0][0]) if x.ndim > 1 else 0
        raise ValueError(
            f"the {what} contain NaN or infinite values (first in row {row}); the encoder "
            "probably diverged: embed an earlier checkpoint or train again with a lower "
            "learning rate")


def _check_k(k: int) -> int:
    k = operator.index(k)
    if k < 1:
        raise ValueError(f"k (the number of neighbours) must be at least 1; got {k}")
    return k


class NeighbourIndex:
    """Exact cosine-similarity search over a fixed set of embeddings.

    ``features`` (N x D) are copied, normalised to unit length and kept as a float32
    tensor on ``device`` ("cpu" by default: the app may be training on the GPU at the same
    time; pass "cuda" to search there).
    """

    def __init__(self, features: np.ndarray, *, device: str | torch.device = "cpu") -> None:
        features = np.asarray(features)
        if features.ndim != 2:
            raise ValueError(
                f"embeddings must be a 2-D array (images x dimensions); got shape "
                f"{features.shape}")
        if features.shape[0] == 0:
            raise ValueError("there are no embeddings to search (0 images)")
        check_finite(features, "embeddings")
        self.device = torch.device(device)
        # (N, D) unit rows; from_numpy shares the normalised copy rather than copying again.
        self._vectors = torch.from_numpy(normalise(features)).to(self.device)

    def __len__(self) -> int:
        return self._vectors.shape[0]

    @property
    def dim(self) -> int:
        """Dimension D of the embeddings."""
        return self._vectors.shape[1]

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

        queries = torch.from_numpy(normalise(vectors)).to(self.device)
        chunk = max(1, _MAX_SCORES_PER_CHUNK // len(self))
        out_idx, out_score = [], []
        for start in range(0, q, chunk):
            scores = queries[start:start + chunk] @ self._vectors.T  # (chunk, N)
            if exclude is not None:
                scores[:, exclude] = -torch.inf
            top = torch.topk(scores, k, dim=1, largest=True, sorted=True)
            out_idx.append(top.indices.cpu())
            out_score.append(top.values.cpu())
        return (torch.cat(out_idx).numpy().astype(np.int64, copy=False),
                torch.cat(out_score).numpy().astype(np.float32, copy=False))

    def query_index(self, i: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest images to image ``i``, image ``i`` itself first (score 1).

        Returns (indices, scores), both (1, k), like :meth:`query`. The image is placed
        first explicitly, so an exact duplicate elsewhere in the folder cannot displace it.
        """
        i = self._check_index(i)
        k = min(_check_k(k), len(self))
        vector = self._vectors[i].cpu().numpy()
        idx, score = self.query(vector, k - 1, exclude=i) if k > 1 else (
            np.zeros((1, 0), np.int64), np.zeros((1, 0), np.float32))
        # The cosine similarity of a vector with itself is 1 (0 for an all-zero embedding).
        self_score = np.float32(1.0 if bool(self._vectors[i].any()) else 0.0)
        return (np.concatenate([np.array([[i]], np.int64), idx], axis=1),
                np.concatenate([np.array([[self_score]], np.float32), score], axis=1))
