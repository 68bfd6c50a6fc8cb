"""What the Explore page does with its selection: select by class or tag, tag and untag,
export the selected images, and prepare a new run on them or without them.

:class:`SelectionActions` owns the page's :class:`app.model.selection.Selection` and its
:class:`app.widgets.selection_bar.SelectionBar`. Tags are read and written in a worker
thread (engine.evaluate.tags via app.model.run_tags); writing a subset folder is the
engine's ``subset`` verb in an engine child (copying 100,000 files takes a while); a list
for retraining is written here, as the absolute paths ``train --data`` reads.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, QThreadPool, Signal
from PySide6.QtWidgets import QDialog, QWidget

from app.child.engine_jobs import EngineJob, EngineQueue
from app.child.workers import Relay, Task
from app.dialogs.subset_dialog import SubsetDialog
from app.model.collector import collector_paused
from app.model.explore_data import MapData
from app.model.run_tags import tag_images, tag_indices, untag_images
from app.model.selection import REPLACE, Selection, as_indices
from app.widgets.selection_bar import SelectionBar
from engine.run.io import write_atomic
from engine.run.layout import RunDir


def slug(text: str, limit: int = 40) -> str:
    """``text`` as a short file-name part: letters, digits and dashes."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:limit] or "selection"


def free_path(folder: Path, stem: str, suffix: str) -> Path:
    """``folder/stem+suffix``, or with -2, -3... added when that exists."""
    path, n = folder / f"{stem}{suffix}", 2
    while path.exists():
        path, n = folder / f"{stem}-{n}{suffix}", n + 1
    return path


