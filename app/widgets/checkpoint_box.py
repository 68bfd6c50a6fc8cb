"""A drop-down of a run's checkpoints, with the untrained encoder as a baseline."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QComboBox, QWidget

from engine.run.layout import LAST, RANDOM_INIT, RunDir

RANDOM_LABEL = "random init (untrained baseline)"


class CheckpointBox(QComboBox):
    """Checkpoint names of one run, newest first, then ``random`` (the untrained encoder).

    :meth:`checkpoint` gives the name the engine's verbs take ("last", "epoch-0003",
    "random"); the shown texts are for people ("epoch 3", and "epoch 3 (last)" for one
    entry when last.pt holds the same step as the newest epoch file: RunDir.
    checkpoint_choices); the baseline's text says what it is.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.run_dir: Path | None = None
        #: Names of files shown under another entry's name ("epoch-0002" -> "last").
        self._aliases: dict[str, str] = {}
        #: The alias asked for by :meth:`set_checkpoint` while its entry is current.
        self._alias: str | None = None
        self.currentIndexChanged.connect(self._forget_alias)
        self.setToolTip("Which checkpoint's encoder to use. 'random init' is the same network "
                        "before training: compare with it to see what training bought.")

    def _entries(self) -> list[tuple[str, str]]:
        """(name, label) of each entry for the run, newest first, the baseline last; and
        the names shown under another entry (``self._aliases``: "epoch-0002" under "last"
        when they hold the same step)."""
        if self.run_dir is None:
            self._aliases = {}
            return []
        run = RunDir(self.run_dir)
        choices = run.checkpoint_choices()
        names = {name for name, _ in choices}
        self._aliases = {name: LAST for name in run.checkpoint_names() if name not in names}
        return [*choices, (RANDOM_INIT, RANDOM_LABEL)]

    def _fill(self, entries: list[tuple[str, str]], keep: str | None) -> None:
        """Show ``entries`` and choose ``keep`` (a name or an alias; else the first)."""
        self.blockSignals(True)
        self.clear()
        for name, label in entries:
            self.addItem(label, name)
        index = self.findData(self._aliases.get(keep, keep)) if keep else -1
        self.setCurrentIndex(index if index >= 0 else 0)
        self._alias = keep if index >= 0 and keep in self._aliases else None
        self.blockSignals(False)

    def set_run(self, run_dir: Path | None) -> None:
        """List ``run_dir``'s checkpoints, keeping the current choice when it still exists."""
        current = self.checkpoint()
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self._fill(self._entries(), current)
        self.currentIndexChanged.emit(self.currentIndex())

    def refresh(self) -> bool:
        """List the same run's checkpoints again (one was written, the run ended, the runs
        were refreshed). A choice of the newest entry (the baseline alone, before the first
        checkpoint) moves to the new newest one; another choice stays while it exists.
        Returns whether the choice changed; ``currentIndexChanged`` is emitted only then."""
        if self.run_dir is None:
            return False
        before = [(self.itemData(i), self.itemText(i)) for i in range(self.count())]
        entries = self._entries()
        if entries == before:
            return False
        current = self.checkpoint()
        names = [name for name, _ in entries]
        newest = not before or self.currentIndex() == 0
        still_there = current in names or current in self._aliases
        self._fill(entries, current if still_there and not newest else names[0])
        if self.checkpoint() == current:
            return False
        self.currentIndexChanged.emit(self.currentIndex())
        return True

    def checkpoint(self) -> str | None:
        """The current entry's checkpoint name (the alias asked for, when one was)."""
        data = self.currentData()
        if data is None:
            return None
        return self._alias if self._alias is not None else str(data)

    def set_checkpoint(self, name: str) -> None:
        """Choose checkpoint ``name``; a file shown under another entry ("epoch-0002" as
        "epoch 2 (last)") chooses that entry and keeps its own name for the engine."""
        index = self.findData(self._aliases.get(name, name))
        if index < 0:
            raise ValueError(f"no checkpoint {name!r} in {self.run_dir}")
        before, unchanged = self.checkpoint(), index == self.currentIndex()
        self._alias = name if name in self._aliases else None  # (read by the slots)
        self.setCurrentIndex(index)
        if unchanged and self.checkpoint() != before:  # same entry, another name
            self.currentIndexChanged.emit(index)

    def _forget_alias(self, _index: int) -> None:
        if self._alias is not None and self.currentData() != self._aliases.get(self._alias):
            self._alias = None  # another entry was chosen
