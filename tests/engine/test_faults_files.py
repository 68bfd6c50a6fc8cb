"""Half-written and damaged files lose nothing: damaged or half-written checkpoints are
passed over for the newest sound one, and garbage in a run folder's JSON files is named
when read. The faults are made in the files of a finished run, then ``train()`` resumes it
in this process."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from engine.config.settings import ConfigError
from engine.config.train_config import TrainConfig, load_config_file
from engine.data import cache as cache_mod
from engine.data import scan as scan_mod
from engine.run import checkpoint as checkpoint_mod
from engine.run.checkpoint import find_resume_point, load_checkpoint
from engine.run.events import EventWriter, read_events
from engine.training.loop import TrainingError
from tests.helpers import faults, folders
from tests.helpers.faults import (
    BIG,
    STEPS_PER_EPOCH,
    assert_run_dir_sound,
    copy_run,
    damage,
    events_of,
    resume,
    run,
    segments,
    truncated,
    warnings_of,
)

# Fixtures shared with the other fault tests (tests/helpers/faults.py).
_keep_torch_threads = faults.keep_torch_threads
folder = faults.folder
finished_run = faults.finished_run


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
    manifest = scan_mod.scan_folder(folders.make_flat_folder(tmp_path / "d", 3))
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


