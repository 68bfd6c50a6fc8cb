"""Faults lose nothing: kills mid-run, half-written files, a full or read-only disk, out of
memory, a hostile image folder, settings refused once the data is known, and checkpoints or
exports from elsewhere. (Fuzzing every setting: test_faults_settings.py.)

The kill test drives the real CLI (``python -m engine train``) and SIGKILLs it at seeded
moments, including while a checkpoint is being written; the rest run ``train()`` in this
process with the fault simulated where it happens (monkeypatched writes and forwards).
"""

from __future__ import annotations

import errno
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.config.settings import ConfigError
from engine.config.train_config import TrainConfig, load_config_file
from engine.data import cache as cache_mod
from engine.data import scan as scan_mod
from engine.data.cache import decode_image
from engine.data.scan import DataError, Manifest
from engine.run import checkpoint as checkpoint_mod
from engine.run import io as io_mod
from engine.run.checkpoint import CheckpointError, find_resume_point, load_checkpoint
from engine.run.events import EventWriter, read_events
from engine.training import loop as train_mod
from engine.training.loop import TrainingError, train

try:  # `python -m pytest` puts the project root on sys.path; plain `pytest` this folder
    from tests.engine import imagegen
except ImportError:  # pragma: no cover
    import imagegen

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
def _keep_torch_threads():
    """train() sets torch's thread count for the process; later test modules expect theirs."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def make_folder(root: Path) -> Path:
    return imagegen.make_class_folder(root, {"a": 24, "b": 24}, width=16, height=16)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("faults") / "shapes")


@pytest.fixture(scope="module")
def finished_run(folder, tmp_path_factory) -> Path:
    """A run of 4 epochs, never interrupted: epoch-0001.pt (step 6) ... epoch-0004.pt and
    last.pt (step 24). The kill test must end with exactly its model."""
    base = tmp_path_factory.mktemp("finished")
    result = run({"data": str(folder), "epochs": 4, "seed": 5}, base)
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


# --- 1. killed mid-run ---------------------------------------------------------------------


def start_cli(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log.with_suffix(".out"), "w") as out, open(log.with_suffix(".err"), "w") as err:
        return subprocess.Popen([sys.executable, "-m", "engine", "train", *args],
                                stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)


def cli_flags(values: dict) -> list[str]:
    flags = []
    for key, value in values.items():
        flags.append(f"--{key.replace('_', '-')}={value}")
    return flags


def read_segment(run_dir: Path, index: int = -1) -> list[dict]:
    """The events of the ``index``-th process (attempt) that wrote into the run."""
    path = run_dir / "events.jsonl"
    if not path.is_file():
        return []
    found = [s for s in segments(list(read_events(path)))
             if any(e["type"] == "run_start" for e in s)]
    try:
        return found[index]
    except IndexError:
        return []


def wait_for(proc: subprocess.Popen, done: typing.Callable[[], bool], what: str,
             timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if proc.poll() is not None:
            raise AssertionError(f"the engine exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


def kill_at(proc: subprocess.Popen, run_dir: Path, attempt: int, how: str,
            rng: random.Random) -> None:
    """SIGKILL the engine of ``attempt`` at a moment chosen by ``how``."""
    ckpt = run_dir / "checkpoints"

    def steps() -> list[int]:
        return [e["step"] for e in read_segment(run_dir, attempt) if e["type"] == "step"]

    def checkpoints() -> int:
        return sum(1 for e in read_segment(run_dir, attempt) if e["type"] == "checkpoint")

    def writing(name: str) -> bool:
        try:
            return any(n.startswith(f".{name}") and n.endswith(".tmp")
                       for n in os.listdir(ckpt))
        except FileNotFoundError:
            return False

    wait_for(proc, lambda: bool(steps()), "the first step")
    if how == "first step":
        pass
    elif how in ("writing last.pt", "writing epoch-NNNN.pt"):
        name = "last.pt" if how == "writing last.pt" else "epoch-"
        wait_for(proc, lambda: writing(name), f"a checkpoint write ({name})")
    elif how == "after a checkpoint event":
        seen = checkpoints()
        wait_for(proc, lambda: checkpoints() > seen, "a checkpoint event")
    elif how == "random":
        time.sleep(rng.uniform(0.0, 2.5))
    else:
        raise ValueError(how)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)


def run_with_kills(folder: Path, tmp_path: Path, kills: list[str], epochs: int, seed: int,
                   reference: Path | None = None) -> dict:
    rng = random.Random(seed)
    run_dir = tmp_path / "run"
    values = {**TINY, "epochs": epochs, "seed": 5}
    base = ["--data", str(folder), "--run-dir", str(run_dir), "--cache-dir",
            str(tmp_path / "cache")] + cli_flags(values)
    total = epochs * STEPS_PER_EPOCH
    report = {"kills": 0, "no checkpoint yet": 0, "mid-write leftovers": 0, "lost steps": []}
    procs = []
    try:
        for i, how in enumerate([*kills, None]):
            args = base if i == 0 else ["--resume", str(run_dir)]
            expected_start = None if i == 0 else assert_run_dir_sound(run_dir)
            last_seen = max((e["step"] for e in read_segment(run_dir, i - 1)
                             if e["type"] == "step"), default=0) if i else 0
            proc = start_cli(args, tmp_path / f"attempt-{i}")
            procs.append(proc)
            if how is not None:
                kill_at(proc, run_dir, i, how, rng)
                report["kills"] += 1
                report["mid-write leftovers"] += any(
                    n.endswith(".tmp") for n in os.listdir(run_dir / "checkpoints"))
            else:
                assert proc.wait(timeout=300) == 0, (tmp_path / f"attempt-{i}.err").read_text()
            segment = read_segment(run_dir, i)
            start = next(e for e in segment if e["type"] == "run_start")
            if i > 0:
                # The step count continues from the newest good checkpoint ...
                assert start["resumed"] and start["start_step"] == (expected_start or 0)
                report["no checkpoint yet"] += expected_start is None
                lost = last_seen - start["start_step"]
                report["lost steps"].append(lost)
                # ... and at most one checkpoint interval of work is done again.
                assert 0 <= lost <= STEPS_PER_EPOCH, (last_seen, start["start_step"])
            # The curve continues: consecutive steps (log_every 1) from the start step.
            steps = [e["step"] for e in segment if e["type"] == "step"]
            assert steps == list(range(start["start_step"] + 1,
                                       start["start_step"] + 1 + len(steps)))
            # stdout carries nothing but whole events, even when killed.
            for line in (tmp_path / f"attempt-{i}.out").read_text().splitlines():
                assert json.loads(line)["v"] == 1
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    end = read_segment(run_dir)[-1]
    assert end["type"] == "run_end" and end["status"] == "finished", end
    assert end["step"] == total
    assert assert_run_dir_sound(run_dir) == total
    # No half-written checkpoint files are left behind, and no kept checkpoint is missing.
    assert not [n for n in os.listdir(run_dir / "checkpoints") if n.endswith(".tmp")]
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("epoch-*.pt")) == [
        f"epoch-{e:04d}.pt" for e in range(1, epochs + 1)]

    # Nothing was lost: bit for bit the model of a run that was never interrupted.
    if reference is None:
        reference = run({"data": str(folder), "epochs": epochs, "seed": 5},
                        tmp_path / "whole").run_dir
    a = load_checkpoint(reference / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]
    assert a.keys() == b.keys()
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differing, differing[:5]
    return report


def test_killed_three_times_resumes_to_the_same_model(folder, finished_run, tmp_path):
    report = run_with_kills(folder, tmp_path, ["first step", "writing last.pt", "random"],
                            epochs=4, seed=11, reference=finished_run)
    print(f"\nkills survived: {report}")
    assert report["kills"] == 3


@pytest.mark.slow
def test_killed_many_times_resumes_to_the_same_model(folder, tmp_path):
    kills = ["first step", "writing epoch-NNNN.pt", "random", "writing last.pt",
             "after a checkpoint event", "random", "random", "writing last.pt"]
    report = run_with_kills(folder, tmp_path, kills, epochs=10, seed=23)
    print(f"\nkills survived: {report}")
    assert report["kills"] == len(kills)


# --- 2. half-written and damaged files -----------------------------------------------------


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    """A copy whose files are hard links (cheap); damage() and atomic writes replace
    files rather than change them, so the original stays intact."""
    out = tmp_path / "run"
    shutil.copytree(run_dir, out, copy_function=os.link)
    return out


def warnings_of(run_dir: Path) -> list[str]:
    return [e["message"] for e in events_of(run_dir) if e["type"] == "warning"]


def test_damaged_last_checkpoint_falls_back_and_half_written_files_are_ignored(
        finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path)
    ckpt = run_dir / "checkpoints"
    damage(ckpt / "last.pt", truncated(ckpt / "last.pt"))  # cut short
    (ckpt / ".last.pt.x1y2z3.tmp").write_bytes(b"\x00" * 1000)  # a save killed midway
    damage(run_dir / "config.json", (run_dir / "config.json").read_bytes()[:50])
    damage(run_dir / "manifest.json", b'{"version": 1, "root": "/x", "ima')
    before = events_of(run_dir)
    events = (run_dir / "events.jsonl").read_bytes()
    damage(run_dir / "events.jsonl", events + b'{"v":1,"type":"step","step":13,"lo')

    result = resume(run_dir, tmp_path, epochs=5)
    assert result.status == "finished" and result.step == 30, result.reason
    warnings = warnings_of(run_dir)
    # Each damaged file is named, with what happened instead.
    assert any(str(ckpt / "last.pt") in w and "continuing from epoch-0004.pt" in w
               for w in warnings), warnings
    assert any("config.json is not valid JSON" in w and "settings saved in epoch-0004.pt" in w
               for w in warnings), warnings
    start = next(e for e in segments(events_of(run_dir))[-1] if e["type"] == "run_start")
    assert start["start_step"] == 24  # epoch-0004.pt: no finished epoch was lost
    # The half line stays a half line: every earlier event is kept, and the first event
    # appended after it is intact rather than glued to it.
    after = events_of(run_dir)
    assert after[:len(before)] == before
    assert after[len(before)]["type"] == "warning"
    assert sum(1 for e in after if e["type"] == "run_start") == 2
    assert [e["step"] for e in segments(after)[-1] if e["type"] == "step"] == list(
        range(25, 31))
    assert not list(ckpt.glob("*.tmp")) and not list(ckpt.glob(".*.tmp"))
    assert assert_run_dir_sound(run_dir, half_lines=1) == 30  # JSON files rewritten
    assert TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text())).epochs == 5


def test_resume_falls_back_past_several_damaged_checkpoints(finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path)
    ckpt = run_dir / "checkpoints"
    damage(ckpt / "last.pt", b"")  # empty
    damage(ckpt / "epoch-0004.pt", b"garbage, not a checkpoint")
    point = find_resume_point(ckpt)
    assert point.path == ckpt / "epoch-0003.pt" and point.state["step"] == 18
    assert len(point.passed_over) == 2
    result = resume(run_dir, tmp_path)
    assert result.status == "finished" and result.step == 24
    assert load_checkpoint(ckpt / "epoch-0004.pt")["step"] == 24  # written again


def test_numbered_checkpoint_newer_than_last_is_the_one_resumed(finished_run, tmp_path):
    """A kill between the two writes of an epoch's end (numbered file first, then
    last.pt) leaves last.pt one epoch behind: the newer numbered file is used."""
    run_dir = copy_run(finished_run, tmp_path)
    ckpt = run_dir / "checkpoints"
    (ckpt / "last.pt").unlink()
    os.link(ckpt / "epoch-0003.pt", ckpt / "last.pt")  # last.pt as it was after epoch 3
    point = find_resume_point(ckpt)
    assert point.path == ckpt / "epoch-0004.pt" and not point.passed_over


def test_every_checkpoint_damaged_is_refused_with_the_files_named(finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path)
    ckpt = run_dir / "checkpoints"
    for path in ckpt.glob("*.pt"):
        damage(path, truncated(path))
    with pytest.raises(TrainingError) as err:
        resume(run_dir, tmp_path)
    message = str(err.value)
    for name in ("last.pt", "epoch-0001.pt", "epoch-0002.pt", "epoch-0003.pt", "epoch-0004.pt"):
        assert str(ckpt / name) in message
    assert "Move the damaged files" in message and "start a new run" in message


def test_checkpoint_missing_what_resuming_needs_is_passed_over(finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path)
    ckpt = run_dir / "checkpoints"
    (ckpt / "last.pt").unlink()
    checkpoint_mod.save_checkpoint(ckpt / "last.pt", {"model": {}, "step": 99})
    point = find_resume_point(ckpt)
    assert point.path == ckpt / "epoch-0004.pt"
    assert "lacks optimizer" in point.passed_over[0]


def test_damaged_config_without_a_checkpoint_is_refused(folder, tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.json").write_text('{"method": "sim')
    with pytest.raises(TrainingError, match=r"config file .*config.json is not valid JSON.*"
                                            r"Restore config.json, or start a new run"):
        resume(run_dir, tmp_path)
    with pytest.raises(TrainingError, match="is not a run folder"):
        resume(tmp_path / "nowhere", tmp_path)


def test_killed_before_the_first_checkpoint_resumes_from_step_zero(folder, tmp_path):
    calls = []
    first = run({"data": str(folder), "epochs": 1}, tmp_path,
                should_stop=lambda: calls.append(1) or len(calls) > 3)
    assert first.status == "stopped" and first.step == 3
    (first.run_dir / "checkpoints" / "last.pt").unlink()  # as if killed, not stopped
    again = resume(first.run_dir, tmp_path)
    assert again.status == "finished" and again.step == STEPS_PER_EPOCH
    assert any("training again from step 0" in w for w in warnings_of(first.run_dir))


def test_events_writer_starts_a_new_line_after_a_half_written_one(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"v":1,"type":"step","step":1}\n{"v":1,"type":"st')
    writer = EventWriter(None)
    writer.emit("run_start", start_step=0)
    writer.attach(path)
    writer.emit("step", step=1)
    writer.close()
    assert [e["type"] for e in read_events(path)] == ["step", "run_start", "step"]


def test_garbage_json_in_a_run_folder_is_named_when_read(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_bytes(b"\x00\xff{not json")
    with pytest.raises(ConfigError, match=re.escape(str(bad))):
        load_config_file(bad)
    events = tmp_path / "events.jsonl"
    events.write_bytes(b'{"v":1,"type":"step","step":1}\n\xff\xfe garbage\n[1, 2]\n'
                       b'{"v":1,"type":"step","step":2}\n{"v":1,"type":')
    assert [e["step"] for e in read_events(events)] == [1, 2]


GARBAGE = [b"", b'{"format": 1, "key": "ab', b"\xff\xfe\x00 binary", b"[1, 2]", b"null"]


@pytest.mark.parametrize("garbage", GARBAGE)
def test_garbage_in_the_json_files_the_engine_reads_back(tmp_path, garbage):
    from engine.evaluate.embed import RunError, load_embeddings
    from engine.evaluate.maps import load_cached_map

    # The decoded-image cache's sidecar: the cache is rebuilt, never trusted.
    manifest = scan_mod.scan_folder(imagegen.make_flat_folder(tmp_path / "d", 3))
    first = cache_mod.build_cache(manifest, 8, tmp_path / "cache", max_image_pixels=BIG)
    pixels = np.array(first.images)
    damage(first.path.with_suffix(".json"), garbage)
    again = cache_mod.build_cache(manifest, 8, tmp_path / "cache", max_image_pixels=BIG)
    np.testing.assert_array_equal(np.asarray(again.images), pixels)
    json.loads(again.path.with_suffix(".json").read_text())  # written again, whole
    # A stored map's metadata: the map is computed again.
    np.save(tmp_path / "pca-last-h-x.npy", np.zeros((3, 2), np.float32))
    (tmp_path / "pca-last-h-x.json").write_bytes(garbage)
    assert load_cached_map(tmp_path / "pca-last-h-x.npy", "fingerprint", 3) is None
    # Saved embeddings whose index cannot be parsed: refused, saying what to do.
    folder = tmp_path / "embeddings" / "last"
    folder.mkdir(parents=True)
    np.save(folder / "features.npy", np.zeros((1, 2), np.float32))
    np.save(folder / "projections.npy", np.zeros((1, 2), np.float32))
    (folder / "index.json").write_bytes(garbage)
    with pytest.raises(RunError, match=re.escape(str(folder)) + ".*compute them again"):
        load_embeddings(folder)


# --- 3. disk full, read-only run folder ----------------------------------------------------


def fail_checkpoint_writes(monkeypatch, after: int, error: OSError) -> list[Path]:
    """Checkpoint writes after the first ``after`` fail midway with ``error``: half the
    bytes reach the temporary file, then the error (as a full disk does)."""
    real = io_mod.write_atomic
    calls: list[Path] = []

    def write_atomic(path, write):
        calls.append(Path(path))
        if len(calls) <= after:
            return real(path, write)

        def half_then_fail(f):
            buffer = io.BytesIO()
            write(buffer)
            f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            raise error
        return real(path, half_then_fail)

    monkeypatch.setattr(checkpoint_mod, "write_atomic", write_atomic)
    return calls


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(folder, tmp_path,
                                                                     monkeypatch):
    calls = fail_checkpoint_writes(monkeypatch, after=2,
                                   error=OSError(errno.ENOSPC, "No space left on device"))
    result = run({"data": str(folder), "epochs": 2}, tmp_path)
    assert len(calls) == 3  # epoch 1: epoch-0001.pt, last.pt; epoch 2: the failure
    assert result.status == "failed" and result.step == 12
    assert "the disk is full" in result.reason and str(calls[-1]) in result.reason
    assert "previous checkpoint is intact" in result.reason and "--resume" in result.reason
    ckpt = result.run_dir / "checkpoints"
    assert not list(ckpt.glob(".*.tmp"))  # the half-written temporary file is gone
    assert load_checkpoint(ckpt / "last.pt")["step"] == 6
    end = events_of(result.run_dir)[-1]
    assert end["type"] == "run_end" and end["status"] == "failed"
    assert end["reason"] == result.reason

    monkeypatch.undo()  # space freed: the run goes on from the intact checkpoint
    more = resume(result.run_dir, tmp_path)
    assert more.status == "finished" and more.step == 12
    assert load_checkpoint(ckpt / "epoch-0002.pt")["step"] == 12


def test_read_only_run_folder_while_checkpointing(folder, tmp_path, monkeypatch):
    ckpt_dirs: list[Path] = []
    if IS_ROOT:  # root writes whatever the mode says: refuse the temporary file instead
        real = io_mod.tempfile.mkstemp

        def mkstemp(*args, dir=None, **kwargs):
            if ckpt_dirs and Path(dir) == ckpt_dirs[0]:
                raise PermissionError(errno.EACCES, "Permission denied", str(dir))
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(io_mod.tempfile, "mkstemp", mkstemp)

    def stop_and_lock():
        # Called between steps: after the first epoch's checkpoint, lock the folder.
        run_dirs = list((tmp_path / "runs").iterdir())
        ckpt = run_dirs[0] / "checkpoints"
        if (ckpt / "last.pt").is_file() and not ckpt_dirs:
            ckpt_dirs.append(ckpt)
            if not IS_ROOT:
                ckpt.chmod(0o555)
        return False

    try:
        result = run({"data": str(folder), "epochs": 2}, tmp_path, should_stop=stop_and_lock)
    finally:
        for path in ckpt_dirs:
            path.chmod(0o755)
    assert result.status == "failed" and result.step == 12
    assert "permission denied" in result.reason and "epoch-0002.pt" in result.reason
    assert load_checkpoint(ckpt_dirs[0] / "last.pt")["step"] == 6


def test_runs_root_that_cannot_be_written_is_refused_before_training(folder, tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("a file where the runs folder should be")
    with pytest.raises(TrainingError, match=re.escape(str(blocked)) + r".*--runs-root"):
        run({"data": str(folder), "epochs": 1}, tmp_path, runs_root=blocked)


def test_events_file_that_cannot_be_written_does_not_stop_the_stream(tmp_path):
    class FullDisk(io.StringIO):
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    stream = io.StringIO()
    writer = EventWriter(stream)
    writer.attach(tmp_path / "events.jsonl")
    writer._file = FullDisk()
    writer.emit("step", step=1)
    writer.emit("run_end", status="failed", reason="disk full")
    writer.close()
    assert [json.loads(line)["type"] for line in stream.getvalue().splitlines()] == [
        "step", "run_end"]
    assert writer.file_error is not None and writer.file_error.errno == errno.ENOSPC


# --- 4. out of memory ----------------------------------------------------------------------


def poison_forward(monkeypatch, at_call: int, error: BaseException) -> None:
    real_build = train_mod.build_model

    def build(cfg):
        model = real_build(cfg)
        forward, count = model.forward, [0]

        def failing(x1, x2):
            count[0] += 1
            if count[0] >= at_call:
                raise error
            return forward(x1, x2)
        model.forward = failing
        return model

    monkeypatch.setattr(train_mod, "build_model", build)


@pytest.mark.parametrize("at_call,error,what", [
    (8, torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
     "out of GPU memory"),
    (1, torch.cuda.OutOfMemoryError("CUDA out of memory."), "out of GPU memory"),
    (8, RuntimeError("[enforce fail at alloc_cpu.cpp:117] . DefaultCPUAllocator: can't "
                     "allocate memory: you tried to allocate 8589934592 bytes."),
     "out of memory (RAM)"),
    (1, MemoryError(), "out of memory (RAM)"),
])
def test_out_of_memory_ends_the_run_suggesting_a_smaller_batch(folder, tmp_path, monkeypatch,
                                                               at_call, error, what):
    poison_forward(monkeypatch, at_call, error)
    result = run({"data": str(folder), "epochs": 2}, tmp_path)
    assert result.status == "failed" and result.step == at_call - 1
    assert result.reason.startswith(f"{what} at batch size 8 and 16 px")
    assert "--batch-size 4" in result.reason and "--image-size" in result.reason
    last = result.run_dir / "checkpoints" / "last.pt"
    if at_call > STEPS_PER_EPOCH:
        assert load_checkpoint(last)["step"] == STEPS_PER_EPOCH  # kept
        assert result.reason.endswith("the last checkpoint is kept")
    else:
        assert not last.exists()
        assert result.reason.endswith("no checkpoint had been saved yet")
    assert events_of(result.run_dir)[-1]["status"] == "failed"


def test_other_runtime_errors_are_not_mistaken_for_memory(folder, tmp_path, monkeypatch):
    poison_forward(monkeypatch, 2, RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        run({"data": str(folder), "epochs": 1}, tmp_path)


# --- 5. a hostile image folder through a real run ------------------------------------------


def write_good_oddities(folder: Path) -> list[str]:
    """Images that are unusual but fine; returns their names."""
    folder.mkdir(parents=True, exist_ok=True)
    a = (np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 250)
    Image.fromarray(a).save(folder / "sixteen-bit.png")
    assert Image.open(folder / "sixteen-bit.png").mode.startswith("I")
    imagegen.random_image(16, 16, seed=301).convert("CMYK").save(folder / "cmyk.jpg",
                                                                 quality=90)
    palette = imagegen.random_image(16, 16, seed=302).convert("P")
    palette.save(folder / "palette-transparent.png", transparency=0)
    exif = Image.Exif()
    exif[0x0112] = 6
    imagegen.random_image(24, 16, seed=303).save(folder / "exif-rotated.jpg", exif=exif)
    Image.new("RGB", (1, 1), (10, 200, 30)).save(folder / "one-pixel.png")
    imagegen.write_image(folder / "été café 1.png", 16, 16, seed=304)
    imagegen.write_image(folder / "日本 写真.JPG", 16, 16, seed=305)
    imagegen.write_image(folder / "with  two spaces .jpeg", 16, 16, seed=306)
    imagegen.random_image(16, 16, seed=307).save(folder / "grey.gif")
    target = imagegen.write_image(folder.parents[2] / "elsewhere" / "target.png", 16, 16,
                                  seed=308)
    os.symlink(target, folder / "good-link.png")
    return ["sixteen-bit.png", "cmyk.jpg", "palette-transparent.png", "exif-rotated.jpg",
            "one-pixel.png", "été café 1.png", "日本 写真.JPG", "with  two spaces .jpeg",
            "grey.gif", "good-link.png"]


def make_unreadable(path: Path, monkeypatch) -> None:
    if not IS_ROOT:
        path.chmod(0)
        return
    real_open = open

    def failing_open(file, *args, **kwargs):  # root reads any file: fail the open instead
        if isinstance(file, (str, os.PathLike)) and Path(file) == path:
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    for module in (scan_mod, cache_mod):
        monkeypatch.setattr(module, "open", failing_open, raising=False)


def decoded_cache_rows(cache_dir: Path) -> tuple[np.ndarray, dict]:
    (data,) = (cache_dir / "images").glob("*.u8")
    meta = json.loads(data.with_suffix(".json").read_text())
    rows = np.fromfile(data, dtype=np.uint8).reshape(meta["count"], meta["size"],
                                                     meta["size"], 3)
    return rows, meta


def test_hostile_folder_trains_on_every_good_image_and_lists_every_bad_one(tmp_path,
                                                                           monkeypatch):
    root = imagegen.make_class_folder(tmp_path / "data", {"a": 14, "b": 14}, width=16,
                                      height=16, ext=".jpg")
    good = [f"a/{i:03d}.jpg" for i in range(14)] + [f"b/{i:03d}.jpg" for i in range(14)]
    good += [f"a/odd/{name}" for name in write_good_oddities(root / "a" / "odd")]
    bad = {f"b/bad/{name}": reason
           for name, reason in imagegen.make_bad_files(root / "b" / "bad").items()}
    (root / "b" / "bad" / "real-bomb.png").write_bytes(imagegen.big_blank_png(4000, 4000))
    bad["b/bad/real-bomb.png"] = "too large: 4000 x 4000 pixels"
    secret = imagegen.write_image(root / "b" / "bad" / "secret.png", 16, 16, seed=400)
    make_unreadable(secret, monkeypatch)
    bad["b/bad/secret.png"] = "cannot be read (permission denied)"
    (root / "loose.png").write_bytes((root / "a" / "000.jpg").read_bytes())
    bad["loose.png"] = "not in a class sub-folder"
    try:
        result = run({"data": str(root), "epochs": 1, "max_image_pixels": 1_000_000},
                     tmp_path)
    finally:
        secret.chmod(0o644)
    assert result.status == "finished" and result.step == len(good) // 8, result.reason

    manifest = json.loads((result.run_dir / "manifest.json").read_text(encoding="utf-8"))
    assert sorted(r["path"] for r in manifest["images"]) == sorted(good)
    skipped = {s["path"]: s["reason"] for s in manifest["skipped"]}
    assert set(skipped) == set(bad)
    for path, reason in bad.items():
        assert skipped[path].startswith(reason), (path, skipped[path])
    start = next(e for e in events_of(result.run_dir) if e["type"] == "run_start")
    assert start["dataset"]["images"] == len(good) and start["dataset"]["skipped"] == len(bad)
    assert any(f"{len(bad)} file(s) skipped" in e["message"]
               for e in events_of(result.run_dir) if e["type"] == "warning")
    # Every good image is in the cache, decoded from its own file.
    rows, meta = decoded_cache_rows(tmp_path / "cache")
    assert meta["count"] == len(good)
    for i, record in enumerate(manifest["images"]):
        np.testing.assert_array_equal(rows[i], decode_image(root / record["path"], 16,
                                                            max_pixels=BIG))


def test_files_changed_or_removed_between_scan_and_decoding(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "data")
    real_scan = train_mod.scan_folder

    def scan_then_change(*args, **kwargs):
        manifest = real_scan(*args, **kwargs)
        imagegen.write_image(root / "a" / "003.png", 16, 16, seed=999)  # new content
        (root / "b" / "007.png").unlink()
        return manifest

    monkeypatch.setattr(train_mod, "scan_folder", scan_then_change)
    result = run({"data": str(root), "epochs": 1}, tmp_path)
    assert result.status == "finished" and result.step == 46 // 8
    manifest = Manifest.load(result.run_dir / "manifest.json")
    assert {(s.path, s.reason) for s in manifest.skipped} == {
        ("a/003.png", "changed since scan"), ("b/007.png", "disappeared since scan")}
    assert len(manifest.images) == 46


def test_images_added_removed_or_changed_after_a_run_give_a_new_cache(tmp_path):
    root = make_folder(tmp_path / "data")
    first = run({"data": str(root), "epochs": 1}, tmp_path)
    imagegen.write_image(root / "a" / "005.png", 16, 16, seed=4242)  # same name, new pixels
    (root / "b" / "010.png").unlink()
    for i in range(9):
        imagegen.write_image(root / "b" / f"new-{i}.png", 16, 16, seed=5000 + i)
    more = resume(first.run_dir, tmp_path, epochs=2)
    assert more.status == "finished", more.reason
    assert any("the folder changed since this run started: 7 steps per epoch now, 6 before"
               in w for w in warnings_of(first.run_dir))
    manifest = Manifest.load(first.run_dir / "manifest.json")
    assert len(manifest.images) == 56 and "b/010.png" not in {r.path for r in manifest.images}
    assert len(list((tmp_path / "cache" / "images").glob("*.u8"))) == 2  # a new cache
    data, _ = cache_mod.cache_paths(manifest, 16, tmp_path / "cache")
    rows = np.fromfile(data, dtype=np.uint8).reshape(56, 16, 16, 3)
    for i, record in enumerate(manifest.images):  # never stale pixels
        np.testing.assert_array_equal(rows[i], decode_image(root / record.path, 16,
                                                            max_pixels=BIG))


# --- 6. settings refused at the start of a run (the fuzzing: test_faults_settings.py) ---


@pytest.mark.parametrize("values,message", [
    ({"batch_size": 64}, "batch_size 64 is larger than the 48 usable"),
    ({"precision": "fp16"}, "precision fp16 needs a GPU"),
    ({"method": "moco", "batch_size": 32}, "MoCo needs more images"),
    ({"data": "folder\x00with a nul"}, "image folder not found"),
])
def test_settings_refused_at_start_leave_no_run_folder(folder, tmp_path, values, message):
    values = {"data": str(folder), **values}
    with pytest.raises((ConfigError, DataError), match=re.escape(message)):
        run(values, tmp_path)
    assert not (tmp_path / "runs").exists()


# --- 7. checkpoints and exports from elsewhere never run code ------------------------------


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

