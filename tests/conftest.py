"""Test-wide set-up: nothing may touch the real home folder, the network or a screen, and
events are written in strict mode: an event the schema (engine.run.schema) does not describe
fails the test that wrote it, in this process and in engine child processes."""

import os
import shutil
import subprocess

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("CONTRASTIVE_EXPLORER_STRICT_EVENTS", "1")  # engine.run.events.STRICT_ENV


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory, monkeypatch):
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("CONTRASTIVE_EXPLORER_CACHE", str(base / "user-cache"))
    monkeypatch.setenv("CONTRASTIVE_EXPLORER_DATA", str(base / "user-data"))
    monkeypatch.setenv("CONTRASTIVE_EXPLORER_RUNS", str(base / "user-runs"))


@pytest.fixture
def xvfb():
    """A private virtual screen; yields its DISPLAY value."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (Debian: apt-get install xvfb; .ci/run does it)")
    read, write = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "1400x900x24",
                               "-nolisten", "tcp"], pass_fds=(write,),
                              stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as f:
        number = f.readline().strip()
    if not number:
        server.kill()
        pytest.fail("Xvfb did not start")
    yield f":{number}"
    server.terminate()
    server.wait(10)
