"""engine.evaluate.neighbours at scale: the fast float16 search re-ranked in float32 gives the
exact search's answer, checked against a brute-force float64 cosine search, on random data
and on data whose scores tie within the float16 error; the index reads the embeddings
without copying them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.evaluate import neighbours
from engine.evaluate.neighbours import FAST_MIN_IMAGES, NeighbourIndex, error_bound

# Exact scores are float32: neighbours whose float64 scores differ by less than this may
# come in either order (or either may be the k-th).
TIE = 1e-6


def reference(data: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Cosine similarities (Q, N) in float64, the obvious way (zero rows score 0)."""
    d = data.astype(np.float64)
    q = np.atleast_2d(queries).astype(np.float64)
    dn = np.linalg.norm(d, axis=1, keepdims=True)
    qn = np.linalg.norm(q, axis=1, keepdims=True)
    return (q / np.where(qn > 0, qn, 1)) @ (d / np.where(dn > 0, dn, 1)).T


def assert_exact(idx: np.ndarray, score: np.ndarray, sims: np.ndarray, k: int,
                 exclude: int | None = None) -> None:
    """Each row holds k distinct images whose reference scores are the k best (swaps only
    among images within TIE of each other), most similar first, with their scores."""
    sims = sims.copy()
    if exclude is not None:
        sims[:, exclude] = -np.inf
    assert idx.shape == score.shape == (len(sims), k)
    for row, (i, s) in enumerate(zip(idx, score)):
        assert len(set(i.tolist())) == k
        got = sims[row, i]
        np.testing.assert_allclose(s, got, atol=1e-5)
        best = np.sort(sims[row])[::-1][:k]
        np.testing.assert_allclose(np.sort(got)[::-1], best, atol=TIE)
        assert (np.diff(got) <= TIE).all()  # most similar first
        # every image clearly better than the k-th is there
        assert set(np.flatnonzero(sims[row] > best[-1] + TIE)) <= set(i.tolist())


