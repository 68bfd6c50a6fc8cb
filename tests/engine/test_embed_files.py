"""Embedding files: memory-mapped on load (an older run's folder loads the same way), their
size said before they are computed, and a disk too full for them refused up front."""

from __future__ import annotations

import json
import re
import shutil
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

from engine.evaluate import embed
from engine.evaluate.embed import RunError, embed_run, load_embeddings, storage_plan
from engine.run.layout import EmbeddingFiles, RunDir
from tests.helpers.folders import make_folder
from tests.helpers.training import run


def old_folder(folder: Path, n: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """An embeddings folder as the first engines wrote it: float32 .npy files and an
    index.json with only the keys they wrote."""
    rng = np.random.default_rng(0)
    h = rng.standard_normal((n, 16)).astype(np.float32)
    z = rng.standard_normal((n, 4)).astype(np.float32)
    folder.mkdir(parents=True)
    np.save(folder / "features.npy", h)
    np.save(folder / "projections.npy", z)
    (folder / "index.json").write_text(json.dumps({
        "checkpoint": "last", "checkpoint_sha256": "abc", "root": "/data", "classes": ["a"],
        "paths": [f"a/{i}.png" for i in range(n)], "labels": [0] * n}), encoding="utf-8")
    return h, z


def test_an_older_folder_loads_memory_mapped_and_read_only(tmp_path):
    h, z = old_folder(tmp_path / "last")
    emb = load_embeddings(tmp_path / "last")
    assert isinstance(emb.features, np.memmap) and isinstance(emb.projections, np.memmap)
    assert emb.features.dtype == np.float32 and not emb.features.flags.writeable
    np.testing.assert_array_equal(emb.features, h)
    np.testing.assert_array_equal(emb.projections, z)
    assert emb.paths[3] == "a/3.png" and emb.labels.tolist() == [0] * 30
    assert emb.nbytes == 30 * (16 + 4) * 4
    with pytest.raises(ValueError):
        emb.features[0, 0] = 1.0  # nobody changes the saved record by accident


def test_a_damaged_folder_says_to_embed_again(tmp_path):
    old_folder(tmp_path / "last")
    data = (tmp_path / "last" / "features.npy").read_bytes()
    (tmp_path / "last" / "features.npy").write_bytes(data[:len(data) // 2])
    with pytest.raises(RunError, match="cannot be read .*contrastive-engine embed"):
        load_embeddings(tmp_path / "last")


def test_storage_plan_says_the_size_and_refuses_a_full_disk(tmp_path, monkeypatch):
    need, text = storage_plan(tmp_path, 100_000, 2048, 128)
    assert need == 100_000 * 2176 * 4
    assert text.startswith("embeddings of 100,000 images: h 2048-d + z 128-d float32 = "
                           f"0.87 GB in {tmp_path} (")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 5 * 10**8,
                                                                 5 * 10**8))
    with pytest.raises(RunError, match=r"not enough disk space for the embeddings of "
                                       r"100,000 images.*= 0.87 GB in .*\(0.50 GB free\)"):
        storage_plan(tmp_path, 100_000, 2048, 128)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("embed-files")
    folder = make_folder(tmp / "shapes", per_class=6)
    result = run({"data": str(folder), "max_steps": 1, "knn_every": 0}, tmp)
    return result.run_dir, tmp / "cache"


def test_embedding_says_its_size_first_and_writes_float32(trained, tmp_path, monkeypatch):
    run_dir, cache = trained
    said: list[str] = []
    order: list[str] = []
    monkeypatch.setattr(embed, "_save_npy", lambda path, array, save=embed._save_npy: (
        order.append("save"), save(path, array))[1])
    emb = embed_run(run_dir, "last", device="cpu", cache_dir=cache, force=True,
                    message=lambda text: (said.append(text), order.append("said")))
    files = EmbeddingFiles(RunDir(run_dir).embedding("last").path)
    h, z = np.load(files.features), np.load(files.projections)
    assert h.dtype == z.dtype == np.float32
    assert len(said) == 1
    assert said[0].startswith(f"Embeddings of 12 images: h {h.shape[1]}-d + z {z.shape[1]}-d "
                              f"float32 = {(h.nbytes + z.nbytes) / 1e3:.0f} kB in {files.path} (")
    assert re.fullmatch(r".* \((\d+\.\d\d GB|\d+\.\d MB|\d+ kB) free\)", said[0])
    assert order == ["said", "save", "save"]
    assert emb.nbytes == h.nbytes + z.nbytes
    np.testing.assert_array_equal(emb.features, h)


def test_a_full_disk_stops_embedding_before_it_starts(trained, monkeypatch):
    run_dir, cache = trained
    monkeypatch.setattr(embed, "free_bytes", lambda folder: 100)
    monkeypatch.setattr(embed, "embed_cache", lambda *a, **k: pytest.fail("embedded"))
    with pytest.raises(RunError, match="not enough disk space for the embeddings of 12 "
                                       "images"):
        embed_run(run_dir, "last", device="cpu", cache_dir=cache, force=True)
