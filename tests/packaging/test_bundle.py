"""The PyInstaller bundle (packaging/build_bundle.sh), when one has been built: its
executable trains as the engine (``--engine``), and the window's EngineProcess, frozen,
starts it as its child. Skipped unless dist/contrastive-explorer/ exists."""

import sys
from pathlib import Path

import pytest

from tests.engine.test_train import make_folder

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "dist" / "contrastive-explorer" / "contrastive-explorer"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not BUNDLE.is_file(),
                                 reason="no bundle: run packaging/build_bundle.sh first")]


def test_the_frozen_app_trains_as_its_own_engine_child(qtbot, monkeypatch, tmp_path):
    pytest.importorskip("PySide6")
    from app.engine_process import EngineProcess

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
