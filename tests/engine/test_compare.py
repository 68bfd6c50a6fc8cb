"""Comparing two embeddings: the neighbour overlap against a brute-force numpy reference, a
run against itself and against its untrained encoder, runs on different folders matched by
path (and content hash), a refusal when too few images match, and the CLI verb."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from engine.cli.main import main
from engine.config.train_config import TrainConfig
from engine.data.scan import DataError
from engine.evaluate import compare as cmp
from engine.evaluate import explore
from engine.run.events import EventWriter
from engine.run.layout import RunDir
from engine.training.loop import train
from tests.helpers.copied_runs import run_on_folder
from tests.helpers.folders import make_folder
from tests.helpers.settings import TINY


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short SimCLR run on 2 classes x 12 images, shared by the tests of this file."""
    tmp = tmp_path_factory.mktemp("compare")
    folder = make_folder(tmp / "shapes")
    cfg = TrainConfig.from_dict({**TINY, "data": str(folder), "epochs": 2})
    result = train(cfg, runs_root=tmp / "runs", cache_dir=tmp / "cache",
                   events=EventWriter(None))
    assert result.status == "finished"
    return result.run_dir, tmp / "cache", folder


def _reference_overlap(xa, xb, k):
    """|N_A ∩ N_B| / k per row, each image's k nearest by cosine found by a full sort."""
    def nearest(x):
        v = np.asarray(x, np.float64)
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
        sims = v @ v.T
        np.fill_diagonal(sims, -np.inf)
        return [set(np.argsort(-row, kind="stable")[:k].tolist()) for row in sims]

    return np.array([len(a & b) / k for a, b in zip(nearest(xa), nearest(xb))])


@pytest.mark.parametrize("k", [1, 3, 10])
def test_overlap_of_blocked_neighbours_equals_a_brute_force(k):
    from engine.evaluate.curate import knn_blocked

    rng = np.random.default_rng(k)
    xa = rng.normal(size=(57, 6)).astype(np.float32)
    xb = xa + rng.normal(scale=0.7, size=xa.shape).astype(np.float32)  # a perturbed space
    got = cmp.neighbour_overlap(knn_blocked(xa, k, block=5)[0], knn_blocked(xb, k, block=9)[0])
    want = _reference_overlap(xa, xb, k)
    np.testing.assert_allclose(got, want)
    assert 0 < want.mean() < 1  # neither all the same nor all different


def test_images_are_matched_by_relative_path_in_a_order():
    ia, ib = cmp.match_images(["a/1.png", "a/2.png", "b/3.png", "c.png"],
                              ["b/3.png", "x.png", "a/1.png", "c.png"])
    assert ia.tolist() == [0, 2, 3] and ib.tolist() == [2, 0, 3]
    assert cmp.match_images([], ["a.png"])[0].size == 0


def _vectors(run_dir, checkpoint, cache, space="h"):
    emb = explore.embeddings(run_dir, checkpoint, cache_dir=cache, device="cpu")
    return emb, emb.features if space == "h" else emb.projections


def test_a_run_against_itself_and_against_random_init(trained):
    run_dir, cache, _ = trained
    same = cmp.compare(run_dir, "last", run_dir, "last", k=5, cache_dir=cache, device="cpu")
    assert same["images"] == 24 and same["mean_overlap"] == 1.0
    assert set(same["overlap"]) == {1.0} and same["shares"]["1"] == 1.0
    assert same["index_a"] == same["index_b"] == list(range(24))

    result = cmp.compare(run_dir, "last", run_dir, "random", space="z", k=5, top=4,
                         cache_dir=cache, device="cpu")
    _, za = _vectors(run_dir, "last", cache, "z")
    _, zb = _vectors(run_dir, "random", cache, "z")
    want = _reference_overlap(za, zb, 5)
    np.testing.assert_allclose(result["overlap"], want, atol=1e-6)
    assert result["mean_overlap"] == pytest.approx(want.mean(), abs=1e-6)
    assert result["mean_overlap"] < 1
    assert result["histogram"] == np.bincount(np.rint(want * 5).astype(int),
                                              minlength=6).tolist()
    assert result["shares"]["<0.5"] == pytest.approx((want < 0.5).mean())
    # The most changed first (lowest overlap, ties by index); top keeps the first 4.
    order = sorted(range(24), key=lambda i: (want[i], i))
    assert [c["index"] for c in result["changed"]] == order[:4]
    assert result["changed"][0]["overlap"] == pytest.approx(want[order[0]])
    assert result["changed"][0]["class"] in ("circles", "squares")
    saved = json.loads(open(result["path"]).read())
    assert result["path"] == str(RunDir(run_dir).curation / "compare-last-vs-random-z.json")
    assert len(saved["changed"]) == 24 and saved["mean_overlap"] == result["mean_overlap"]


