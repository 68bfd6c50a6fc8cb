"""Exploring a real (tiny) trained run: embed, map, neighbours, kNN, probe, export, CLI."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from engine.config.train_config import TrainConfig
from engine.data.scan import DataError
from engine.evaluate import explore
from engine.evaluate.embed import RunError, checkpoint_path, list_checkpoints, load_encoder
from engine.evaluate.knn import NoLabels
from engine.evaluate.maps import MapParams
from engine.evaluate.probe import ProbeParams
from engine.run.events import EventWriter
from engine.training.loop import train
from tests.helpers.folders import make_folder
from tests.helpers.settings import TINY


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short SimCLR run shared by the tests of this file."""
    tmp = tmp_path_factory.mktemp("explore")
    folder = make_folder(tmp / "shapes")
    cfg = TrainConfig.from_dict({**TINY, "data": str(folder), "epochs": 2})
    result = train(cfg, runs_root=tmp / "runs", cache_dir=tmp / "cache",
                   events=EventWriter(None))
    assert result.status == "finished"
    return result.run_dir, tmp / "cache", folder


def test_checkpoints_are_listed_and_resolved(trained):
    run_dir, _, _ = trained
    assert list_checkpoints(run_dir) == ["epoch-0002", "last"]
    assert checkpoint_path(run_dir, "random") is None
    with pytest.raises(RunError, match="no checkpoint 'epoch-0099'.*available: epoch-0002"):
        checkpoint_path(run_dir, "epoch-0099")
    with pytest.raises(RunError, match="not a run folder"):
        load_encoder(run_dir.parent, "last")


def test_embeddings_are_saved_reused_and_match_the_encoder(trained):
    run_dir, cache, folder = trained
    emb = explore.embeddings(run_dir, "last", cache_dir=cache, device="cpu")
    assert emb.features.shape == (24, 512) and emb.projections.shape == (24, 16)
    assert emb.folder == run_dir / "embeddings" / "last"
    assert emb.classes == ["circles", "squares"] and sorted(set(emb.labels.tolist())) == [0, 1]
    # Recompute one image by hand: decode, centre crop, normalise, encode.
    from engine.data.cache import decode_image

    encoder, cfg, _ = load_encoder(run_dir, "last")
    pixels = decode_image(folder / emb.paths[3], cfg.cache_size, max_pixels=10**8)
    x = torch.from_numpy(np.array(pixels)).permute(2, 0, 1).float() / 255
    top = (cfg.cache_size - cfg.image_size) // 2
    x = x[:, top:top + cfg.image_size, top:top + cfg.image_size]
    mean = torch.tensor(cfg.augment.normalize_mean).view(3, 1, 1)
    std = torch.tensor(cfg.augment.normalize_std).view(3, 1, 1)
    with torch.no_grad():
        h, z = encoder(((x - mean) / std)[None])  # fp32, NCHW: the plain reference
    index = json.loads((emb.folder / "index.json").read_text())
    if index["precision"] == "fp32":
        np.testing.assert_allclose(emb.features[3], h[0].numpy(), atol=1e-5)
    else:  # a bf16 run on a CPU with native bf16: bf16 keeps 8 significant bits
        assert index["precision"] == "bf16" and cfg.precision == "bf16"
        ref = h[0].numpy()
        assert np.linalg.norm(emb.features[3] - ref) / np.linalg.norm(ref) < 0.03
        assert float(emb.features[3] @ ref) / (np.linalg.norm(emb.features[3])
                                               * np.linalg.norm(ref)) > 0.999
    # The second call reads the saved files instead of encoding again.
    mtime = (emb.folder / "features.npy").stat().st_mtime_ns
    again = explore.embeddings(run_dir, "last", cache_dir=cache, device="cpu")
    assert (again.folder / "features.npy").stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(again.features, emb.features)
    random = explore.embeddings(run_dir, "random", cache_dir=cache, device="cpu")
    assert not np.allclose(random.features, emb.features)


