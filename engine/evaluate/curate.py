"""Curating a folder with its embeddings: near-duplicates, outliers, a diverse subset and
likely label mistakes.

Everything here works on cosine similarity between L2-normalised embeddings (h or z), the
similarity the contrastive losses train, and everything is exact: the (N x N) similarity
matrix is computed in blocks of rows (:func:`row_blocks`: at most ``MAX_SCORES_PER_BLOCK``
scores at once, 256 MB), never whole, so 100,000 images need no more memory than the
embeddings plus one block.

- :func:`similar_pairs` / :func:`duplicate_groups`: every pair above a threshold, grouped
  into connected components (union-find), as near-duplicate groups.
- :func:`knn_blocked` / :func:`outlier_scores`: each image's k nearest neighbours (itself
  left out); the mean similarity to them is how typical it is (low: an outlier).
- :func:`farthest_point`: a diverse subset by greedy farthest-point (k-centre) selection
  (Gonzalez, 1985, "Clustering to minimize the maximum intercluster distance", a
  2-approximation of the k-centre problem), O(N) memory and O(N x n) time.
- :func:`label_mistakes`: images whose neighbours vote for another class than their folder's
  (kNN label-noise detection, the idea behind "cleanlab"-style neighbour checks; the vote is
  weighted by exp(s / T) as in the kNN classifier of :mod:`engine.evaluate.knn`).
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
import torch

from engine.evaluate.knn import NoLabels
from engine.evaluate.neighbours import check_finite, normalise
from engine.run import progress

#: The largest block of similarity scores computed at once (2**26 float32 = 256 MB).
MAX_SCORES_PER_BLOCK = 2**26
#: The most rows of a block (for a small N, blocks of this many rows x all columns).
MAX_BLOCK_ROWS = 4096

#: The default duplicate threshold is relative to how close images typically are: a pair is
#: a near-duplicate when its cosine distance 1 - s is below RELATIVE_DISTANCE times the
#: median distance of an image to its nearest neighbour (:func:`auto_threshold`). A fixed
#: value cannot serve both an untrained encoder (distinct digits up to 0.998 similar in h) and
#: a trained one (distinct digits below 0.961 after 41 SimCLR steps). Measured on 335 demo
#: digits with planted copies (benchmarks/bench_curate.py): planted pairs lie at relative
#: distances 0.02-0.05, distinct pairs at 0.28 or more (random init and trained, h and z);
#: 0.2 sits between them with margin on both sides.
RELATIVE_DISTANCE = 0.2
#: Images whose nearest neighbour is measured for the median (a seeded sample).
THRESHOLD_SAMPLE = 2000
#: The most pairs :func:`similar_pairs` collects (20 bytes each: 400 MB) before it stops
#: and asks for a higher threshold.
MAX_PAIRS = 20_000_000
#: Largest group whose full pairwise similarities are reported (min and max); a larger group
#: reports the range over the pairs found above the threshold.
MAX_DENSE_GROUP = 2000
#: The most pairs :func:`listed_pairs` puts in a result (the most similar ones), so that a
#: viewer can regroup at any higher threshold without searching again: about 6 MB of JSON.
MAX_LISTED_PAIRS = 200_000
#: Folder names (any depth, any case) that mark a split of the data: a near-duplicate in
#: two of them is a leak between the splits (a test image also trained on).
SPLIT_NAMES = frozenset({"train", "training", "val", "valid", "validation", "dev", "test",
                         "testing", "holdout"})


def split_of(path: str) -> str | None:
    """The split a relative image path lies in (the first of its folders named as one of
    :data:`SPLIT_NAMES`, in lower case), or None."""
    for part in path.replace("\\", "/").split("/")[:-1]:
        if part.lower() in SPLIT_NAMES:
            return part.lower()
    return None


def _unit(x: np.ndarray) -> torch.Tensor:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array (images x dimensions); got shape "
                         f"{x.shape}")
    check_finite(x, "embeddings")
    return torch.from_numpy(normalise(x))


def block_rows(n: int, block: int | None = None) -> int:
    """Rows per block for ``n`` images: ``block`` if given, else as many as fit in
    MAX_SCORES_PER_BLOCK scores (at most MAX_BLOCK_ROWS)."""
    if block is not None:
        block = operator.index(block)
        if block < 1:
            raise ValueError(f"block must be at least 1 row; got {block}")
        return block
    return max(1, min(MAX_BLOCK_ROWS, MAX_SCORES_PER_BLOCK // max(n, 1)))


def _check_threshold(threshold: float) -> float:
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold is a cosine similarity, from -1 to 1; got {threshold}")
    return float(threshold)


@torch.no_grad()
def similar_pairs(x: np.ndarray, threshold: float, *,
                  block: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair (i < j) whose cosine similarity is at least ``threshold``, exactly.

    Row block [a, b) is compared with the rows from a onwards only (the upper triangle), so
    each pair is computed once. Returns (i, j, similarity): int64, int64, float32 arrays,
    sorted by i then j.
    """
    threshold = _check_threshold(threshold)
    v = _unit(x)
    n = v.shape[0]
    step = block_rows(n, block)
    lower = torch.ones(min(step, n), min(step, n), dtype=torch.bool).tril()  # j <= i
    found_i, found_j, found_s = [], [], []
    found = 0
    for a in range(0, n, step):
        b = min(n, a + step)
        scores = v[a:b] @ v[a:].T  # (b - a, n - a): column c is image a + c
        square = scores[:, :b - a]  # the block against itself: keep j > i only (no self
        square.masked_fill_(lower[:b - a, :b - a], -torch.inf)  # pairs, no repeats)
        r, c = torch.nonzero(scores >= threshold, as_tuple=True)
        found += len(r)
        if found > MAX_PAIRS:
            raise ValueError(
                f"more than {MAX_PAIRS:,} pairs of images are at least {threshold:g} similar: "
                "that is no longer a list of near-duplicates; raise the threshold (most "
                "images of an untrained encoder are very similar to each other)")
        found_i.append((r + a).numpy())
        found_j.append((c + a).numpy())
        found_s.append(scores[r, c].numpy())
        progress.report("duplicates", b, n, "images")
    if not found_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return (np.concatenate(found_i).astype(np.int64), np.concatenate(found_j).astype(np.int64),
            np.concatenate(found_s).astype(np.float32))


