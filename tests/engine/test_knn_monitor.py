"""The kNN accuracy measured during training: the same number the exploring tools give for
the saved checkpoint, only with labels, and without changing what is trained."""

import shutil

import numpy as np
import pytest
import torch

from engine.evaluate import explore
from engine.evaluate.knn import knn_accuracy
from engine.run.checkpoint import load_checkpoint
from tests.helpers.folders import make_folder
from tests.helpers.training import events_of, run


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path / "shapes")


def test_eval_events_equal_the_knn_of_the_saved_checkpoints(folder, tmp_path):
    result = run({"data": str(folder), "epochs": 2, "seed": 3}, tmp_path)
    assert result.status == "finished", result.reason
    evals = [e for e in events_of(result.run_dir) if e["type"] == "eval"]
    assert [(e["epoch"], e["step"]) for e in evals] == [(1, 3), (2, 6)]
    assert all(e["images"] == 24 and e["knn_k"] == 20 and e["seconds"] >= 0 for e in evals)
    # Reference: embed the final checkpoint with the exploring code, score it the same way.
    emb = explore.embeddings(result.run_dir, "last", cache_dir=tmp_path / "cache",
                             device="cpu")
    reference = knn_accuracy(emb.features, emb.labels, k=20, temperature=0.07,
                             test_fraction=0.2, seed=3)
    assert evals[-1]["knn_top1"] == reference["top1"]


def test_measuring_does_not_change_training(folder, tmp_path):
    on = run({"data": str(folder), "epochs": 2, "knn_every": 1}, tmp_path / "on")
    off = run({"data": str(folder), "epochs": 2, "knn_every": 0}, tmp_path / "off")
    assert [e["type"] for e in events_of(off.run_dir)].count("eval") == 0
    a = load_checkpoint(on.run_dir / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(off.run_dir / "checkpoints" / "last.pt")["model"]
    assert a.keys() == b.keys()
    for name in a:  # parameters and batch-norm statistics, bit for bit
        assert torch.equal(a[name], b[name]), name


def test_a_folder_without_labels_has_no_knn_curve(folder, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for image in folder.rglob("*.*"):
        shutil.copy(image, flat / image.name)
    result = run({"data": str(flat), "epochs": 1}, tmp_path)
    assert result.status == "finished", result.reason
    assert not [e for e in events_of(result.run_dir) if e["type"] == "eval"]
    assert np.isfinite([e["loss"] for e in events_of(result.run_dir)
                        if e["type"] == "step"]).all()
