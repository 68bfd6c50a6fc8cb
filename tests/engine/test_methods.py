"""Every method in the registry, end to end on the CPU: it trains, resumes bit for bit, and
every exploration and export verb works on its run exactly as on SimCLR's.

The methods' own losses and updates are tested against references in their own files; this
one is the contract every plug-in meets, so a new method is covered by adding it to
engine.methods.METHODS.
"""

import json

import numpy as np
import pytest
import torch

from engine.config.train_config import TrainConfig
from engine.evaluate import explore
from engine.evaluate.maps import MapParams
from engine.evaluate.probe import ProbeParams
from engine.methods import METHODS
from engine.run.checkpoint import load_checkpoint
from engine.run.events import EventWriter
from engine.training.loop import train
from tests.helpers.folders import make_folder
from tests.helpers.training import events_of, run

# 24 images at batch 8: 3 steps an epoch, 6 in all; small queues and banks fit the folder.
EPOCHS = 2


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("methods") / "shapes")


@pytest.mark.parametrize("method", list(METHODS))
def test_method_trains_resumes_exactly_and_every_verb_works_on_its_run(method, folder,
                                                                      tmp_path):
    settings = {"data": str(folder), "method": method, "epochs": EPOCHS, "seed": 5}
    whole = run(settings, tmp_path / "a")
    assert whole.status == "finished", whole.reason
    events = events_of(whole.run_dir)
    steps = [e for e in events if e["type"] == "step"]
    assert [e["step"] for e in steps] == list(range(1, 3 * EPOCHS + 1))
    assert all(np.isfinite(e["loss"]) for e in steps)
    for name in METHODS[method].logged:  # the method's own diagnostics are in every step
        assert all(name in e for e in steps), name
    evals = [e for e in events if e["type"] == "eval"]
    assert evals and 0 <= evals[-1]["knn_top1"] <= 1  # the kNN monitor ran

    # Stopped during the second epoch, then resumed: the same model, buffers included
    # (queues, memory banks, target networks), as an uninterrupted run.
    calls = []
    part = run(settings, tmp_path / "b", should_stop=lambda: calls.append(1) or len(calls) > 4)
    assert part.status == "stopped" and part.step == 4
    resumed = train(TrainConfig(), resume=part.run_dir, cache_dir=tmp_path / "b" / "cache",
                    events=EventWriter(None))
    assert resumed.status == "finished" and resumed.step == 3 * EPOCHS
    a = load_checkpoint(whole.run_dir / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(resumed.run_dir / "checkpoints" / "last.pt")["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key

    # Explore and export the run as a person would.
    run_dir, cache = whole.run_dir, tmp_path / "a" / "cache"
    emb = explore.embeddings(run_dir, "last", cache_dir=cache, device="cpu")
    assert emb.features.shape == (24, 512) and np.isfinite(emb.features).all()
    assert emb.projections.shape[0] == 24 and np.isfinite(emb.projections).all()
    for space in ("h", "z"):
        coords = explore.make_map(run_dir, "last", space=space, params=MapParams(method="pca"),
                                  cache_dir=cache, device="cpu")["coords"]
        assert coords.shape == (24, 2) and np.isfinite(coords).all()
    near = explore.neighbours(run_dir, 3, 4, cache_dir=cache, device="cpu")
    assert near["neighbours"][0]["index"] == 3 and len(near["neighbours"]) == 4
    knn = explore.knn(run_dir, "last", k=5, cache_dir=cache, device="cpu")
    assert 0 <= knn["top1"] <= 1
    dup = explore.duplicates(run_dir, "last", cache_dir=cache, device="cpu")
    assert all(g["size"] >= 2 for g in dup["groups"])
    odd = explore.outliers(run_dir, "last", diverse=3, cache_dir=cache, device="cpu")
    assert len(odd["ranked"]) == 24 and len({d["index"] for d in odd["diverse"]}) == 3
    wrong = explore.mistakes(run_dir, "last", k=5, cache_dir=cache, device="cpu")
    assert wrong["images"] == 24
    probe = explore.probe(run_dir, "last", params=ProbeParams(epochs=10), cache_dir=cache)
    assert set(probe["per_class"]) == {"circles", "squares"}
    exported = explore.export_encoder_of_run(run_dir, "torchvision")
    assert exported["verified"]
    meta = json.loads(open(exported["metadata"]).read())
    assert meta["architecture"] == "resnet18" and meta["method"] == method