def connected_components(n: int, i: np.ndarray, j: np.ndarray) -> list[list[int]]:
    """The groups of ``n`` nodes joined by the edges (i[e], j[e]) (union-find with path
    halving and union by size); groups of two or more nodes only, each sorted, ordered by
    their first node."""
    parent = list(range(n))
    size = [1] * n

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in zip(i.tolist(), j.tolist()):
        ra, rb = find(a), find(b)
        if ra == rb:
            continue
        if size[ra] < size[rb]:
            ra, rb = rb, ra
        parent[rb] = ra
        size[ra] += size[rb]
    groups: dict[int, list[int]] = {}
    for node in sorted(set(i.tolist()) | set(j.tolist())):
        groups.setdefault(find(node), []).append(node)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0])


@torch.no_grad()
def auto_threshold(x: np.ndarray, *, relative: float = RELATIVE_DISTANCE,
                   sample: int = THRESHOLD_SAMPLE, seed: int = 0) -> tuple[float, float]:
    """(threshold, median nearest-neighbour similarity): the threshold is
    1 - relative x (1 - m), m the median similarity of an image to its nearest other image,
    over a seeded sample of ``sample`` images (each compared with all). The rule assumes
    that most images have no near-duplicate; for a folder of mostly copies, give a fixed
    threshold."""
    v = _unit(x)
    n = v.shape[0]
    if n < 2:
        return 1.0, 1.0
    rows = np.sort(np.random.default_rng(seed).permutation(n)[:sample])
    nearest = []
    step = block_rows(n)
    for a in range(0, len(rows), step):
        part = torch.from_numpy(rows[a:a + step])
        scores = v[part] @ v.T
        scores[torch.arange(len(part)), part] = -torch.inf
        nearest.append(scores.max(dim=1).values.numpy())
    m = float(np.median(np.concatenate(nearest)))
    return min(1.0, 1.0 - relative * (1.0 - m)), m


