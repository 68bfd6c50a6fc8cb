"""Helpers of the app's fault tests: a stand-in engine command, event lines, and closing a
window whose run may still be going."""

import json
import sys

ENGINE_MS = 120_000  # a real engine child: start, scan, decode, first steps (2 busy cores)


def fake(code: str):
    """An engine command that runs ``code`` instead of the engine."""
    return lambda: (sys.executable, ["-c", code])


def event_line(**fields) -> str:
    return json.dumps({"v": 1, **fields})


def close_without_asking(win):
    """pytest-qt closes the window at teardown: a run still going is killed first."""
    engine = win.train_page.engine
    if engine.is_running():
        engine.kill()
        engine.wait(10_000)
