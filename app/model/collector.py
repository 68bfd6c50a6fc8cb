"""The garbage collector paused while a worker thread builds a structure of one record per
image (a folder's scan, a run's manifest read for its tags): no Qt.

A full collection walks every object the collector tracks and holds every thread meanwhile,
the GUI thread's included. While 100,000 records are being made, such passes come one after
another (each new batch of survivors starts one) and each walks all the records made so far:
0.3-0.7 s each on a busy two-core machine (benchmarks/bench_app_100k.py). Reference
counting still frees whatever is dropped while the collector is paused; only cycles wait
for it to run again, and its first full pass afterwards walks the records that stay once.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_pauses = 0
_was_enabled = True


@contextmanager
def collector_paused() -> Iterator[None]:
    """No automatic garbage collection inside (any thread's), nested or from several
    threads at once; the collector is on again when the last pause ends, unless it was off
    before the first."""
    global _pauses, _was_enabled
    with _lock:
        if _pauses == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _lock:
            _pauses -= 1
            if _pauses == 0 and _was_enabled:
                gc.enable()