def duplicate_groups(x: np.ndarray, threshold: float, *, block: int | None = None,
                     pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
                     ) -> list[dict[str, Any]]:
    """Near-duplicate groups: connected components of the pairs above ``threshold``.

    Each group is {"members": sorted indices, "max_similarity", "min_similarity" (over all
    pairs within the group, which for a chain can be below the threshold; over the pairs
    found for a group of more than MAX_DENSE_GROUP), "pairs" (how many pairs were above
    it)}. Groups are ordered by their first member. ``pairs``: the (i, j, similarity) of
    :func:`similar_pairs` at this threshold or a lower one, when already found.
    """
    if pairs is None:
        i, j, s = similar_pairs(x, threshold, block=block)
    else:
        keep = pairs[2] >= _check_threshold(threshold)
        i, j, s = pairs[0][keep], pairs[1][keep], pairs[2][keep]
    groups = connected_components(len(x), i, j)
    x = np.asarray(x)
    where = {}
    for g, members in enumerate(groups):
        for m in members:
            where[m] = g
    edges: dict[int, list[float]] = {}
    for a, score in zip(i.tolist(), s.tolist()):
        edges.setdefault(where[a], []).append(score)
    out = []
    for g, members in enumerate(groups):
        if len(members) <= MAX_DENSE_GROUP:
            v = normalise(x[members])
            sims = v @ v.T
            upper = sims[np.triu_indices(len(members), 1)]
            hi, lo = float(upper.max()), float(upper.min())
        else:
            hi, lo = max(edges[g]), min(edges[g])
        out.append({"members": members, "max_similarity": round(hi, 6),
                    "min_similarity": round(lo, 6), "pairs": len(edges[g])})
    return out


def listed_pairs(i: np.ndarray, j: np.ndarray, s: np.ndarray, threshold: float, *,
                 cap: int | None = None) -> dict[str, Any]:
    """The pairs found at ``threshold`` as a result lists them: {"from", "i", "j",
    "similarity", "found", "capped", "message"}, the most similar first.

    The list holds every pair whose similarity is at least "from": ``threshold``, or, when
    more than ``cap`` (MAX_LISTED_PAIRS) pairs were found, the similarity of the least
    similar pair kept (the ``cap`` most similar pairs, less any tied with the first one left
    out, so that the list stays complete from "from" up).
    """
    cap = MAX_LISTED_PAIRS if cap is None else operator.index(cap)
    order = np.argsort(-s, kind="stable")
    capped = len(order) > cap
    message = ""
    start = float(threshold)
    if capped:
        cut = s[order[cap]]  # the most similar pair left out
        order = order[:cap][s[order[:cap]] > cut]
        start = float(s[order[-1]]) if len(order) else 1.0
        message = (f"{len(s):,} pairs are at least {threshold:g} similar; the {len(order):,} "
                   f"most similar are listed (every pair from {start:.6g} up)")
    return {"from": start, "i": i[order], "j": j[order], "similarity": s[order],
            "found": len(s), "capped": capped, "message": message}


