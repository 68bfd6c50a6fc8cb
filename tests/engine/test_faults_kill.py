"""Killed mid-run, the run loses nothing: the real CLI (``python -m engine train``) is
SIGKILLed at seeded moments, including while a checkpoint is being written, and every
resume ends with exactly the model of a run never interrupted."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import typing
from pathlib import Path

import pytest
import torch

from engine.run.checkpoint import load_checkpoint
from engine.run.events import read_events
from tests.helpers import faults
from tests.helpers.faults import STEPS_PER_EPOCH, TINY, assert_run_dir_sound, run, segments

# Fixtures shared with the other fault tests (tests/helpers/faults.py).
_keep_torch_threads = faults.keep_torch_threads
folder = faults.folder
finished_run = faults.finished_run


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