@pytest.fixture
def data() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((3000, 64)).astype(np.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("k", [1, 10, 100])
def test_fast_search_equals_brute_force_on_random_data(data, dtype, k):
    index = NeighbourIndex(data, search="fast", fast_dtype=dtype)
    assert index.search == "fast" and index.precision == dtype
    queries = np.random.default_rng(1).standard_normal((8, 64)).astype(np.float32)
    idx, score = index.query(queries, k)
    assert idx.dtype == np.int64 and score.dtype == np.float32
    assert_exact(idx, score, reference(data, queries), k)
    for i in (0, 1234, 2999):
        idx, score = index.query(data[i], k, exclude=i)
        assert i not in idx
        assert_exact(idx, score, reference(data, data[i]), k, exclude=i)


def near_ties(n: int = 4000, dim: int = 48, seed: int = 2) -> np.ndarray:
    """A tight cluster of 600 vectors (cosine similarities within about 1e-4 of each other,
    far less than the float16 error) among random ones, and some exact copies."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim))
    centre = rng.standard_normal(dim)
    x[:600] = centre + 0.01 * rng.standard_normal((600, dim))
    x[600:620] = x[0]  # exact duplicates: equal scores
    return x.astype(np.float32)


@pytest.mark.parametrize("margin", [0, 32])
def test_fast_search_is_exact_where_scores_tie_within_the_float16_error(monkeypatch, margin):
    x = near_ties()
    # margin 0: the top k alone never covers the near-ties, so every candidate above the
    # floor (k-th score minus twice the error bound) is re-ranked.
    monkeypatch.setattr(neighbours, "RERANK_MARGIN", margin)
    index = NeighbourIndex(x, search="fast")
    sims = reference(x, x[:40])
    spread = np.sort(sims[5])[::-1][:50]
    assert spread[0] - spread[-1] < error_bound(torch.float16, 48)  # fp16 cannot order them
    for k in (5, 50):
        idx, score = index.query(x[:8], k)
        assert_exact(idx, score, sims[:8], k)
    for i in (3, 605, 700):
        idx, score = index.query_index(i, 30)
        assert idx[0, 0] == i and score[0, 0] == 1.0
        assert_exact(idx[:, 1:], score[:, 1:], reference(x, x[i]), 29, exclude=i)


def test_many_queries_at_once_equal_brute_force(data):
    index = NeighbourIndex(data, search="fast")
    queries = np.random.default_rng(3).standard_normal((50, 64)).astype(np.float32)
    idx, score = index.query(queries, 7)  # a batch is searched exactly in float32
    assert_exact(idx, score, reference(data, queries), 7)


def test_exact_search_equals_brute_force_with_zero_rows(data):
    data = data.copy()
    data[10] = 0.0
    for search in ("exact", "fast"):
        index = NeighbourIndex(data, search=search)
        idx, score = index.query(data[:5], 20)
        assert_exact(idx, score, reference(data, data[:5]), 20)
        idx, score = index.query_index(10, 3)  # a zero embedding: itself first, score 0
        assert idx[0, 0] == 10 and score[0, 0] == 0.0
        np.testing.assert_allclose(score[0, 1:], 0.0, atol=1e-6)


def test_query_index_and_exclude_semantics_are_those_of_the_exact_search(data):
    data = data.copy()
    data[7] = data[3]  # a duplicate must not displace the image itself
    exact, fast = NeighbourIndex(data, search="exact"), NeighbourIndex(data, search="fast")
    for index in (exact, fast):
        idx, score = index.query_index(3, 5)
        assert idx[0, 0] == 3 and score[0, 0] == 1.0 and idx[0, 1] == 7
        assert score[0, 1] == pytest.approx(1.0, abs=1e-6)
        assert index.query_index(3, 1)[0].tolist() == [[3]]
        # k beyond the candidates is clipped: all images but the excluded one
        assert index.query(data[5], 5000, exclude=5)[0].shape == (1, 2999)
        with pytest.raises(ValueError, match="excluded index 3000 is out of range"):
            index.query(data[0], 3, exclude=3000)
    np.testing.assert_array_equal(exact.query_index(100, 12)[0], fast.query_index(100, 12)[0])
    single = NeighbourIndex(data[:1], search="fast")
    assert single.query(data[0], 3, exclude=0)[0].shape == (1, 0)


def test_search_is_chosen_by_size_and_can_be_asked_for(data, monkeypatch):
    small = NeighbourIndex(data)
    assert small.search == "exact" and f"fewer than {FAST_MIN_IMAGES:,}" in small.reason
    assert NeighbourIndex(data, search="exact").reason == "exact float32 search, as asked"
    monkeypatch.setattr(neighbours, "FAST_MIN_IMAGES", 1000)
    auto = NeighbourIndex(data)
    # "auto" keeps the fast search only where a float16 product was measured faster
    assert auto.search in ("fast", "exact") and "ms" in auto.reason
    with pytest.raises(ValueError, match="search must be one of auto, exact, fast"):
        NeighbourIndex(data, search="approximate")
    with pytest.raises(ValueError, match="fast_dtype must be"):
        NeighbourIndex(data, search="fast", fast_dtype=torch.float32)


def test_index_reads_the_embeddings_without_a_copy(tmp_path, data):
    np.save(tmp_path / "features.npy", data)
    mapped = np.load(tmp_path / "features.npy", mmap_mode="r")
    exact = NeighbourIndex(mapped, search="exact")
    assert exact.nbytes == 3000 * 4  # only the inverse norms
    fast = NeighbourIndex(mapped, search="fast")
    assert fast.nbytes == 3000 * 4 + 3000 * 64 * 2  # and the float16 unit rows
    assert np.shares_memory(fast._source, mapped)
    idx, score = fast.query(data[:3], 4)
    assert_exact(idx, score, reference(data, data[:3]), 4)


def test_nan_in_a_later_block_is_named_by_its_row(monkeypatch, data):
    monkeypatch.setattr(neighbours, "_BUILD_ELEMENTS", 64 * 100)  # blocks of 100 rows
    data = data.copy()
    data[1234, 5] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinite values \(first in row 1234\)"):
        NeighbourIndex(data)