def test_map_is_cached_per_parameters(trained):
    run_dir, cache, _ = trained
    params = MapParams(method="pca")
    first = explore.make_map(run_dir, "last", params=params, cache_dir=cache, device="cpu")
    assert first["coords"].shape == (24, 2)
    files = sorted(p.name for p in (run_dir / "maps").glob("*.npy"))
    second = explore.make_map(run_dir, "last", params=params, cache_dir=cache, device="cpu")
    np.testing.assert_array_equal(first["coords"], second["coords"])
    assert sorted(p.name for p in (run_dir / "maps").glob("*.npy")) == files
    explore.make_map(run_dir, "last", space="z", params=params, cache_dir=cache, device="cpu")
    assert len(list((run_dir / "maps").glob("*.npy"))) == len(files) + 1


def test_neighbours_of_an_index_and_of_a_file(trained, tmp_path):
    run_dir, cache, folder = trained
    result = explore.neighbours(run_dir, 5, 4, cache_dir=cache, device="cpu")
    assert result["neighbours"][0]["index"] == 5
    assert result["neighbours"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    scores = [n["score"] for n in result["neighbours"]]
    assert scores == sorted(scores, reverse=True) and len(scores) == 4
    emb = explore.embeddings(run_dir, "last", cache_dir=cache)
    # An external file that is a copy of image 7 finds image 7 first.
    copy = tmp_path / "query.png"
    copy.write_bytes((folder / emb.paths[7]).read_bytes())
    by_file = explore.neighbours(run_dir, str(copy), 3, cache_dir=cache, device="cpu")
    assert by_file["neighbours"][0]["index"] == 7
    assert by_file["neighbours"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(ValueError, match="out of range"):
        explore.neighbours(run_dir, 500, 3, cache_dir=cache)
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    with pytest.raises(DataError, match="cannot be used as a query"):
        explore.neighbours(run_dir, str(bad), 3, cache_dir=cache)
    with pytest.raises(DataError, match="neither an image index"):
        explore.neighbours(run_dir, str(tmp_path / "missing.png"), 3, cache_dir=cache)


def test_knn_and_probe_are_saved_with_their_settings(trained):
    run_dir, cache, _ = trained
    knn = explore.knn(run_dir, "last", k=5, cache_dir=cache, device="cpu")
    assert 0 <= knn["top1"] <= 1 and knn["test"] > 0 and knn["checkpoint"] == "last"
    saved = json.loads((run_dir / "probes" / "knn-last-h.json").read_text())
    assert saved["top1"] == knn["top1"] and saved["k"] == 5
    probe = explore.probe(run_dir, "random", params=ProbeParams(epochs=20), cache_dir=cache)
    assert len(probe["confusion"]) == 2 and set(probe["per_class"]) == {"circles", "squares"}
    assert (run_dir / "probes" / "probe-random-h-labels1.json").is_file()


def test_unlabelled_folder_says_so(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    rng = np.random.default_rng(0)
    for i in range(16):
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(
            flat / f"{i}.png")
    cfg = TrainConfig.from_dict({**TINY, "data": str(flat), "max_steps": 1})
    result = train(cfg, runs_root=tmp_path / "runs", cache_dir=tmp_path / "cache",
                   events=EventWriter(None))
    with pytest.raises(NoLabels, match="no class sub-folders"):
        explore.knn(result.run_dir, "last", cache_dir=tmp_path / "cache")
    # Everything label-free still works.
    got = explore.neighbours(result.run_dir, 0, 3, cache_dir=tmp_path / "cache")
    assert got["neighbours"][0]["class"] is None


def test_export_encoder_and_embeddings(trained, tmp_path):
    run_dir, cache, _ = trained
    result = explore.export_encoder_of_run(run_dir, "torchvision")
    assert result["verified"] and result["path"].startswith(str(run_dir / "exports"))
    meta = json.loads(open(result["metadata"]).read())
    assert meta["architecture"] == "resnet18" and meta["small_stem"] is True
    assert meta["init"] == {"weights": "random"}
    out = explore.export_embeddings(run_dir, tmp_path / "e.csv", cache_dir=cache)
    rows = list(csv.reader(open(out["path"])))
    assert rows[0][:4] == ["path", "label", "class", "h0"] and len(rows) == 25
    assert len(rows[1]) == 3 + 512
    npy = explore.export_embeddings(run_dir, tmp_path / "e.npy", space="z", cache_dir=cache)
    assert np.load(npy["path"]).shape == (24, 16)
    with pytest.raises(ValueError, match=".npy or .csv"):
        explore.export_embeddings(run_dir, tmp_path / "e.txt", cache_dir=cache)


@pytest.mark.parametrize(("fmt", "space", "dim"), [("npy", "z", 16), ("csv", "h", 512)])
def test_embeddings_load_snippet_reads_the_file_alone(trained, tmp_path, fmt, space, dim):
    run_dir, cache, _ = trained
    out = explore.export_embeddings(run_dir, tmp_path / f"e.{fmt}", space=space,
                                    cache_dir=cache)
    meta = json.loads(open(out["metadata"]).read())
    assert out["load_snippet"] == meta["load_snippet"]
    assert repr(out["path"]) in meta["load_snippet"]  # the file by its absolute path
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run([sys.executable, "-I", "-c", out["load_snippet"]], cwd=elsewhere,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"{space}: (24, {dim})"]
    namespace: dict = {}
    exec(out["load_snippet"], namespace)  # our own snippet
    emb = explore.embeddings(run_dir, cache_dir=cache)
    expected = emb.projections if space == "z" else emb.features
    np.testing.assert_allclose(namespace[space], expected, rtol=1e-6, atol=1e-7)
    if fmt == "csv":
        assert namespace["paths"] == emb.paths


def cli(*args):
    return subprocess.run([sys.executable, "-m", "engine", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_cli_verbs_with_json(trained, tmp_path):
    run_dir, cache, _ = trained
    out = cli("knn", "--run", run_dir, "--cache-dir", cache, "-k", "3", "--baseline", "--json")
    assert out.returncode == 0, out.stderr
    results = [json.loads(line) for line in out.stdout.splitlines()]
    finals = [r for r in results if r["type"] == "result"]
    assert [r["checkpoint"] for r in finals] == ["last", "random"]
    out = cli("map", "--run", run_dir, "--cache-dir", cache, "--method", "pca",
              "--csv", tmp_path / "map.csv")
    assert out.returncode == 0, out.stderr
    assert "pca map of 24 images" in out.stdout
    assert len((tmp_path / "map.csv").read_text().splitlines()) == 25
    out = cli("neighbours", "--run", run_dir, "--cache-dir", cache, "--query", "999")
    assert out.returncode == 2 and "out of range" in out.stderr
    out = cli("probe", "--run", run_dir, "--label-fraction", "2")
    assert out.returncode == 2 and "label_fraction" in out.stderr
    out = cli("export", "--run", run_dir, "--format", "torchscript", "--out",
              tmp_path / "enc", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["verified"] and result["path"].endswith(".torchscript")
    with open(result["metadata"]) as f:
        assert result["load_snippet"] == json.load(f)["load_snippet"]
    assert repr(result["path"]) in result["load_snippet"]


def test_random_init_needs_no_checkpoint_file(trained, tmp_path):
    """A run whose first epoch has not ended yet has config.json but no checkpoint: its
    untrained encoder can still be embedded, mapped, queried and probed."""
    import shutil

    run_dir, cache, _ = trained
    young = tmp_path / run_dir.name
    shutil.copytree(run_dir, young, ignore=shutil.ignore_patterns(
        "checkpoints", "embeddings", "maps", "probes", "exports"))
    assert list_checkpoints(young) == []
    out = cli("map", "--run", young, "--cache-dir", cache, "--checkpoint", "random",
              "--method", "pca", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["checkpoint"] == "random" and len(result["coords"]) == 24
    out = cli("knn", "--run", young, "--cache-dir", cache, "--checkpoint", "random",
              "-k", "3", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1])["checkpoint"] == "random"
    hits = explore.neighbours(young, 0, 3, checkpoint="random", cache_dir=cache, device="cpu")
    assert hits["checkpoint"] == "random" and len(hits["neighbours"]) == 3
