"""The PyInstaller bundle (packaging/build_bundle.sh), when one has been built: its
executable trains as the engine (``--engine``), and the window's EngineProcess, frozen,
starts it as its child. Skipped unless dist/contrastive-explorer/ exists."""

import sys
from pathlib import Path

import pytest

from tests.helpers.folders import make_folder
from tests.screen import screenshot

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "dist" / "contrastive-explorer" / "contrastive-explorer"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not BUNDLE.is_file(),
                                 reason="no bundle: run packaging/build_bundle.sh first")]


def test_the_frozen_app_trains_as_its_own_engine_child(qtbot, monkeypatch, tmp_path):
    pytest.importorskip("PySide6")
    from app.child.engine_process import EngineProcess

    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", str(BUNDLE))
    folder = make_folder(tmp_path / "shapes")
    child = EngineProcess()
    events = []
    child.event.connect(events.append)
    with qtbot.waitSignal(child.ended, timeout=300_000) as ended:
        child.start(["train", "--data", str(folder), "--epochs", "1", "--batch-size", "8",
                     "--image-size", "16", "--backbone", "resnet18", "--precision", "fp32",
                     "--knn-every", "0", "--runs-root", str(tmp_path / "runs"),
                     "--cache-dir", str(tmp_path / "cache")])
    assert tuple(ended.args[:2]) == ("finished", 0), ended.args
    assert events[-1]["type"] == "run_end"
    assert (Path(events[-1]["run_dir"]) / "checkpoints" / "last.pt").is_file()


def test_the_bundle_opens_its_window_on_a_virtual_screen(xvfb, tmp_path):
    import os
    import signal
    import subprocess
    import time

    import numpy as np

    env = {**os.environ, "DISPLAY": xvfb, "QT_QPA_PLATFORM": "xcb",
           "XDG_CONFIG_HOME": str(tmp_path / "config")}
    app = subprocess.Popen([str(BUNDLE), "--demo", "--runs-root", str(tmp_path / "runs")],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    shot = tmp_path / "bundle.png"
    try:
        deadline, colours = time.monotonic() + 180, 0
        while time.monotonic() < deadline and colours <= 50:
            assert app.poll() is None, app.stdout.read().decode(errors="replace")[-3000:]
            time.sleep(2)
            pixels = screenshot(xvfb, shot)
            colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
        assert colours > 50, "no window appeared within 180 s"
        artefacts = os.environ.get("CONTRASTIVE_EXPLORER_ARTEFACTS")
        if artefacts:
            Path(artefacts).mkdir(parents=True, exist_ok=True)
            (Path(artefacts) / "bundle.png").write_bytes(shot.read_bytes())
        app.send_signal(signal.SIGTERM)  # closes the window as its close button would
        assert app.wait(30) == 0
    finally:
        if app.poll() is None:
            app.kill()
