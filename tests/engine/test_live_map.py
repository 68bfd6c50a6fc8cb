"""The live map made while training: its layout (PCA, Procrustes), its files and events, and
that it neither changes training nor restarts on a resume."""

import json

import numpy as np
import pytest
import torch

from engine.config.train_config import TrainConfig
from engine.evaluate import explore
from engine.evaluate.live_map import pca_layout, procrustes, sample_rows, unit_scale
from engine.run.checkpoint import load_checkpoint
from engine.run.events import EventWriter
from engine.run.layout import RunDir
from engine.training.loop import train
from tests.helpers.folders import make_flat_folder, make_folder
from tests.helpers.training import events_of, run


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path / "shapes")


def _numpy_pca(features: np.ndarray) -> np.ndarray:
    x = features.astype(np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    x = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    return u[:, :2] * s[:2]


def _similarity_residual(a: np.ndarray, b: np.ndarray) -> float:
    """How far ``a`` is from a rotated/reflected, scaled and shifted ``b`` (brute force over
    angles and both reflections, each with its least-squares scale), relative to |a|."""
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    best = np.inf
    for reflect in (1.0, -1.0):
        for theta in np.linspace(0, 2 * np.pi, 7200, endpoint=False):
            c, s = np.cos(theta), np.sin(theta)
            turned = b @ np.array([[c, -s], [s, c]]) @ np.diag([1.0, reflect])
            scale = (turned * a).sum() / (turned ** 2).sum()
            best = min(best, float(np.linalg.norm(a - scale * turned)))
    return best / float(np.linalg.norm(a))


def test_procrustes_recovers_a_known_rotation_reflection_and_scale():
    rng = np.random.default_rng(0)
    reference = rng.standard_normal((60, 2))
    theta = 1.234
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    turned = rotation @ np.diag([1.0, -1.0])  # a rotation with a reflection
    moved = 3.7 * reference @ turned + np.array([5.0, -2.0])
    aligned, found, scale = procrustes(moved, reference)
    np.testing.assert_allclose(aligned, reference, atol=1e-10)
    np.testing.assert_allclose(found, turned.T, atol=1e-10)  # the inverse of the move
    assert scale == pytest.approx(1 / 3.7)
    # with noise it is the least-squares fit: no angle on a fine grid does better
    noisy = moved + 0.3 * rng.standard_normal(moved.shape)
    aligned, _, _ = procrustes(noisy, reference)
    fit = np.linalg.norm(aligned - reference)
    c = reference - reference.mean(axis=0)
    for reflect in (1.0, -1.0):
        for t in np.linspace(0, 2 * np.pi, 3600, endpoint=False):
            r = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) @ np.diag(
                [1.0, reflect])
            x = (noisy - noisy.mean(axis=0)) @ r
            s = (x * c).sum() / (x ** 2).sum()
            assert fit <= np.linalg.norm(s * x + reference.mean(axis=0) - reference) + 1e-9


def test_pca_layout_matches_numpys_svd_up_to_sign():
    rng = np.random.default_rng(1)
    features = (rng.standard_normal((80, 12)) * np.linspace(3, 0.1, 12)).astype(np.float32)
    ours = pca_layout(features)
    assert ours.shape == (80, 2) and ours.dtype == np.float32
    reference = _numpy_pca(features)
    for j in range(2):
        same = np.allclose(ours[:, j], reference[:, j], atol=1e-5)
        flipped = np.allclose(ours[:, j], -reference[:, j], atol=1e-5)
        assert same or flipped, j
    # one point, one dimension: the columns beyond the rank are zero
    assert np.array_equal(pca_layout(np.ones((1, 5), np.float32)), np.zeros((1, 2)))


def test_unit_scale_centres_and_gives_a_unit_rms_radius():
    layout = unit_scale(np.random.default_rng(2).standard_normal((30, 2)) * 9 + 4)
    np.testing.assert_allclose(layout.mean(axis=0), 0, atol=1e-6)
    assert np.sqrt((layout.astype(np.float64) ** 2).sum(axis=1).mean()) == pytest.approx(1)
    assert np.array_equal(unit_scale(np.ones((3, 2))), np.zeros((3, 2)))


def test_the_sample_is_fixed_and_leaves_the_training_random_stream_alone():
    before = torch.get_rng_state()
    rows = sample_rows(100, 10, seed=5)
    assert torch.equal(torch.get_rng_state(), before)
    assert np.array_equal(rows, sample_rows(100, 10, seed=5))
    assert len(np.unique(rows)) == 10 and np.array_equal(rows, np.sort(rows))
    assert rows.max() < 100 and not np.array_equal(rows, sample_rows(100, 10, seed=6))
    assert np.array_equal(sample_rows(7, 10, seed=5), np.arange(7))


