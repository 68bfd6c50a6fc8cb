"""engine.evaluate: maps, nearest neighbours, kNN accuracy and the linear probe.

Every check is against an answer known in advance (a brute-force reference, scikit-learn,
separable clusters that must be classified perfectly, random labels that must give chance),
never against the code's own earlier output.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.config.locations import user_cache_dir
from engine.data.scan import DataError
from engine.evaluate import maps
from engine.evaluate.knn import (
    NO_LABELS_MESSAGE,
    NoLabels,
    knn_accuracy,
    knn_predict,
    majority_share,
    save_result,
    stratified_split,
)
from engine.evaluate.maps import MapParams, compute_map, load_or_compute_map, pca_map
from engine.evaluate.neighbours import NeighbourIndex, normalise
from engine.evaluate.probe import ProbeParams, linear_probe


def clusters(n_per_class: int, num_classes: int, dim: int = 32, spread: float = 0.3,
             seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian clusters around random unit centres: separable by cosine and linearly."""
    rng = np.random.default_rng(seed)
    centres = normalise(rng.standard_normal((num_classes, dim)))
    labels = np.repeat(np.arange(num_classes), n_per_class)
    noise = spread / np.sqrt(dim) * rng.standard_normal((len(labels), dim))
    return (centres[labels] + noise).astype(np.float32), labels.astype(np.int64)


