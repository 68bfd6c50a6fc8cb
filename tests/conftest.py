"""Test-wide set-up: nothing may touch the real home folder, the network or a screen."""

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory, monkeypatch):
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("CONTRASTIVE_EXPLORER_CACHE", str(base / "user-cache"))
    monkeypatch.setenv("CONTRASTIVE_EXPLORER_DATA", str(base / "user-data"))
    monkeypatch.setenv("CONTRASTIVE_EXPLORER_RUNS", str(base / "user-runs"))
