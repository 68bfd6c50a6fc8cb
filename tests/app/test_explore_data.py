"""app.model.explore_data: a saved map and neighbour queries of one run share one memory-mapped
set of embeddings and one search index, the answers are a brute-force search's, and an image
is found on the map by its path."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from app.model import explore_data
from app.model.explore_data import saved_embeddings, saved_map, saved_neighbours
from engine.evaluate import embed, neighbours
from engine.evaluate.maps import MapParams, features_fingerprint, map_path
from engine.run.layout import RunDir

N = 600


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run without checkpoints whose random-init embeddings and PCA map are saved."""
    run = tmp_path / "run"
    layout = RunDir(run)
    files = layout.embedding("random")
    files.path.mkdir(parents=True)
    layout.config.write_text(json.dumps({"data": str(tmp_path / "images")}), encoding="utf-8")
    rng = np.random.default_rng(0)
    h = rng.standard_normal((N, 32)).astype(np.float32)
    np.save(files.features, h)
    np.save(files.projections, rng.standard_normal((N, 8)).astype(np.float32))
    files.index.write_text(json.dumps({
        "checkpoint": "random", "checkpoint_sha256": "random", "root": str(tmp_path / "images"),
        "classes": ["a", "b"], "paths": [f"{'ab'[i % 2]}/{i}.png" for i in range(N)],
        "labels": [i % 2 for i in range(N)]}), encoding="utf-8")
    params = MapParams(method="pca")
    path = map_path(layout.maps, params, "random-h")
    path.parent.mkdir(parents=True)
    np.save(path, rng.standard_normal((N, 2)).astype(np.float32))
    path.with_suffix(".json").write_text(json.dumps({"features_fingerprint":
                                                     features_fingerprint(h)}))
    explore_data._embeddings_cache.clear()
    explore_data._index_cache.clear()
    return run


def test_map_and_neighbours_share_one_mapped_set_and_one_index(run_dir, monkeypatch):
    loads = []
    real = explore_data.load_embeddings
    monkeypatch.setattr(explore_data, "load_embeddings",
                        lambda *a, **k: loads.append(a) or real(*a, **k))
    monkeypatch.setattr(neighbours, "FAST_MIN_IMAGES", 100)  # the 100k search, on 600
    data = saved_map(run_dir, "random", "h", MapParams(method="pca"))
    assert data is not None and len(data) == N
    emb = saved_embeddings(run_dir, "random")
    assert emb is not None and isinstance(emb.features, np.memmap)
    first = saved_neighbours(run_dir, "random", "h", 5, 7)
    index = explore_data._index_cache[next(iter(explore_data._index_cache))]
    again = saved_neighbours(run_dir, "random", "h", 9, 7)
    assert len(loads) == 1  # one open set for the map and both queries
    assert explore_data._index_cache[next(iter(explore_data._index_cache))] is index

    h = np.load(RunDir(run_dir).embedding("random").features).astype(np.float64)
    h /= np.linalg.norm(h, axis=1, keepdims=True)
    for query, result in ((5, first), (9, again)):
        sims = h @ h[query]
        sims[query] = -np.inf
        expected = np.argsort(-sims)[:7]
        assert result is not None and result["query"]["index"] == query
        assert [n["index"] for n in result["neighbours"]] == expected.tolist()
        np.testing.assert_allclose([n["score"] for n in result["neighbours"]],
                                   sims[expected], atol=1e-5)
        assert result["neighbours"][0]["path"] == emb.paths[expected[0]]

    # embedding again (a new index.json) opens the new files
    files = RunDir(run_dir).embedding("random")
    new = np.random.default_rng(5).standard_normal((N, 32)).astype(np.float32)
    embed._save_npy(files.features, new)
    stamp = files.index.stat().st_mtime_ns + 10**9
    os.utime(files.index, ns=(stamp, stamp))
    result = saved_neighbours(run_dir, "random", "h", 5, 3)
    assert len(loads) == 2 and result is not None
    sims = (new @ new[5]) / np.linalg.norm(new, axis=1) / np.linalg.norm(new[5])
    sims[5] = -np.inf
    assert [n["index"] for n in result["neighbours"]] == np.argsort(-sims)[:3].tolist()


def test_an_image_is_found_on_the_map_by_its_absolute_path(run_dir):
    data = saved_map(run_dir, "random", "h", MapParams(method="pca"))
    assert data is not None
    assert data.index_of(data.absolute_path(0)) == 0
    assert data.index_of(data.absolute_path(N - 1)) == N - 1
    assert data.index_of(str(Path(data.root) / "a" / "not-there.png")) is None
    assert data.index_of("/somewhere/else/b/1.png") is None


def test_two_runs_queried_in_turn_stay_open(run_dir, tmp_path, monkeypatch):
    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    loads, builds = [], []
    real_load, real_index = explore_data.load_embeddings, explore_data.NeighbourIndex
    monkeypatch.setattr(explore_data, "load_embeddings",
                        lambda *a, **k: loads.append(a) or real_load(*a, **k))
    monkeypatch.setattr(explore_data, "NeighbourIndex",
                        lambda *a, **k: builds.append(a) or real_index(*a, **k))
    for run in (run_dir, other, run_dir, other, run_dir):  # the Compare page's two sides
        assert saved_neighbours(run, "random", "h", 1, 4) is not None
    assert len(loads) == len(builds) == 2


def test_the_index_warmed_after_the_map_serves_the_first_query(run_dir, monkeypatch):
    built = []
    real = explore_data.NeighbourIndex
    monkeypatch.setattr(explore_data, "NeighbourIndex",
                        lambda *a, **k: built.append(1) or real(*a, **k))
    explore_data.warm_neighbour_index(run_dir, "random", "h")
    assert built == [1]
    result = saved_neighbours(run_dir, "random", "h", 3, 4)
    assert result is not None and built == [1]  # the query used the warmed index
    explore_data.warm_neighbour_index(run_dir / "missing", "random", "h")  # no error