def cosine_reference(data: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Cosine similarity in float64, written out the obvious way."""
    d = data / np.linalg.norm(data, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    return q.astype(np.float64) @ d.astype(np.float64).T


# ---------------------------------------------------------------- neighbours


def test_normalise_gives_unit_rows_and_keeps_zero_rows_zero():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [-2.0, 0.0]])
    out = normalise(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0], [-1.0, 0.0]], rtol=1e-6)


def test_first_neighbour_is_the_image_itself_even_with_duplicates():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 16)).astype(np.float32)
    x[7] = x[3]  # an exact duplicate must not displace the image itself
    index = NeighbourIndex(x)
    for i in (0, 3, 7, 49):
        idx, score = index.query_index(i, 5)
        assert idx.shape == score.shape == (1, 5)
        assert idx[0, 0] == i and score[0, 0] == 1.0
        assert i not in idx[0, 1:]
    idx, score = index.query_index(3, 2)
    assert idx[0, 1] == 7 and score[0, 1] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("k", [1, 4, 150, 1000])
def test_query_matches_brute_force_cosine_search(k, monkeypatch):
    rng = np.random.default_rng(2)
    data = rng.standard_normal((150, 24)).astype(np.float32)
    queries = rng.standard_normal((9, 24)).astype(np.float32)
    # A tiny chunk so the chunked path (several blocks of queries) is exercised too.
    monkeypatch.setattr("engine.evaluate.neighbours._MAX_SCORES_PER_CHUNK", 150 * 4)
    idx, score = NeighbourIndex(data).query(queries, k)
    sims = cosine_reference(data, queries)
    expected = np.argsort(-sims, axis=1, kind="stable")[:, :min(k, 150)]
    assert idx.dtype == np.int64 and score.dtype == np.float32
    assert idx.shape == (9, min(k, 150))
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_allclose(score, np.take_along_axis(sims, expected, 1), atol=1e-5)


def test_query_one_vector_and_exclude():
    rng = np.random.default_rng(3)
    data = rng.standard_normal((40, 8)).astype(np.float32)
    index = NeighbourIndex(data)
    idx, _ = index.query(data[5], 3)
    assert idx.shape == (1, 3) and idx[0, 0] == 5
    idx, _ = index.query(data[5], 39, exclude=5)
    assert 5 not in idx and idx.shape == (1, 39)
    sims = cosine_reference(data, data[5:6])[0]
    sims[5] = -np.inf
    np.testing.assert_array_equal(idx[0], np.argsort(-sims)[:39])
    # k beyond the candidates is clipped: 40 images minus the excluded one.
    assert index.query(data[5], 100, exclude=5)[0].shape == (1, 39)


def test_neighbour_errors_say_what_is_wrong():
    index = NeighbourIndex(np.random.default_rng(4).standard_normal((120, 24)))
    with pytest.raises(ValueError) as err:
        index.query_index(500, 3)
    assert str(err.value) == ("query index 500 is out of range: the embeddings hold 120 "
                              "images (0-119)")
    with pytest.raises(ValueError, match="out of range"):
        index.query_index(-1, 3)
    with pytest.raises(ValueError, match="k .* must be at least 1; got 0"):
        index.query_index(0, 0)
    with pytest.raises(ValueError, match="query vectors have 16 dimensions but the "
                                         "embeddings have 24"):
        index.query(np.zeros((2, 16)), 3)
    with pytest.raises(ValueError, match="excluded index 120 is out of range"):
        index.query(np.zeros(24), 3, exclude=120)
    bad = np.ones((5, 3))
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite values .*row 2"):
        NeighbourIndex(bad)


# ---------------------------------------------------------------- split and kNN


def test_stratified_split_properties():
    labels = np.array([0] * 10 + [1] * 2 + [2] * 1 + [-1] * 4 + [3] * 33)
    labels = labels[np.random.default_rng(5).permutation(len(labels))]
    train, test = stratified_split(labels, 0.2, seed=3)
    assert len(np.intersect1d(train, test)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])),
                                  np.flatnonzero(labels >= 0))
    per_class_test = {c: int((labels[test] == c).sum()) for c in range(4)}
    assert per_class_test == {0: 2, 1: 1, 2: 0, 3: 7}  # round(n/5), >= 1, <= n-1
    assert set(labels[train]) == {0, 1, 2, 3}
    again = stratified_split(labels, 0.2, seed=3)
    np.testing.assert_array_equal(again[0], train)
    np.testing.assert_array_equal(again[1], test)
    assert not np.array_equal(stratified_split(labels, 0.2, seed=4)[1], test)


def test_stratified_split_needs_two_classes():
    with pytest.raises(ValueError, match="at least two classes"):
        stratified_split(np.array([0, 0, 0, -1]))
    with pytest.raises(ValueError, match="test_fraction"):
        stratified_split(np.array([0, 0, 1, 1]), test_fraction=1.0)
    with pytest.raises(ValueError, match="none can be held out"):
        stratified_split(np.array([0, 1, 2]))


def knn_reference(train_x, train_y, test_x, k, temperature, num_classes):
    """InstDisc's weighted kNN written with loops: for each test image, sort all training
    images by cosine similarity and add exp(s / T) of the k best to their classes."""
    scores = np.zeros((len(test_x), num_classes))
    for i, q in enumerate(test_x):
        sims = [float(np.dot(q, t) / (np.linalg.norm(q) * np.linalg.norm(t)))
                for t in train_x]
        order = sorted(range(len(train_x)), key=lambda j: -sims[j])[:k]
        for j in order:
            scores[i, train_y[j]] += np.exp(sims[j] / temperature)
    return scores


@pytest.mark.parametrize("k,temperature", [(1, 0.07), (5, 0.07), (7, 0.5), (200, 0.1)])
def test_knn_predict_matches_loop_reference(k, temperature):
    rng = np.random.default_rng(6)
    train_x = rng.standard_normal((60, 10)).astype(np.float32)
    train_y = rng.integers(0, 4, 60)
    test_x = rng.standard_normal((25, 10)).astype(np.float32)
    scores = knn_predict(train_x, train_y, test_x, k=k, temperature=temperature,
                         num_classes=4)
    expected = knn_reference(train_x, train_y, test_x, k, temperature, 4)
    assert scores.shape == (25, 4)
    np.testing.assert_array_equal(scores.argmax(1), expected.argmax(1))
    np.testing.assert_allclose(scores, expected, rtol=1e-4)


def test_knn_accuracy_on_separated_clusters_is_perfect():
    x, y = clusters(40, 6)
    result = knn_accuracy(x, y)
    assert result["top1"] == 1.0 and result["top5"] == 1.0
    assert result["train"] + result["test"] == 240 and result["test"] == 48
    assert result["classes"] == 6 and result["k"] == 20 and result["seed"] == 0


def test_knn_accuracy_on_random_labels_is_chance():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2000, 32)).astype(np.float32)
    y = rng.integers(0, 5, 2000)
    result = knn_accuracy(x, y)
    assert abs(result["top1"] - 0.2) < 0.07  # 400 test images: 3.5 standard deviations
    assert "top5" in result and result["top5"] == 1.0  # 5 classes: always in the top 5


def test_knn_leaves_out_unlabelled_images():
    x, y = clusters(30, 3)
    y[:10] = -1
    result = knn_accuracy(x, y)
    assert result["train"] + result["test"] == 80 and "top5" not in result


def test_no_labels_raises_with_what_to_do():
    x = np.zeros((10, 4), np.float32)
    for evaluate in (lambda: knn_accuracy(x, np.full(10, -1)),
                     lambda: linear_probe(x, np.full(10, -1), [], ProbeParams())):
        with pytest.raises(NoLabels) as err:
            evaluate()
        assert str(err.value) == NO_LABELS_MESSAGE == (
            "the folder has no class sub-folders, so there are no labels to evaluate "
            "against: put each class's images in its own sub-folder")
        assert isinstance(err.value, DataError)


# ---------------------------------------------------------------- linear probe


def test_probe_on_separated_clusters_is_perfect():
    x, y = clusters(30, 5, dim=16)
    names = [f"class{c}" for c in range(5)]
    calls = []
    result = linear_probe(x, y, names, ProbeParams(), progress=lambda d, t: calls.append((d, t)))
    assert result["top1"] == 1.0 and result["top5"] == 1.0
    assert result["per_class"] == {name: 1.0 for name in names}
    assert result["confusion"] == np.diag([6] * 5).tolist()  # rows true, columns predicted
    assert result["train"] == 120 and result["test"] == 30
    assert result["classes"] == names and result["params"]["lr"] == 1.0
    assert calls[-1] == (100, 100) and all(0 < d <= t == 100 for d, t in calls)
    json.dumps(result)  # plain Python, ready to save


def test_probe_sgd_solver_on_separated_clusters():
    x, y = clusters(30, 3, dim=16)
    params = ProbeParams(solver="sgd", epochs=20, batch_size=32)
    result = linear_probe(x, y, ["a", "b", "c"], params)
    assert result["top1"] == 1.0 and "top5" not in result
    assert result["params"]["lr"] == 0.1


def test_probe_on_random_labels_is_chance():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2000, 16)).astype(np.float32)
    y = rng.integers(0, 4, 2000)
    result = linear_probe(x, y, list("abcd"), ProbeParams())
    assert abs(result["top1"] - 0.25) < 0.075  # 400 test images: 3.5 standard deviations


def test_results_carry_the_majority_class_baseline():
    # 60 / 30 / 10 images: the held-out 20% keeps those shares (stratified), so always
    # answering the largest class scores 60%.
    x, _ = clusters(100, 1, dim=8)
    y = np.repeat([0, 1, 2], [60, 30, 10])
    probe = linear_probe(x, y, list("abc"), ProbeParams())
    knn = knn_accuracy(x, y)
    assert probe["majority"] == pytest.approx(0.6) and knn["majority"] == pytest.approx(0.6)
    assert probe["test"] == knn["test"] == 20
    assert majority_share(np.array([1, 1, 0])) == pytest.approx(2 / 3)
    assert majority_share(np.array([], dtype=np.int64)) == 0.0


def test_probe_label_fraction_keeps_at_least_one_per_class():
    counts = [100, 50, 5]
    y = np.repeat(np.arange(3), counts)
    x = np.random.default_rng(9).standard_normal((len(y), 8)).astype(np.float32)
    full = linear_probe(x, y, list("abc"), ProbeParams(label_fraction=1.0))
    tenth = linear_probe(x, y, list("abc"), ProbeParams(label_fraction=0.1))
    # Train splits hold 80, 40, 4 images; 10% of each, rounded, but at least one.
    assert full["train"] == 124
    assert tenth["train"] == 8 + 4 + 1
    assert tenth["test"] == full["test"] == 31
    assert tenth["label_fraction"] == 0.1


def test_probe_is_deterministic_for_a_seed():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((300, 12)).astype(np.float32)
    y = rng.integers(0, 3, 300)
    a = linear_probe(x, y, list("abc"), ProbeParams(seed=4, label_fraction=0.5))
    b = linear_probe(x, y, list("abc"), ProbeParams(seed=4, label_fraction=0.5))
    a.pop("seconds"), b.pop("seconds")
    assert a == b


def test_probe_params_are_validated_by_name():
    with pytest.raises(ValueError, match="label_fraction must be a number greater than 0"):
        ProbeParams(label_fraction=0)
    with pytest.raises(ValueError, match="solver must be one of lbfgs, sgd"):
        ProbeParams(solver="adam")
    with pytest.raises(ValueError, match="label 2 has no class name"):
        linear_probe(np.zeros((6, 2)), np.array([0, 0, 1, 1, 2, 2]), ["a", "b"])


def test_save_result_writes_plain_json(tmp_path: Path):
    result = {"top1": np.float64(0.5), "n": np.int64(3), "bad": float("nan"),
              "confusion": np.eye(2, dtype=np.int64)}
    path = save_result(result, tmp_path / "probes", "knn-last-h")
    assert path == tmp_path / "probes" / "knn-last-h.json"
    assert json.loads(path.read_text()) == {"top1": 0.5, "n": 3, "bad": None,
                                            "confusion": [[1, 0], [0, 1]]}
    with pytest.raises(ValueError, match="result name"):
        save_result({}, tmp_path, "../escape")


# ---------------------------------------------------------------- maps


def test_map_params_validation_and_key():
    with pytest.raises(ValueError, match="method must be one of umap, pca"):
        MapParams(method="tsne")
    with pytest.raises(ValueError, match="n_neighbors must be an integer from 2 to 1000"):
        MapParams(n_neighbors=1)
    with pytest.raises(ValueError, match="min_dist"):
        MapParams(min_dist=2.0)
    assert MapParams().key() == MapParams().key()
    assert MapParams().key() != MapParams(n_neighbors=30).key()
    assert MapParams().key() != MapParams(seed=1).key()
    # PCA ignores UMAP's settings, so they do not make a new PCA map.
    assert MapParams(method="pca").key() == MapParams(method="pca", n_neighbors=30).key()
    assert MapParams(method="pca", n_neighbors=30).to_dict()["n_neighbors"] == 30


def test_pca_map_equals_scikit_learn_up_to_sign():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(11)
    for shape in ((300, 20), (20, 300)):  # covariance and Gram-matrix paths
        x = (rng.standard_normal(shape) * np.linspace(3, 0.1, shape[1])).astype(np.float32)
        ours = pca_map(x, metric="euclidean")
        assert ours.shape == (shape[0], 2) and ours.dtype == np.float32
        theirs = PCA(2, svd_solver="full").fit_transform(x.astype(np.float64))
        np.testing.assert_allclose(np.abs(ours), np.abs(theirs), atol=1e-4)
        signs = np.sign((ours * theirs).sum(axis=0))
        np.testing.assert_allclose(ours, theirs * signs, atol=1e-4)
        # Cosine: the same as the PCA of unit-length rows.
        np.testing.assert_allclose(np.abs(pca_map(x)),
                                   np.abs(pca_map(normalise(x), metric="euclidean")),
                                   atol=1e-5)
        np.testing.assert_array_equal(pca_map(x), pca_map(x.copy()))


def test_randomised_pca_finds_the_same_axes(monkeypatch):
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(12)
    latent = rng.standard_normal((3000, 4)) * [10, 6, 2, 1]
    axes = np.linalg.qr(rng.standard_normal((256, 4)))[0]
    x = (latent @ axes.T + 0.1 * rng.standard_normal((3000, 256))).astype(np.float32)
    monkeypatch.setattr(maps, "_EXACT_PCA_FLOPS", 0)
    ours = pca_map(x, metric="euclidean", seed=3)
    np.testing.assert_array_equal(ours, pca_map(x, metric="euclidean", seed=3))
    theirs = PCA(2, svd_solver="full").fit_transform(x.astype(np.float64))
    np.testing.assert_allclose(np.abs(ours), np.abs(theirs), atol=1e-3 * np.abs(theirs).max())


def test_pca_map_of_degenerate_inputs():
    assert np.array_equal(pca_map(np.ones((1, 5))), np.zeros((1, 2)))
    two = pca_map(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    np.testing.assert_allclose(np.abs(two[:, 0]), [np.sqrt(0.5)] * 2, atol=1e-6)
    np.testing.assert_allclose(two[:, 1], 0.0, atol=1e-6)  # rank 1: no second axis
    assert pca_map(np.arange(5.0)[:, None]).shape == (5, 2)
    with pytest.raises(ValueError, match="non-empty 2-D array"):
        pca_map(np.zeros((0, 3)))


def test_tiny_inputs_fall_back_to_pca():
    messages = []
    x = np.random.default_rng(13).standard_normal((3, 6)).astype(np.float32)
    out = compute_map(x, MapParams(method="umap"), progress=messages.append)
    np.testing.assert_array_equal(out, pca_map(x))
    assert "too few for UMAP, using PCA" in messages[0]


@pytest.fixture
def numba_cache(request, monkeypatch, tmp_path_factory) -> Path:
    """A numba cache that outlives the test session (in pytest's own cache folder), so
    only the first run on a machine compiles UMAP's code."""
    cache = getattr(request.config, "cache", None)
    folder = (Path(cache.mkdir("numba")) if cache is not None
              else tmp_path_factory.mktemp("numba"))
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(folder))
    return folder


def test_umap_map_is_reproducible_and_keeps_clusters(numba_cache):
    x, y = clusters(50, 4)
    messages = []
    params = MapParams(n_neighbors=10, seed=5)
    first = compute_map(x, params, progress=messages.append)
    assert first.shape == (200, 2) and first.dtype == np.float32
    assert np.isfinite(first).all()
    np.testing.assert_array_equal(first, compute_map(x, params))
    # Separated clusters stay separated: every point is nearest its own cluster's centre.
    centres = np.stack([first[y == c].mean(0) for c in range(4)])
    nearest = np.argmin(((first[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(nearest, y)
    assert any("UMAP map of 200 points" in m for m in messages)
    assert maps.configure_numba_cache() == numba_cache


def test_configure_numba_cache_uses_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    folder = maps.configure_numba_cache()
    assert folder == user_cache_dir() / "numba" and folder.is_dir()
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))  # a folder chosen by the user wins
    assert maps.configure_numba_cache() == tmp_path


def test_map_cache_is_reused_and_keyed_by_params_and_features(tmp_path, monkeypatch):
    x = np.random.default_rng(14).standard_normal((50, 8)).astype(np.float32)
    params = MapParams(method="pca")
    first = load_or_compute_map(x, params, tmp_path, "last-h")
    npy = tmp_path / f"pca-last-h-{params.key()}.npy"
    assert npy.is_file()
    assert json.loads(npy.with_suffix(".json").read_text())["params"] == params.to_dict()

    def fail(*args, **kwargs):
        raise AssertionError("the map should have come from the cache")

    monkeypatch.setattr(maps, "compute_map", fail)
    messages = []
    np.testing.assert_array_equal(
        load_or_compute_map(x, params, tmp_path, "last-h", progress=messages.append), first)
    assert "Loaded" in messages[0]
    monkeypatch.undo()

    computed = []

    def counting(features, p, **kwargs):
        computed.append(p)
        return pca_map(features, p.metric, p.seed)

    monkeypatch.setattr(maps, "compute_map", counting)
    load_or_compute_map(x, MapParams(method="pca", metric="euclidean"), tmp_path, "last-h")
    assert len(list(tmp_path.glob("*.npy"))) == 2  # different params, different file
    load_or_compute_map(x + 1, params, tmp_path, "last-h")  # same tag, new features
    npy.write_bytes(b"not a numpy file")  # a damaged file is recomputed, not trusted
    load_or_compute_map(x + 1, params, tmp_path, "last-h")
    assert len(computed) == 3
    with pytest.raises(ValueError, match="map tag"):
        load_or_compute_map(x, params, tmp_path, "a/b")


def test_umap_of_many_points_is_fitted_on_a_sample(numba_cache):
    """Above fit_sample points, the sample's coordinates are a UMAP fit of the sample alone
    and the other points are placed by its transform, near their own cluster."""
    x, y = clusters(60, 3)  # 180 points
    params = MapParams(n_neighbors=10, seed=3, fit_sample=100)
    messages = []
    out = compute_map(x, params, progress=messages.append)
    assert out.shape == (180, 2) and np.isfinite(out).all()
    fit = np.sort(np.random.default_rng(3).choice(180, 100, replace=False))
    alone = compute_map(x[fit], MapParams(n_neighbors=10, seed=3))
    np.testing.assert_array_equal(out[fit], alone)
    assert any("Placing 80 of 80 more points" in m for m in messages)
    centres = np.stack([out[fit][y[fit] == c].mean(0) for c in range(3)])
    rest = np.setdiff1d(np.arange(180), fit)
    nearest = np.argmin(((out[rest][:, None] - centres[None]) ** 2).sum(-1), axis=1)
    assert (nearest == y[rest]).mean() >= 0.95
    # the default sample size keeps the key of maps saved before it was a setting
    assert "fit_sample" not in MapParams().relevant()
    assert MapParams(fit_sample=100).key() != MapParams().key()
