"""A cache build stopped in the middle resumes where it stopped: through the CLI, with
`stop` on stdin (as the app's Stop writes it) and with SIGINT (Ctrl+C in a terminal)."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.folders import make_slow_folder
from tests.helpers.settings import TINY

ROOT = Path(__file__).resolve().parents[2]


def train_args(folder, tmp):
    args = [sys.executable, "-m", "engine", "train", "--data", str(folder), "--runs-root",
            str(tmp / "runs"), "--cache-dir", str(tmp / "cache"), "--decode-workers", "1",
            "--json"]
    for k, v in {**TINY, "epochs": 1}.items():
        args += ["--" + k.replace("_", "-"), str(v)]
    return args


def interrupt_decoding(args, stop):
    """Start training, stop it (``stop(proc)``) at its first decode progress event with
    images still to decode; returns every event it wrote."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    events = []
    try:
        for line in proc.stdout:
            event = json.loads(line)
            events.append(event)
            if (event["type"] == "progress" and event.get("phase") == "decode"
                    and 0 < event["done"] < event["total"]):
                stop(proc)
                break
        events += [json.loads(line) for line in proc.stdout]
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    return events


def saved_progress(cache):
    (path,) = cache.rglob("*.partial.json")
    return json.loads(path.read_text())["done"]


def say_stop(proc):
    proc.stdin.write("stop\n")
    proc.stdin.flush()


@pytest.mark.slow  # three engine children and a short run: about 2 min on two busy cores
def test_a_stopped_cache_build_resumes_where_it_stopped(tmp_path):
    folder = make_slow_folder(tmp_path / "big", 160)
    args = train_args(folder, tmp_path)
    events = interrupt_decoding(args, say_stop)
    end = events[-1]
    assert end["type"] == "run_end" and end["status"] == "stopped"
    assert "decoded so far are kept" in end["reason"]
    assert not any(e["type"] == "run_start" for e in events)  # no run folder was made
    first = saved_progress(tmp_path / "cache")
    told = max(e["done"] for e in events if e.get("phase") == "decode")
    assert told <= first < 160  # the stop saved at least what it reported

    events = interrupt_decoding(args, lambda proc: proc.send_signal(signal.SIGINT))
    plan = next(e for e in events if e["type"] == "cache_plan")
    assert plan["resume_from"] == first and not plan["reuse"]
    decoded = [e["done"] for e in events if e.get("phase") == "decode"]
    assert decoded[0] >= first  # counts on from there, not from 0
    second = saved_progress(tmp_path / "cache")
    assert first < second < 160  # the partial file grew

    out = subprocess.run(args, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    plan = next(e for e in events if e["type"] == "cache_plan")
    assert plan["resume_from"] == second
    assert events[-1]["status"] == "finished"
    assert not list((tmp_path / "cache").rglob("*.partial*"))  # complete: no partial left
    (meta,) = [p for p in (tmp_path / "cache").rglob("*.json") if "partial" not in p.name
               and json.loads(p.read_text()).get("resumed_from") is not None]
    assert json.loads(meta.read_text())["count"] == 160