def test_runs_on_different_folders_are_matched_by_path_and_content(trained, tmp_path):
    run_dir, cache, folder = trained
    other = shutil.copytree(folder, tmp_path / "subset")
    removed = sorted(other.rglob("*.png"))[:5]
    for path in removed:
        path.unlink()
    changed = sorted(other.rglob("*.jpg"))[0]  # same path, other picture
    Image.new("RGB", (28, 28), (200, 10, 10)).save(changed)
    run_b = run_on_folder(run_dir, other, tmp_path / "run-b")
    result = cmp.compare(run_dir, "last", run_b, "random", k=4, cache_dir=cache,
                         device="cpu")
    assert result["images"] == 24 - 5 - 1
    assert result["different_content"] == 1 and result["only_a"] == 5
    assert result["only_b"] == 0
    emb_a, xa = _vectors(run_dir, "last", cache)
    emb_b, xb = _vectors(run_b, "random", cache)
    kept = [p for p in emb_a.paths if (other / p).is_file() and other / p != changed]
    ia = [emb_a.paths.index(p) for p in kept]
    ib = [emb_b.paths.index(p) for p in kept]
    assert result["index_a"] == ia and result["index_b"] == ib
    np.testing.assert_allclose(result["overlap"], _reference_overlap(xa[ia], xb[ib], 4),
                               atol=1e-6)
    assert result["path"].endswith(f"compare-last-vs-{run_b.name}-random-h.json")


def test_too_few_matching_images_are_refused_with_a_message(trained, tmp_path):
    run_dir, cache, _ = trained
    elsewhere = make_folder(tmp_path / "others", per_class=3, classes=("cats", "dogs"))
    run_b = run_on_folder(run_dir, elsewhere, tmp_path / "run-b")
    with pytest.raises(DataError, match=r"only 0 images are in both runs .*needs at least 11"):
        cmp.compare(run_dir, "last", run_b, "last", k=10, cache_dir=cache, device="cpu")
    with pytest.raises(ValueError, match="space must be h"):
        cmp.compare(run_dir, "last", run_dir, "last", space="q", cache_dir=cache)


def test_cli_json_result_and_text(trained, capsys):
    run_dir, cache, _ = trained
    code = main(["compare", "--run", str(run_dir), "--other-checkpoint", "random", "-k", "3",
                 "--top", "5", "--cache-dir", str(cache), "--device", "cpu", "--json"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    results = [e for e in lines if e["type"] == "result"]
    assert code == 0 and len(results) == 1
    r = results[0]
    assert r["k"] == 3 and r["images"] == 24 and len(r["changed"]) == 5
    assert r["a"]["checkpoint"] == "last" and r["b"]["checkpoint"] == "random"
    _, xa = _vectors(run_dir, "last", cache)
    _, xb = _vectors(run_dir, "random", cache)
    np.testing.assert_allclose(r["overlap"], _reference_overlap(xa, xb, 3), atol=1e-6)
    assert main(["compare", "--run", str(run_dir), "--other-checkpoint", "random",
                 "--cache-dir", str(cache), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "last (h) vs random (h)" in out and "mean overlap of the 10 nearest" in out
    assert main(["compare", "--run", str(run_dir), "-k", "30", "--cache-dir",
                 str(cache)]) == 2
    assert "needs at least 31" in capsys.readouterr().err
