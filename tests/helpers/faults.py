"""What the fault tests (tests/engine/test_faults_*.py) share: their tiny settings, image
folder and finished run, short runs and resumes, and checks of a run folder.

The fixtures here are taken into each fault test module by assignment
(``folder = faults.folder``); the folder and the finished run are made once a session
for all of them.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from engine.config.train_config import TrainConfig
from engine.run.checkpoint import find_resume_point, load_checkpoint
from engine.run.events import EventWriter, read_events
from engine.training.loop import train
from tests.helpers import folders

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
BIG = 10**8

# 48 images at batch 8: 6 steps an epoch, and a checkpoint (last.pt and, with keep_every
# 1, epoch-NNNN.pt) at the end of every epoch: the checkpoint interval is 6 steps. One
# thread: on two shared cores, two threads slow down several times whenever the other core
# is busy.
TINY = {"backbone": "resnet18", "small_stem": True, "image_size": 16, "cache_size": 16,
        "batch_size": 8, "proj_hidden_dim": 32, "proj_out_dim": 16, "log_every": 1,
        "num_threads": 1, "precision": "fp32", "keep_every": 1, "knn_every": 0}
STEPS_PER_EPOCH = 6


@pytest.fixture(autouse=True, scope="module")
def keep_torch_threads():
    """train() sets torch's thread count for the process; later test modules expect theirs."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def make_folder(root: Path) -> Path:
    return folders.make_class_folder(root, {"a": 24, "b": 24}, width=16, height=16)


@pytest.fixture(scope="session")
def folder(tmp_path_factory) -> Path:
    return _folder(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """A run of 4 epochs, never interrupted: epoch-0001.pt (step 6) ... epoch-0004.pt and
    last.pt (step 24). The kill test must end with exactly its model."""
    basetemp = tmp_path_factory.getbasetemp()
    return _finished_run(_folder(basetemp), basetemp)


# Made once a session (keyed by its temporary folder): each module that takes the fixtures
# has fixtures of its own, whose values pytest would compute once per module.
@functools.cache
def _folder(basetemp: Path) -> Path:
    return make_folder(basetemp / "faults" / "shapes")


@functools.cache
def _finished_run(folder: Path, basetemp: Path) -> Path:
    result = run({"data": str(folder), "epochs": 4, "seed": 5}, basetemp / "faults-finished")
    assert result.status == "finished" and result.step == 24
    return result.run_dir


def run(values: dict, tmp_path: Path, **kwargs):
    cfg = TrainConfig.from_dict({**TINY, **values})
    kwargs.setdefault("runs_root", tmp_path / "runs")
    return train(cfg, cache_dir=tmp_path / "cache", events=EventWriter(None), **kwargs)


def resume(run_dir: Path, tmp_path: Path, **overrides):
    return train(TrainConfig(), resume=run_dir, cache_dir=tmp_path / "cache",
                 events=EventWriter(None), resume_overrides=overrides or None)


def events_of(run_dir: Path) -> list[dict]:
    return list(read_events(run_dir / "events.jsonl"))


def segments(events: list[dict]) -> list[list[dict]]:
    """The events of each process that wrote into the run, split at run_start."""
    out: list[list[dict]] = [[]]
    for event in events:
        if event["type"] == "run_start" and out[-1]:
            out.append([])
        out[-1].append(event)
    return out


def assert_run_dir_sound(run_dir: Path, half_lines: int = 0) -> int | None:
    """Every JSON file and events line (but ``half_lines``) parses and every checkpoint
    file loads; returns the step --resume will continue from (None: no checkpoint yet)."""
    for path in run_dir.rglob("*.json"):
        json.loads(path.read_text(encoding="utf-8"))
    unparsed = 0
    for line in (run_dir / "events.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            json.loads(line)
        except json.JSONDecodeError:
            unparsed += 1
    assert unparsed == half_lines  # SIGKILL cannot cut a line in half: each is one write()
    for path in (run_dir / "checkpoints").glob("*.pt"):
        load_checkpoint(path)
    point = find_resume_point(run_dir / "checkpoints")
    assert not point.passed_over, point.passed_over
    return None if point.state is None else int(point.state["step"])


def damage(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` (unlinking first: run folders here may be hard-linked
    copies that share the original's files)."""
    path.unlink()
    path.write_bytes(data)


def truncated(path: Path) -> bytes:
    data = path.read_bytes()
    return data[: len(data) // 3]



def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    """A copy whose files are hard links (cheap); damage() and atomic writes replace
    files rather than change them, so the original stays intact."""
    out = tmp_path / "run"
    shutil.copytree(run_dir, out, copy_function=os.link)
    return out


def warnings_of(run_dir: Path) -> list[str]:
    return [e["message"] for e in events_of(run_dir) if e["type"] == "warning"]

