"""Launch `contrastive-explorer --demo` as a person would, on a virtual X screen (Xvfb),
and take a screenshot of what appears.

Needs Debian's xvfb and the X libraries Qt's xcb platform uses (.ci/run installs them);
without Xvfb the test is skipped with that reason.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.screen import screenshot

pytest.importorskip("PySide6")

def test_the_app_opens_a_window_on_the_demo_dataset(xvfb, tmp_path):
    script = Path(sys.executable).with_name("contrastive-explorer")
    assert script.is_file(), "the console script is installed with the package"
    env = {**os.environ, "DISPLAY": xvfb, "QT_QPA_PLATFORM": "xcb",
           "XDG_CONFIG_HOME": str(tmp_path / "config")}  # QSettings of this launch only
    app = subprocess.Popen([str(script), "--demo", "--runs-root", str(tmp_path / "runs"),
                            "--theme", "light"], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
    shot = tmp_path / "launch.png"
    try:
        deadline = time.monotonic() + 120
        pixels = None
        while time.monotonic() < deadline:
            assert app.poll() is None, app.stdout.read().decode(errors="replace")[-3000:]
            pixels = screenshot(xvfb, shot)
            # The bare screen is one colour; the window brings its widgets and thumbnails.
            if len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50:
                time.sleep(3)  # let the data scan and the thumbnails arrive
                pixels = screenshot(xvfb, shot)
                break
            time.sleep(1)
        assert pixels is not None and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50, \
            "no window appeared within 120 s"
        covered = (pixels != pixels[0, 0]).any(axis=2).mean()
        assert covered > 0.3, f"the window covers only {covered:.0%} of the screen"
        assert app.poll() is None
        artefacts = os.environ.get("CONTRASTIVE_EXPLORER_ARTEFACTS")
        if artefacts:
            Path(artefacts).mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, Path(artefacts) / "launch.png")
        # SIGTERM (or Ctrl-C in its terminal) closes the window as its close button would:
        # no run is training, so the app ends normally.
        app.send_signal(signal.SIGTERM)
        assert app.wait(30) == 0, app.stdout.read().decode(errors="replace")[-3000:]
    finally:
        app.send_signal(signal.SIGTERM)
        try:
            app.wait(20)
        except subprocess.TimeoutExpired:
            app.kill()