def write_path_list(path: Path, data: MapData, indices: np.ndarray) -> None:
    """A .txt list of the absolute paths of images ``indices`` of ``data``, one a line."""
    root = Path(data.root)
    text = "".join(f"{root / data.paths[i]}\n" for i in indices.tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = text.encode("utf-8", errors="surrogateescape")
    write_atomic(path, lambda f: f.write(payload))


class SelectionActions(QObject):
    """The selection of the map shown and what can be done with it.

    Signals:
        said(str): a message for the page's status line.
        failed(str): something failed; the message says what and what to do.
        tags_changed(object): the run's tags on the map shown ({name: int64 indices}).
        retrain_ready(object, object, str): a list file (Path) of the images to train on,
            the run (Path) whose settings to train with, and what the list holds.
    """

    said = Signal(str)
    failed = Signal(str)
    tags_changed = Signal(object)
    retrain_ready = Signal(object, object, str)

    def __init__(self, jobs: EngineQueue, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.jobs = jobs
        self.selection = Selection(self)
        self.bar = SelectionBar(self.selection, parent)
        self.run_dir: Path | None = None
        self.data: MapData | None = None
        #: the run and image paths of the last map shown (a new map of the same images, e.g.
        #: another checkpoint's, keeps the selection)
        self._shown: tuple[Path | None, list[str]] = (None, [])
        #: the run's tags on the map shown: {name: sorted int64 indices}
        self.tags: dict[str, np.ndarray] = {}
        #: asks where to write an export; tests replace it (returns (mode, path) or None)
        self.ask_destination = self._ask_destination
        self._generation = 0
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)  # tag writes in the order asked
        self._relay = Relay(self)
        self._relay.done.connect(self._on_tags_read)
        self._relay.failed.connect(lambda _g, text: self.failed.emit(
            f"The run's tags could not be read or written: {text}"))
        bar = self.bar
        bar.select_class.connect(self.select_class)
        bar.select_tag.connect(self.select_tag)
        bar.clear_requested.connect(self.selection.clear)
        bar.invert_requested.connect(self.invert)
        bar.tag_requested.connect(self.tag_selection)
        bar.untag_requested.connect(self.untag_selection)
        bar.export_requested.connect(self.export)
        bar.retrain_requested.connect(self.retrain)

    # --- the map shown ---------------------------------------------------------------------

    def set_map(self, run_dir: Path | None, data: MapData | None) -> None:
        """A new map (or none while one is made): the selection stays while the run and
        its images stay the same (another checkpoint's or method's map of them), else it
        is emptied; the tags are read again."""
        if data is not None:
            same = run_dir == self._shown[0] and data.paths == self._shown[1]
            self._shown = (run_dir, data.paths)
            if not same:
                self.selection.clear()
        elif run_dir != self._shown[0]:
            self.selection.clear()
            self._shown = (run_dir, [])
        self.run_dir, self.data = run_dir, data
        self.bar.set_total(len(data) if data is not None else 0)
        self.bar.set_classes(list(data.classes) if data is not None and data.has_labels
                             else [])
        self.reload_tags()

    def reload_tags(self) -> None:
        self._generation += 1
        run, data = self.run_dir, self.data
        if run is None or data is None:
            self._on_tags_read(self._generation, {})
            return
        paths = list(data.paths)

        def read() -> dict[str, np.ndarray]:
            with collector_paused():  # the run's manifest: a record per image
                return tag_indices(run, paths)

        self._pool.start(Task(read, self._generation, self._relay))

    def wait(self, msecs: int = 10_000) -> bool:
        """Wait for the tag reads and writes asked so far (tests, closing)."""
        return self._pool.waitForDone(msecs)

    # --- choosing --------------------------------------------------------------------------

    def select(self, indices, mode: str = REPLACE, source: str = "") -> None:
        """Combine ``indices`` (image indices of the map) with the selection."""
        self.selection.set(as_indices(indices), mode, source)

    def select_class(self, name: str, mode: str = REPLACE) -> None:
        data = self.data
        if data is None or name not in data.classes:
            return
        label = data.classes.index(name)
        self.select(np.flatnonzero(data.labels == label), mode, f"class {name}")

    def select_tag(self, name: str, mode: str = REPLACE) -> None:
        if name in self.tags:
            self.select(self.tags[name], mode, f"tag {name}")

    def invert(self) -> None:
        if self.data is not None:
            others = np.setdiff1d(np.arange(len(self.data)), self.selection.indices,
                                  assume_unique=True)
            source = f"all but {self.selection.source}" if self.selection.source else "all"
            self.selection.set(others, REPLACE, source)

    # --- tags ------------------------------------------------------------------------------

    def tag_selection(self, name: str) -> None:
        self.tag(name, self.selection.indices)

    def untag_selection(self, name: str) -> None:
        self._write_tags(name, self.selection.indices, add=False)

    def tag(self, name: str, indices) -> None:
        """Tag images ``indices`` of the map with ``name`` (saved in the run's tags.json)."""
        self._write_tags(name, as_indices(indices), add=True)

    def _write_tags(self, name: str, indices: np.ndarray, *, add: bool) -> None:
        run, data = self.run_dir, self.data
        if run is None or data is None or not len(indices):
            return
        if not add and name not in self.tags:
            self.said.emit(f"No tag {name!r} to take off.")
            return
        paths = [data.paths[i] for i in indices.tolist()]
        self._generation += 1
        count = len(paths)

        def work() -> tuple[dict[str, np.ndarray], str]:
            with collector_paused():  # the run's manifest: a record per image
                return write()

        def write() -> tuple[dict[str, np.ndarray], str]:
            if add:
                changed = tag_images(run, name, paths)
                text = f"Tagged {changed:,} images {name!r}" + (
                    f" ({count - changed:,} had it already)." if changed < count else ".")
            else:
                changed = untag_images(run, name, paths)
                text = f"Took {name!r} off {changed:,} images."
            return tag_indices(run, list(data.paths)), text

        self._pool.start(Task(work, self._generation, self._relay))

    def _on_tags_read(self, generation: int, value) -> None:
        if generation != self._generation:
            return
        tags, text = value if isinstance(value, tuple) else (value, "")
        self.tags = tags
        self.bar.set_tags({name: len(rows) for name, rows in tags.items()})
        self.tags_changed.emit(tags)
        if text:
            self.said.emit(text)

    # --- export and retrain ----------------------------------------------------------------

    def _ask_destination(self, count: int, folder: Path) -> tuple[str, Path] | None:
        dialog = SubsetDialog(count, folder, self.bar.window())
        if dialog.exec() != QDialog.Accepted:
            return None
        return dialog.mode(), dialog.path()

    def export(self) -> None:
        """Ask how and where, then write the selected images with the engine's ``subset``."""
        run, data, indices = self.run_dir, self.data, self.selection.indices
        if run is None or data is None or not len(indices):
            return
        choice = self.ask_destination(len(indices), Path(run).parent)
        if choice is None:
            return
        mode, dest = choice
        stamp = time.strftime("%Y%m%d-%H%M%S")
        chosen = free_path(RunDir(run).path / "subsets", f"export-{stamp}", ".txt")
        try:
            write_path_list(chosen, data, indices)
        except OSError as exc:
            self.failed.emit(f"The list of the selected images could not be written to "
                             f"{chosen}: {exc}. Check that the run folder is writable.")
            return
        verb = {"copy": "Copying", "link": "Linking", "list": "Listing"}[mode]
        self.jobs.enqueue(EngineJob(
            "subset", ["subset", "--run", str(run), "--paths", str(chosen), f"--{mode}",
                       str(dest)],
            f"{verb} {len(indices):,} images to {dest}",
            on_result=lambda r: self.said.emit(
                f"Wrote {r['images']:,} images ({r['mode']}) to {r['path']}."),
            on_failed=lambda reason: self.failed.emit(f"The export failed: {reason}"),
            uses_cache=False))

    def retrain(self, keep: bool) -> Path | None:
        """Write the list of the images to train on (the selection, or every other image of
        the map) into the run's subsets/ folder and announce it (``retrain_ready``)."""
        run, data, indices = self.run_dir, self.data, self.selection.indices
        if run is None or data is None or not len(indices):
            return None
        source = self.selection.source or "selection"
        if not keep:
            indices = np.setdiff1d(np.arange(len(data)), indices, assume_unique=True)
            if not len(indices):
                self.failed.emit("Every image is selected: nothing would be left to train on.")
                return None
        stem = f"{'on' if keep else 'without'}-{slug(source)}-{len(indices)}"
        path = free_path(RunDir(run).path / "subsets", stem, ".txt")
        try:
            write_path_list(path, data, indices)
        except OSError as exc:
            self.failed.emit(f"The list of images could not be written to {path}: {exc}. "
                             "Check that the run folder is writable.")
            return None
        what = (f"the {len(indices):,} images of {source}" if keep else
                f"the {len(indices):,} images not in {source}")
        self.retrain_ready.emit(path, Path(run), what)
        return path
