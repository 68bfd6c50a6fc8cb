"""When the runs list is out of date: runs added, deleted or moved by anyone, a run resumed
or started by another process, a run trained outside this window going on."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QFileSystemWatcher, QObject, QTimer, Signal

from app.model.run_model import RUNNING_ELSEWHERE, RunSummary
from engine.run.layout import RunDir

#: The runs list is made again this long after the runs folder changed, so a burst of
#: changes costs one refresh.
REFRESH_DELAY_MS = 300
#: While a run is trained outside this window (running elsewhere, or left running in the
#: background), the runs list is made again this often: the file-system watcher sees the
#: runs folder, not the events a run appends, and not at all on many network shares.
LIVE_REFRESH_MS = 5000
#: Statuses of runs that a process other than this window's engine child trains now.
TRAINED_OUTSIDE = (RUNNING_ELSEWHERE, "running in the background")


class RunsWatcher(QObject):
    """Watches a runs folder for what the runs list shows; :meth:`watch` after each listing.

    Signals:
        changed(): list the runs again (REFRESH_DELAY_MS after the last change seen, or
            every LIVE_REFRESH_MS while a run is trained outside this window).
    """

    changed = Signal()

    def __init__(self, runs_root: Path, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.runs_root = Path(runs_root)
        self._delay = QTimer(self)
        self._delay.setSingleShot(True)
        self._delay.setInterval(REFRESH_DELAY_MS)
        self._delay.timeout.connect(self.changed)
        self._watcher = QFileSystemWatcher(self)
        self._watcher.directoryChanged.connect(lambda _path: self._delay.start())
        self._watcher.fileChanged.connect(lambda _path: self._delay.start())
        #: Runs while a run of the list is trained outside this window.
        self.live_refresh = QTimer(self)
        self.live_refresh.setInterval(LIVE_REFRESH_MS)
        self.live_refresh.timeout.connect(self.changed)

    def watch(self, runs: list[RunSummary]) -> None:
        """The list now shows ``runs``: watch the runs folder (runs added, deleted, moved),
        the events.jsonl of each run that nothing trains now (a run resumed elsewhere
        appends to it) and folders that are not runs yet (a run starting elsewhere writes
        its config.json there). Runs being trained are not watched (they change all the
        time): the periodic refresh sees them."""
        self._delay.stop()
        wanted = set()
        if self.runs_root.is_dir():
            wanted.add(str(self.runs_root))  # (again, after the folder was made or replaced)
            try:
                wanted |= {str(p) for p in self.runs_root.iterdir()
                           if p.is_dir() and not RunDir(p).config.exists()}
            except OSError:
                pass
        wanted |= {str(RunDir(run.path).events) for run in runs
                   if run.events_mtime is not None and run.status != "running"
                   and run.status not in TRAINED_OUTSIDE}
        watched = set(self._watcher.files()) | set(self._watcher.directories())
        if watched - wanted:
            self._watcher.removePaths(sorted(watched - wanted))
        if wanted - watched:
            self._watcher.addPaths(sorted(wanted - watched))
        if not any(run.status in TRAINED_OUTSIDE for run in runs):
            self.live_refresh.stop()
        elif not self.live_refresh.isActive():
            self.live_refresh.start()

    def stop(self) -> None:
        """No more periodic refreshes (the window is closing)."""
        self.live_refresh.stop()
