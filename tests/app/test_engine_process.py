"""The engine child process seen from the app: events arrive as signals, stop checkpoints,
and a child that misbehaves or dies never hangs the caller."""

import sys
from pathlib import Path

import pytest

pytest.importorskip("PySide6")

from app.child import engine_process
from app.child.engine_process import EngineProcess
from engine.run.checkpoint import load_checkpoint
from engine.run.events import STRICT_ENV
from engine.run.layout import RunDir
from tests.helpers.folders import make_folder
from tests.helpers.settings import TINY


@pytest.fixture(autouse=True)
def _strict_events(monkeypatch):
    """Real engine children check every event they write against the schema."""
    monkeypatch.setenv(STRICT_ENV, "1")


def train_args(folder: Path, tmp_path: Path) -> list[str]:
    args = ["train", "--data", str(folder), "--runs-root", str(tmp_path / "runs"),
            "--cache-dir", str(tmp_path / "cache"), "--epochs", "1000"]
    for key, value in TINY.items():
        args += ["--" + key.replace("_", "-"), str(value)]
    return args


def test_events_arrive_and_stop_checkpoints(qtbot, tmp_path):
    folder = make_folder(tmp_path / "shapes")
    child = EngineProcess()
    events = []
    child.event.connect(events.append)
    child.start(train_args(folder, tmp_path))
    qtbot.waitUntil(lambda: any(e["type"] == "step" for e in events), timeout=120_000)
    with qtbot.waitSignal(child.ended, timeout=60_000) as ended:
        child.stop()
    status, code, _ = ended.args
    assert (status, code) == ("stopped", 0)
    types = [e["type"] for e in events]
    assert types.index("run_start") < types.index("step") and types[-1] == "run_end"
    run_dir = Path(events[-1]["run_dir"])
    assert load_checkpoint(RunDir(run_dir).last_checkpoint)["step"] == events[-1]["step"]
    assert any("step" in line for line in child.log_tail)  # stderr log lines are kept


def test_a_killed_child_is_reported_as_crashed(qtbot, tmp_path):
    folder = make_folder(tmp_path / "shapes")
    child = EngineProcess()
    steps = []
    child.event.connect(lambda e: e["type"] == "step" and steps.append(e))
    child.start(train_args(folder, tmp_path))
    qtbot.waitUntil(lambda: bool(steps), timeout=120_000)
    with qtbot.waitSignal(child.ended, timeout=30_000) as ended:
        child.kill()
    assert ended.args[0] == "crashed" and "checkpoint" in ended.args[2]
    assert not child.is_running()


FAKE_ENGINE = r"""
import sys
print("not json at all", flush=True)
print('{"v":1,"type":"step","step":1,"loss":2.0}', flush=True)
print('{"v":1,"type":"future_event","x":1}', flush=True)
sys.stderr.write("Traceback: something broke\n")
sys.stdout.write('{"v":1,"type":"st')
sys.stdout.flush()
sys.exit(3)
"""


def test_malformed_and_truncated_lines_are_reported_not_fatal(qtbot, monkeypatch):
    monkeypatch.setattr(engine_process, "engine_command",
                        lambda: (sys.executable, ["-c", FAKE_ENGINE]))
    child = EngineProcess()
    events, bad = [], []
    child.event.connect(events.append)
    child.malformed.connect(bad.append)
    with qtbot.waitSignal(child.ended, timeout=30_000) as ended:
        child.start([])
    assert ended.args[0] == "crashed" and ended.args[1] == 3
    assert [e["type"] for e in events] == ["step", "future_event"]
    assert bad == ["not json at all", '{"v":1,"type":"st']
    assert "Traceback: something broke" in child.log_tail


def test_a_child_that_cannot_start_is_reported(qtbot, monkeypatch, tmp_path):
    monkeypatch.setattr(engine_process, "engine_command",
                        lambda: (str(tmp_path / "no-such-python"), []))
    child = EngineProcess()
    with qtbot.waitSignal(child.ended, timeout=10_000) as ended:
        child.start([])
    assert ended.args[0] == "crashed" and "could not be started" in ended.args[2]


def fake(code: str):
    return lambda: (sys.executable, ["-c", code])


def test_an_exploring_verb_finishes_with_its_result(qtbot, monkeypatch):
    monkeypatch.setattr(engine_process, "engine_command", fake(
        'print(\'{"v":1,"type":"progress","phase":"embed","done":1,"total":2}\')\n'
        'print(\'{"v":1,"type":"result","top1":0.5}\')'))
    child = EngineProcess()
    results = []
    child.result.connect(results.append)
    with qtbot.waitSignal(child.ended, timeout=30_000) as ended:
        child.start([])
    assert ended.args[:2] == ["finished", 0]
    assert results == [{"v": 1, "type": "result", "top1": 0.5}]


def test_an_error_event_is_the_reason_of_a_failure(qtbot, monkeypatch):
    monkeypatch.setattr(engine_process, "engine_command", fake(
        'import sys\nprint(\'{"v":1,"type":"error","message":"the folder has no labels"}\')\n'
        'sys.exit(2)'))
    child = EngineProcess()
    with qtbot.waitSignal(child.ended, timeout=30_000) as ended:
        child.start([])
    assert ended.args == ["failed", 2, "the folder has no labels"]


def test_a_crash_names_the_last_thing_the_child_said(qtbot, monkeypatch):
    monkeypatch.setattr(engine_process, "engine_command", fake(
        'import sys\nsys.stderr.write("MemoryError: out of memory\\n")\nsys.exit(1)'))
    child = EngineProcess()
    with qtbot.waitSignal(child.ended, timeout=30_000) as ended:
        child.start([])
    assert ended.args[0] == "crashed" and "MemoryError: out of memory" in ended.args[2]


@pytest.mark.skipif(sys.platform == "win32", reason="Unix sessions")
def test_the_child_runs_in_a_session_of_its_own(qtbot, monkeypatch, tmp_path):
    # A run left going when the window closes must not be hung up with the app's terminal.
    import os

    marker = tmp_path / "sid"
    monkeypatch.setattr(engine_process, "engine_command", fake(
        f"import os, time; open({str(marker)!r}, 'w').write(str(os.getsid(0))); "
        "time.sleep(30)"))
    child = EngineProcess()
    child.start([])
    qtbot.waitUntil(lambda: marker.is_file() and marker.read_text() != "", timeout=10_000)
    try:
        assert int(marker.read_text()) == child.pid() != os.getsid(0)
    finally:
        child.kill()
        child.wait(5000)
