"""Screenshots of a virtual X screen (the `xvfb` fixture in tests/conftest.py), for the
tests that launch the app as a person would."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

GRAB = r"""
import sys
from PySide6.QtGui import QGuiApplication
app = QGuiApplication(sys.argv[:1])
screen = app.primaryScreen()
ok = screen.grabWindow(0).save(sys.argv[1], "PNG")
sys.exit(0 if ok else 1)
"""


def screenshot(display: str, path: Path) -> np.ndarray:
    env = {**os.environ, "DISPLAY": display, "QT_QPA_PLATFORM": "xcb"}
    subprocess.run([sys.executable, "-c", GRAB, str(path)], env=env, check=True, timeout=60,
                   capture_output=True)
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))