@torch.no_grad()
def knn_blocked(x: np.ndarray, k: int, *,
                block: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each image's ``k`` most cosine-similar other images (itself left out), exactly.

    Returns (indices, similarities): (N, k) int64 and float32, most similar first. ``k`` is
    clipped to N - 1.
    """
    k = operator.index(k)
    if k < 1:
        raise ValueError(f"k (the number of neighbours) must be at least 1; got {k}")
    v = _unit(x)
    n = v.shape[0]
    k = min(k, n - 1)
    if k < 1:
        return np.zeros((n, 0), np.int64), np.zeros((n, 0), np.float32)
    step = block_rows(n, block)
    out_i, out_s = [], []
    for a in range(0, n, step):
        b = min(n, a + step)
        scores = v[a:b] @ v.T  # (b - a, n)
        scores[torch.arange(b - a), torch.arange(a, b)] = -torch.inf  # not itself
        top = torch.topk(scores, k, dim=1, largest=True, sorted=True)
        out_i.append(top.indices.numpy())
        out_s.append(top.values.numpy())
        progress.report("neighbours", b, n, "images")
    return np.concatenate(out_i).astype(np.int64), np.concatenate(out_s).astype(np.float32)


def outlier_scores(x: np.ndarray, k: int = 10, *, block: int | None = None) -> np.ndarray:
    """How typical each image is: the mean cosine similarity to its ``k`` nearest other
    images (float32, N). The lowest scores are the most unusual images."""
    _, sims = knn_blocked(x, k, block=block)
    if sims.shape[1] == 0:
        return np.zeros(len(sims), np.float32)
    return sims.mean(axis=1, dtype=np.float64).astype(np.float32)


def farthest_point(x: np.ndarray, n: int, *, seed: int = 0) -> list[int]:
    """``n`` diverse images by greedy farthest-point selection on cosine distance 1 - s.

    The first image is drawn with ``seed`` (numpy's default_rng(seed).integers(N)); each
    next one is the image whose distance to its nearest chosen image is largest (the lowest
    index among ties). Memory O(N), time O(N x n): one matrix-vector product a pick.
    """
    n = operator.index(n)
    if n < 1:
        raise ValueError(f"the subset must hold at least 1 image; got {n}")
    v = _unit(x)
    total = v.shape[0]
    if total == 0:
        return []
    n = min(n, total)
    first = int(np.random.default_rng(seed).integers(total))
    chosen = [first]
    nearest = 1.0 - v @ v[first]  # (N,) distance to the nearest chosen image
    nearest[first] = -torch.inf
    while len(chosen) < n:
        pick = int(torch.argmax(nearest))
        chosen.append(pick)
        nearest = torch.minimum(nearest, 1.0 - v @ v[pick])  # chosen ones stay -inf
        nearest[pick] = -torch.inf
        progress.report("diverse", len(chosen), n, "images")
    return chosen


def label_mistakes(x: np.ndarray, labels: np.ndarray, k: int = 10, *,
                   temperature: float = 0.07, block: int | None = None) -> dict[str, Any]:
    """For each labelled image, the class its ``k`` nearest labelled neighbours vote for.

    Neighbour j (never the image itself) adds exp(s_j / T) to its class; the suggested
    class is the argmax (lowest class among ties) and the confidence its share of the vote.
    Images labelled -1 neither vote nor are judged. Returns {"indices" (the labelled
    images), "suggested", "confidence"} (arrays aligned with "indices"). Raises NoLabels
    when no image has a label.
    """
    labels = np.asarray(labels).astype(np.int64)
    if len(labels) != len(x):
        raise ValueError(f"{len(labels)} labels for {len(x)} images")
    labelled = np.flatnonzero(labels >= 0)
    if labelled.size == 0:
        raise NoLabels()
    if labelled.size < 2:
        raise ValueError("label mistakes need at least two labelled images")
    idx, sims = knn_blocked(np.asarray(x)[labelled], k, block=block)
    y = labels[labelled]
    num_classes = int(y.max()) + 1
    weights = np.exp(sims.astype(np.float64) / temperature)
    votes = np.zeros((len(labelled), num_classes), np.float64)
    rows = np.repeat(np.arange(len(labelled)), idx.shape[1])
    np.add.at(votes, (rows, y[idx].ravel()), weights.ravel())
    suggested = votes.argmax(axis=1)
    confidence = votes[np.arange(len(labelled)), suggested] / votes.sum(axis=1)
    return {"indices": labelled, "suggested": suggested, "confidence": confidence,
            "k": int(idx.shape[1])}
