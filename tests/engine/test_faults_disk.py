"""A full disk or a read-only run folder loses nothing: checkpoint writes fail midway
(monkeypatched, as a full disk fails them) and the previous checkpoint is kept; a runs root
or events file that cannot be written is refused or reported."""

from __future__ import annotations

import errno
import io
import json
import re
from pathlib import Path

import pytest

from engine.run import checkpoint as checkpoint_mod
from engine.run import io as io_mod
from engine.run.checkpoint import load_checkpoint
from engine.run.events import EventWriter
from engine.training.loop import TrainingError
from tests.helpers import faults
from tests.helpers.faults import IS_ROOT, events_of, resume, run

# Fixtures shared with the other fault tests (tests/helpers/faults.py).
_keep_torch_threads = faults.keep_torch_threads
folder = faults.folder


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




def test_a_cache_too_large_for_the_disk_gets_a_smaller_side(folder, tmp_path, monkeypatch):
    """The automatic cache side (8/7 of image_size: 18 px at 16) does not fit: the run
    decodes at the largest side that does, and says why; a raw side set by hand is refused."""
    from engine.data import cache as cache_mod
    from engine.data.scan import scan_data

    images = len(scan_data(folder).images)
    free = int(images * 17 * 17 * 3 / 0.9) + 1  # room for 17 px, not for 18
    monkeypatch.setattr(cache_mod, "_free_bytes", lambda path: free)
    result = run({"data": str(folder), "cache_size": None, "max_steps": 1, "epochs": 1},
                 tmp_path)
    events = events_of(result.run_dir)
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["cache_size"] == 17
    plans = [e for e in events if e["type"] == "cache_plan"]
    assert plans and plans[0]["size"] == 17 and plans[0]["free"] == free
    assert "17 px" in plans[0]["message"] and plans[0]["images"] == images
    warnings = [e["message"] for e in events if e["type"] == "warning"]
    assert any(re.match(r"cache_size 17 px: a 18 px cache of .* does not fit", w)
               for w in warnings), warnings

    # (a raw cache by hand: an automatic format would choose a JPEG cache or none)
    with pytest.raises(Exception, match=r"needs .* but only .* is free .*--cache-size"):
        run({"data": str(folder), "cache_size": 20, "cache_format": "raw", "max_steps": 1,
             "epochs": 1}, tmp_path / "by-hand")
