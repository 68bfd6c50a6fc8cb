"""End to end on the CPU: a few steps of each method on a small generated image folder."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.config.settings import ConfigError
from engine.config.train_config import TrainConfig
from engine.data.scan import DataError
from engine.methods import METHODS
from engine.run.checkpoint import RESUME_KEYS, CheckpointError, TrainingState, load_checkpoint
from engine.run.events import EventWriter
from engine.training.loop import train
from tests.helpers.folders import make_folder
from tests.helpers.settings import TINY
from tests.helpers.training import events_of, run


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path / "shapes")


@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_few_steps_write_events_config_manifest_checkpoint(folder, tmp_path, method):
    result = run({"data": str(folder), "method": method, "epochs": 2}, tmp_path)
    assert result.status == "finished", result.reason
    events = events_of(result.run_dir)
    types = [e["type"] for e in events]
    assert types[0] in ("progress", "run_start") and types[-1] == "run_end"
    start = next(e for e in events if e["type"] == "run_start")
    assert start["steps_per_epoch"] == 3 and start["total_steps"] == 6
    assert start["dataset"]["classes"] == ["circles", "squares"]
    assert start["dataset"]["class_counts"] == [12, 12]
    steps = [e for e in events if e["type"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(e["loss"]) and e["pairs_per_s"] > 0 for e in steps)
    assert len({round(e["loss"], 6) for e in steps}) > 1  # the loss moved
    assert -1 <= steps[-1]["positive_pair_similarity"] <= 1
    assert [e["epoch"] for e in events if e["type"] == "epoch_end"] == [0, 1]
    if method == "moco":
        assert start["config"]["queue_size"] == 16  # reduced to fit 24 images at batch 8
        assert any("queue_size" in e.get("message", "") for e in events
                   if e["type"] == "warning")

    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["method"] == method and config["image_size"] == 16
    assert config["augment"]["blur_p"] == 0.0  # resolved, not auto
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert len(manifest["images"]) == 24
    state = load_checkpoint(result.run_dir / "checkpoints" / "last.pt")
    assert state["step"] == 6 and state["epoch"] == 2
    assert (result.run_dir / "checkpoints" / "epoch-0002.pt").is_file()
    if method == "moco":
        assert state["model"]["queue"].shape == (16, 16)
    # The checkpoint format (version 1): its keys, in order, are TrainingState's fields.
    assert list(state) == ["checkpoint_version", "model", "optimizer", "scaler", "augment_rng",
                           "torch_rng", "cuda_rng", "step", "epoch", "steps_per_epoch",
                           "config", "method", "backbone", "world_size"]
    assert list(state)[1:] == [f.name for f in dataclasses.fields(TrainingState)]
    assert state["config"] == config and state["method"] == method
    # What a method adds to its step events comes from its spec (MoCo: the momentum).
    assert all(set(METHODS[method].logged) <= set(e) for e in steps)
    if method == "moco":
        assert all(e["momentum"] == 0.999 for e in steps)  # the default, without a ramp
    else:
        assert all("momentum" not in e for e in steps)


def test_resume_keys_are_the_required_fields_of_the_training_state():
    assert RESUME_KEYS == ("model", "optimizer", "scaler", "augment_rng", "torch_rng", "step",
                           "epoch")
    with pytest.raises(CheckpointError, match="lacks optimizer"):
        TrainingState.from_dict({"model": {}, "scaler": {}, "augment_rng": 0, "torch_rng": 0,
                                 "step": 1, "epoch": 0})


def test_stop_then_resume_continues_and_matches_an_uninterrupted_run(folder, tmp_path):
    whole = run({"data": str(folder), "epochs": 2, "seed": 3}, tmp_path / "a")
    calls = []

    def stop_after_four():
        calls.append(1)
        return len(calls) > 4

    part = run({"data": str(folder), "epochs": 2, "seed": 3}, tmp_path / "b",
               should_stop=stop_after_four)
    assert part.status == "stopped" and part.step == 4
    resumed = train(TrainConfig(), resume=part.run_dir, cache_dir=tmp_path / "cache",
                    events=EventWriter(None))
    assert resumed.status == "finished" and resumed.step == 6
    steps = [e["step"] for e in events_of(part.run_dir) if e["type"] == "step"]
    assert steps == [1, 2, 3, 4, 5, 6]  # the curve continues, it does not restart
    starts = [e for e in events_of(part.run_dir) if e["type"] == "run_start"]
    assert [s["resumed"] for s in starts] == [False, True] and starts[1]["start_step"] == 4

    a = load_checkpoint(whole.run_dir / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(resumed.run_dir / "checkpoints" / "last.pt")["model"]
    assert a.keys() == b.keys()
    for key in a:  # bit for bit: same data order, augmentations and arithmetic on the CPU
        assert torch.equal(a[key], b[key]), key


def test_timed_checkpoints_within_an_epoch_bound_the_work_a_kill_loses(folder, tmp_path):
    # 24 images, batch 8: 3 steps an epoch. With a checkpoint interval shorter than a step,
    # last.pt is rewritten after every step, not only at the end of each epoch.
    done = run({"data": str(folder), "epochs": 2, "seed": 3, "checkpoint_minutes": 1e-6},
               tmp_path / "timed")
    saved = [e["step"] for e in events_of(done.run_dir) if e["type"] == "checkpoint"
             and e["path"].endswith("last.pt")]
    assert saved == [1, 2, 3, 4, 5, 6]
    hourly = run({"data": str(folder), "epochs": 2, "seed": 3, "checkpoint_minutes": 60},
                 tmp_path / "hourly")
    saved = [e["step"] for e in events_of(hourly.run_dir) if e["type"] == "checkpoint"
             and e["path"].endswith("last.pt")]
    assert saved == [3, 6]  # the ends of the epochs only
    # The same training either way: saving reads the model, never changes it.
    a = load_checkpoint(done.run_dir / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(hourly.run_dir / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_resume_can_extend_but_not_change_the_method(folder, tmp_path):
    first = run({"data": str(folder), "epochs": 1}, tmp_path)
    more = train(TrainConfig(), resume=first.run_dir, cache_dir=tmp_path / "cache",
                 events=EventWriter(None), resume_overrides={"epochs": 2})
    assert more.status == "finished" and more.step == 6
    with pytest.raises(ConfigError, match="cannot change method"):
        train(TrainConfig(), resume=first.run_dir, cache_dir=tmp_path / "cache",
              events=EventWriter(None), resume_overrides={"method": "moco"})


def test_corrupt_files_are_listed_and_training_goes_on(folder, tmp_path):
    (folder / "circles" / "empty.jpg").write_bytes(b"")
    (folder / "circles" / "text.png").write_text("not an image")
    good = (folder / "squares" / "squares-1.png").read_bytes()
    (folder / "squares" / "truncated.png").write_bytes(good[: len(good) // 2])
    result = run({"data": str(folder), "epochs": 1}, tmp_path)
    assert result.status == "finished"
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    skipped = {Path(s["path"]).name: s["reason"] for s in manifest["skipped"]}
    assert set(skipped) == {"empty.jpg", "text.png", "truncated.png"}
    assert len(manifest["images"]) == 24
    warnings = [e["message"] for e in events_of(result.run_dir) if e["type"] == "warning"]
    assert any("3 file(s) skipped" in w for w in warnings)


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(folder, tmp_path,
                                                                     monkeypatch):
    import engine.training.loop as train_module

    real_build = train_module.build_model

    def build_poisoned(cfg, **kwargs):
        model = real_build(cfg, **kwargs)
        forward = model.forward
        count = [0]

        def poisoned(x1, x2, batch=None):
            out = forward(x1, x2, batch)
            count[0] += 1
            if count[0] >= 5:  # during the second epoch
                out.loss = out.loss * float("nan")
            return out
        model.forward = poisoned
        return model

    monkeypatch.setattr(train_module, "build_model", build_poisoned)
    result = run({"data": str(folder), "epochs": 3}, tmp_path)
    assert result.status == "failed" and "nan" in result.reason.lower()
    assert result.step == 5
    state = load_checkpoint(result.run_dir / "checkpoints" / "last.pt")
    assert state["step"] == 3  # the end of the first epoch, before the NaN
    assert all(torch.isfinite(v).all() for v in state["model"].values()
               if v.is_floating_point())
    end = events_of(result.run_dir)[-1]
    assert end["type"] == "run_end" and end["status"] == "failed"


def test_empty_folder_and_too_few_images_say_what_was_found(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="no usable images"):
        run({"data": str(empty)}, tmp_path)
    few = make_folder(tmp_path / "few", per_class=2)
    with pytest.raises(ConfigError, match="batch_size 8 is larger than the 4 usable"):
        run({"data": str(few)}, tmp_path)
    with pytest.raises(DataError, match="image folder not found"):
        run({"data": str(tmp_path / "nowhere")}, tmp_path)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def cli(args, **kwargs):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "engine", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.PIPE, text=True,
                            env=env, **kwargs)


def tiny_flags(folder, tmp_path):
    flags = ["train", "--data", str(folder), "--runs-root", str(tmp_path / "runs"),
             "--cache-dir", str(tmp_path / "cache")]
    for k, v in TINY.items():
        flags += ["--" + k.replace("_", "-"), str(v)]
    return flags


def read_until(proc, type_, timeout=120):
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        event = json.loads(line)  # stdout carries nothing but events
        seen.append(event)
        if event["type"] == type_:
            return event, seen
    raise AssertionError(f"no {type_} event; saw {[e['type'] for e in seen]}")


@pytest.mark.parametrize("how", ["stdin", "sigint"])
def test_cli_stops_on_request_with_a_checkpoint(folder, tmp_path, how):
    proc = cli(tiny_flags(folder, tmp_path) + ["--epochs", "1000"])
    try:
        read_until(proc, "step")
        if how == "stdin":
            proc.stdin.write("stop\n")
            proc.stdin.flush()
        else:
            proc.send_signal(signal.SIGINT)
        end, _ = read_until(proc, "run_end")
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    assert end["status"] == "stopped"
    run_dir = Path(end["run_dir"])
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] == end["step"]


def test_cli_refuses_bad_values_before_running(folder, tmp_path):
    proc = cli(tiny_flags(folder, tmp_path) + ["--temperature", "-1"])
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "temperature must be" in err
    # stdout is an event stream: the refusal is its one event, so a reader learns why
    (event,) = [json.loads(line) for line in out.splitlines()]
    assert event["type"] == "run_end" and event["status"] == "failed"
    assert "temperature must be" in event["reason"]
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_compiled_model_trains_like_the_eager_one(folder, tmp_path):
    """torch.compile (inductor on the CPU here) gives the same first-step loss; about a
    minute of compilation, so it runs with `-m slow`."""
    eager = run({"data": str(folder), "max_steps": 2, "seed": 1}, tmp_path / "eager")
    compiled = run({"data": str(folder), "max_steps": 2, "seed": 1, "compile": True},
                   tmp_path / "compiled")
    assert compiled.status == "finished", compiled.reason
    first = [next(e for e in events_of(r.run_dir) if e["type"] == "step")["loss"]
             for r in (eager, compiled)]
    assert first[0] == pytest.approx(first[1], rel=1e-4)


def test_the_run_goes_on_when_its_reader_goes_away(folder, tmp_path):
    """The window that started the engine may close: the engine keeps training and
    writing events.jsonl, and still stops cleanly on SIGTERM."""
    proc = cli(tiny_flags(folder, tmp_path) + ["--epochs", "1000"])
    try:
        start, _ = read_until(proc, "run_start")
        read_until(proc, "step")
        proc.stdout.close()
        proc.stderr.close()
        run_dir = Path(start["run_dir"])
        steps_then = sum(1 for e in events_of(run_dir) if e["type"] == "step")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if sum(1 for e in events_of(run_dir) if e["type"] == "step") >= steps_then + 3:
                break
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    events = events_of(run_dir)
    assert sum(1 for e in events if e["type"] == "step") >= steps_then + 3
    assert events[-1]["type"] == "run_end" and events[-1]["status"] == "stopped"