def test_a_run_writes_a_frame_per_evaluation_aligned_to_the_one_before(folder, tmp_path):
    result = run({"data": str(folder), "epochs": 2, "seed": 3}, tmp_path)
    assert result.status == "finished", result.reason
    events = events_of(result.run_dir)
    maps = [e for e in events if e["type"] == "live_map"]
    evals = [e for e in events if e["type"] == "eval"]
    assert [(e["epoch"], e["step"]) for e in maps] == [(e["epoch"], e["step"]) for e in evals]
    assert [(e["epoch"], e["step"]) for e in maps] == [(1, 3), (2, 6)]
    files = RunDir(result.run_dir).live_map
    assert [e["path"] for e in maps] == [str(files.frame(1)), str(files.frame(2))]
    assert all(e["n"] == 24 and e["seconds"] >= 0 for e in maps)

    index = json.loads(files.index.read_text())
    manifest = json.loads(RunDir(result.run_dir).manifest.read_text())
    assert index["indices"] == list(range(24))  # 24 images: all of them
    assert index["paths"] == [r["path"] for r in manifest["images"]]
    assert index["labels"] == [r["label"] for r in manifest["images"]]
    assert index["classes"] == ["circles", "squares"] and index["layout"] == "pca"
    assert index["frames"] == [{"epoch": 1, "step": 3, "file": "epoch-0001.npy"},
                               {"epoch": 2, "step": 6, "file": "epoch-0002.npy"}]
    first, last = (np.load(files.frame(e)) for e in (1, 2))
    assert first.shape == last.shape == (24, 2) and last.dtype == np.float32
    for frame in (first, last):
        np.testing.assert_allclose(frame.mean(axis=0), 0, atol=1e-5)
        assert np.sqrt((frame.astype(np.float64) ** 2).sum(axis=1).mean()) == pytest.approx(1)

    # Reference: the final checkpoint embedded by the exploring code, its PCA by numpy. The
    # frame is that PCA turned and scaled (nothing else), the turn the one fitting frame 1.
    emb = explore.embeddings(result.run_dir, "last", cache_dir=tmp_path / "cache",
                             device="cpu")
    reference = _numpy_pca(emb.features)
    assert _similarity_residual(last, reference) < 2e-3
    fitted, _, _ = procrustes(reference, first)
    np.testing.assert_allclose(unit_scale(fitted), last, atol=2e-3)


def test_a_folder_without_labels_gets_a_map_and_trains_the_same_without_one(tmp_path):
    flat = make_flat_folder(tmp_path / "flat", 20)
    on = run({"data": str(flat), "epochs": 2, "seed": 1}, tmp_path / "on")
    off = run({"data": str(flat), "epochs": 2, "seed": 1, "live_map": "off"}, tmp_path / "off")
    assert on.status == off.status == "finished"
    events = events_of(on.run_dir)
    assert not [e for e in events if e["type"] == "eval"]
    ends = [(e["epoch"] + 1, e["step"]) for e in events if e["type"] == "epoch_end"]
    assert [(e["epoch"], e["step"]) for e in events if e["type"] == "live_map"] == ends
    assert [e["n"] for e in events if e["type"] == "live_map"] == [20, 20]
    index = json.loads(RunDir(on.run_dir).live_map.index.read_text())
    assert index["classes"] == [] and index["labels"] == [-1] * 20
    # "off" writes nothing, and the map never changed what was trained
    assert not RunDir(off.run_dir).live_map.path.exists()
    assert not [e for e in events_of(off.run_dir) if e["type"] == "live_map"]
    a = load_checkpoint(on.run_dir / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(off.run_dir / "checkpoints" / "last.pt")["model"]
    assert a.keys() == b.keys()
    for name in a:  # parameters and batch-norm statistics, bit for bit
        assert torch.equal(a[name], b[name]), name


def test_a_resumed_run_appends_to_its_map_as_if_never_stopped(folder, tmp_path):
    whole = run({"data": str(folder), "epochs": 3, "seed": 3}, tmp_path / "a")
    calls = []

    def stop_after_five():
        calls.append(1)
        return len(calls) > 5

    part = run({"data": str(folder), "epochs": 3, "seed": 3}, tmp_path / "b",
               should_stop=stop_after_five)
    assert part.status == "stopped" and part.step == 5
    files = RunDir(part.run_dir).live_map
    assert [f["step"] for f in json.loads(files.index.read_text())["frames"]] == [3]
    resumed = train(TrainConfig(), resume=part.run_dir, cache_dir=tmp_path / "cache",
                    events=EventWriter(None))
    assert resumed.status == "finished"
    index = json.loads(files.index.read_text())
    assert [(f["epoch"], f["step"]) for f in index["frames"]] == [(1, 3), (2, 6), (3, 9)]
    steps = [e["step"] for e in events_of(part.run_dir) if e["type"] == "live_map"]
    assert steps == [3, 6, 9]
    # Each later frame was turned to fit the one before, read back from disk: the frames
    # are those of the run that was never stopped.
    for epoch in (1, 2, 3):
        np.testing.assert_allclose(np.load(files.frame(epoch)),
                                   np.load(RunDir(whole.run_dir).live_map.frame(epoch)),
                                   atol=1e-6)


def test_a_map_that_cannot_be_written_is_given_up_and_training_goes_on(tmp_path, monkeypatch):
    import engine.evaluate.live_map as live_map

    def full(path, write):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(live_map, "write_atomic", full)
    flat = make_flat_folder(tmp_path / "flat", 16)
    result = run({"data": str(flat), "epochs": 2}, tmp_path)
    assert result.status == "finished", result.reason
    events = events_of(result.run_dir)
    assert not [e for e in events if e["type"] == "live_map"]
    warnings = [e["message"] for e in events if e["type"] == "warning"
                and "live map" in e["message"]]
    assert len(warnings) == 1 and "No space left on device" in warnings[0]
    assert "epoch 1" in warnings[0]
