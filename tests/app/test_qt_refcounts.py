"""The Qt binding keeps Python's reference counts: PySide6 6.12.0 on Python 3.11 lost one
reference to None on every processEvents() (and two on every nested event loop), so a long
session or test run aborted with "none_dealloc". pyproject.toml leaves that version out."""

import sys

import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import QEventLoop, QTimer


def _counts():
    return sys.getrefcount(None), sys.getrefcount(True), sys.getrefcount(False)


def test_processing_events_keeps_the_counts_of_none_true_and_false(qapp):
    before = _counts()
    for _ in range(2000):
        qapp.processEvents()
    for _ in range(200):
        loop = QEventLoop()
        QTimer.singleShot(0, loop.quit)
        loop.exec()
    after = _counts()
    # Other code may hold or drop a few references meanwhile; a leak shows as thousands.
    assert all(abs(b - a) < 100 for a, b in zip(before, after)), (before, after)
