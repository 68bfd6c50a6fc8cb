"""Engine children run one after another: a queue of :class:`EngineJob` over
:class:`app.child.engine_process.EngineProcess`.

Each job gets its own EngineProcess, so a cancelled child can still be ending while the
next one starts; the signals of a cancelled child are ignored. A cancel interrupts the child
(SIGINT, as Ctrl+C in a terminal: the verb stops where it is, a cache being built saves what
it decoded so far) and kills it if it has not exited ``CANCEL_GRACE_MS`` later (on Windows,
which has no SIGINT for another process, it is killed at once; a cache build then keeps
what it saved in its last few seconds).
"""

from __future__ import annotations

import os
import signal
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal

from app.child.engine_process import EngineProcess

#: How long a cancelled child has to exit after SIGINT before it is killed.
CANCEL_GRACE_MS = 3000


@dataclass
class EngineJob:
    """One engine child: ``kind`` (a name to cancel or find it by, e.g. "map"), its CLI
    arguments (``--json`` is added, and ``--cache-dir`` unless ``uses_cache`` is False: a
    verb that decodes no image, such as ``subset``, takes none), what the status line says
    while it runs, and what to do with its result, its success and its failure (None: the
    queue's :attr:`EngineQueue.failed` signal reports it)."""

    kind: str
    args: list[str]
    describe: str
    on_result: Callable[[dict], None] = lambda result: None
    on_finished: Callable[[], None] = lambda: None
    on_failed: Callable[[str], None] | None = None
    key: str = ""
    uses_cache: bool = True


class EngineQueue(QObject):
    """Runs queued engine jobs one at a time.

    When a job fails, the queued jobs of the same kind are dropped (UMAP after a failed PCA
    map could not work either).

    Signals:
        started(object): a job's child was started (the EngineJob).
        progress(object, dict): the running job and one of its progress events.
        cancelled(object, dict): the running job was cancelled: the job and its last
            progress event ({} when it sent none), to say what was kept.
        failed(object, str): a job without ``on_failed`` failed: the job and the message.
        idle(): the last job ended and none waits.
    """

    started = Signal(object)
    progress = Signal(object, dict)
    cancelled = Signal(object, dict)
    failed = Signal(object, str)
    idle = Signal()

    def __init__(self, cache_dir: Path | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.cache_dir = cache_dir
        self._waiting: deque[EngineJob] = deque()
        self._engine: EngineProcess | None = None
        self.running: EngineJob | None = None
        #: the running job's last progress event ({} before its first)
        self.last_progress: dict = {}

    def is_busy(self) -> bool:
        """Whether a child is running (queued jobs start only when it ends)."""
        return self._engine is not None

    def has(self, kind: str, key: str) -> bool:
        """Whether a job of this kind and key runs or waits."""
        jobs = [*self._waiting, *([self.running] if self.running else [])]
        return any(j.kind == kind and j.key == key for j in jobs)

    def enqueue(self, job: EngineJob) -> None:
        self._waiting.append(job)
        if self._engine is None:
            self._start_next()

    def cancel(self, kind: str | None = None) -> bool:
        """Drop the waiting jobs of ``kind`` (None: all) and kill the running one if it is
        of that kind. Returns whether anything was cancelled."""
        before = len(self._waiting)
        self._waiting = deque(j for j in self._waiting if kind is not None and j.kind != kind)
        cancelled = len(self._waiting) < before
        if self._engine is not None and (kind is None or self.running.kind == kind):
            engine, self._engine, job, self.running = self._engine, None, self.running, None
            last, self.last_progress = self.last_progress, {}
            _interrupt(engine)
            self.cancelled.emit(job, last)
            self._start_next()
            cancelled = True
        return cancelled

    def _start_next(self) -> None:
        if self._engine is not None:  # a callback of the last job already started one
            return
        if not self._waiting:
            self.idle.emit()
            return
        job = self.running = self._waiting.popleft()
        self.last_progress = {}
        engine = self._engine = EngineProcess(self)
        engine.event.connect(lambda event: self._on_event(engine, event))
        engine.result.connect(lambda result: engine is self._engine and job.on_result(result))
        engine.ended.connect(lambda status, code, reason: self._on_ended(engine, status, reason))
        args = job.args + ["--json"]
        if self.cache_dir is not None and job.uses_cache:
            args += ["--cache-dir", str(self.cache_dir)]
        self.started.emit(job)
        engine.start(args)

    def _on_event(self, engine: EngineProcess, event: dict) -> None:
        if engine is self._engine and event.get("type") == "progress":
            self.last_progress = event
            self.progress.emit(self.running, event)

    def _on_ended(self, engine: EngineProcess, status: str, reason: str) -> None:
        engine.deleteLater()
        if engine is not self._engine:
            return  # cancelled: its end says nothing new
        job, self._engine, self.running = self.running, None, None
        self.last_progress = {}
        if status == "finished":
            job.on_finished()
        else:
            self._waiting = deque(j for j in self._waiting if j.kind != job.kind)
            if job.on_failed is not None:
                job.on_failed(reason)
            else:
                self.failed.emit(job, reason)
        self._start_next()


def _interrupt(engine: EngineProcess) -> None:
    """End a cancelled child: SIGINT now, a kill if it is still running after the grace
    time (at once where there is no SIGINT to send)."""
    pid = engine.pid()
    if pid is None:
        return
    if sys.platform == "win32":
        engine.kill()
        return
    try:
        os.kill(pid, signal.SIGINT)
    except OSError:  # already gone
        return
    QTimer.singleShot(CANCEL_GRACE_MS, engine, engine.kill)
