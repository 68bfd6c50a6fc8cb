"""Checkpoints and exports from elsewhere never run code: a malicious pickle inside a
checkpoint, an export or embeddings is refused, and nothing it would run runs."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.run.checkpoint import CheckpointError, find_resume_point, load_checkpoint
from engine.training.loop import TrainingError
from tests.helpers import faults
from tests.helpers.faults import copy_run, resume

# Fixtures shared with the other fault tests (tests/helpers/faults.py).
_keep_torch_threads = faults.keep_torch_threads
finished_run = faults.finished_run


class _RunsCode:
    """Unpickling this calls ``os.mkdir(marker)``: the side effect a malicious file has."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


class _Execs:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.fixture(params=[_RunsCode, _Execs])
def malicious(request, tmp_path):
    marker = tmp_path / "marker"

    def save(path: Path, wrap=lambda payload: payload) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(wrap(request.param(marker)), path)
        assert not marker.exists()  # saving it ran nothing
        return path

    save.marker = marker
    return save


def test_malicious_checkpoint_is_refused_and_runs_nothing(malicious, tmp_path):
    path = malicious(tmp_path / "last.pt", lambda p: {"checkpoint_version": 1, "model": p,
                                                      "step": 1})
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value) and "could run code" in str(err.value)
    assert "weights_only" not in str(err.value)  # not torch's advice to load it unsafely
    assert not malicious.marker.exists()
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")  # damaged, not dangerous
    with pytest.raises(CheckpointError, match="not a readable checkpoint") as err:
        load_checkpoint(tmp_path / "garbage.pt")
    assert "could run code" not in str(err.value)


def test_malicious_checkpoint_in_a_run_folder(malicious, finished_run, tmp_path):
    from engine.evaluate.embed import RunError, load_encoder

    run_dir = copy_run(finished_run, tmp_path)
    ckpt = run_dir / "checkpoints"
    (ckpt / "last.pt").unlink()
    malicious(ckpt / "last.pt", lambda p: {"checkpoint_version": 1, "model": p})
    with pytest.raises(RunError, match="could run code"):
        load_encoder(run_dir, "last")
    outside = malicious(tmp_path / "downloaded.pt")  # a path given instead of a name
    with pytest.raises(RunError, match="could run code"):
        load_encoder(run_dir, str(outside))
    # Resuming passes over it to the newest good checkpoint, and says so.
    point = find_resume_point(ckpt)
    assert point.path == ckpt / "epoch-0004.pt" and "could run code" in point.passed_over[0]
    for path in ckpt.glob("epoch-*.pt"):
        path.unlink()
    with pytest.raises(TrainingError, match="could run code"):
        resume(run_dir, tmp_path)
    assert not malicious.marker.exists()


def test_malicious_exports_are_refused_and_run_nothing(malicious, tmp_path):
    import importlib.util

    from torchvision import models as tvm

    from engine.export import ExportError, load_exported

    names = ["encoder.pt", "encoder.torchscript"]
    if importlib.util.find_spec("onnxruntime") is not None:
        names.append("encoder.onnx")  # onnxruntime reads a graph: garbage to it
    for name in names:
        path = malicious(tmp_path / name)
        with pytest.raises(ExportError, match=re.escape(str(path))):
            load_exported(path)
    # A good torchvision export with a malicious projection head beside it.
    state = {k: v for k, v in tvm.resnet18().state_dict().items() if not k.startswith("fc.")}
    torch.save(state, tmp_path / "good.pt")
    assert load_exported(tmp_path / "good.pt") is not None
    malicious(tmp_path / "good-head.pt", lambda p: {"0.weight": p})
    with pytest.raises(ExportError, match="could run code"):
        load_exported(tmp_path / "good.pt")
    assert not malicious.marker.exists()


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")
def test_torchscript_export_with_a_malicious_pickle_inside(tmp_path):
    """A real TorchScript archive whose data.pkl was replaced by a malicious pickle:
    TorchScript's own unpickler resolves no Python functions."""
    import pickle
    import zipfile

    from engine.export import ExportError, load_exported

    marker = tmp_path / "marker"
    module = torch.jit.script(torch.nn.Linear(2, 2))
    good = tmp_path / "good.torchscript"
    torch.jit.save(module, str(good))
    bad = tmp_path / "bad.torchscript"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("/data.pkl"):
                data = pickle.dumps(_RunsCode(marker), protocol=2)
            dst.writestr(item, data)
    with pytest.raises(ExportError, match=re.escape(str(bad))):
        load_exported(bad)(torch.zeros(1, 2))
    assert not marker.exists()


def test_embeddings_holding_pickled_objects_are_refused(tmp_path):
    from engine.evaluate.embed import RunError, load_embeddings

    marker = tmp_path / "marker"
    folder = tmp_path / "embeddings" / "last"
    folder.mkdir(parents=True)
    np.save(folder / "features.npy", np.array([_RunsCode(marker)], dtype=object),
            allow_pickle=True)
    np.save(folder / "projections.npy", np.zeros((1, 2), np.float32))
    (folder / "index.json").write_text(json.dumps({"paths": ["a.png"], "labels": [0],
                                                   "classes": [], "root": "/",
                                                   "checkpoint": "last"}))
    with pytest.raises(RunError, match="cannot be read"):
        load_embeddings(folder)
    assert not marker.exists()

