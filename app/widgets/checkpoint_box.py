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

    def set_run(self, run_dir: Path | None) -> None:
        """List ``run_dir``'s checkpoints, keeping the current choice when it still exists."""
        current = self.checkpoint()
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.blockSignals(True)
        self.clear()
        choices = RunDir(self.run_dir).checkpoint_choices() if self.run_dir else []
        self._aliases = {}
        names = {name for name, _ in choices}
        for name, label in choices:
            self.addItem(label, name)
        for epoch_name in RunDir(self.run_dir).checkpoint_names() if self.run_dir else []:
            if epoch_name not in names:
                self._aliases[epoch_name] = LAST
        if self.run_dir is not None:
            self.addItem(RANDOM_LABEL, RANDOM_INIT)
        index = self.findData(self._aliases.get(current, current)) if current else -1
        self.setCurrentIndex(index if index >= 0 else 0)
        self._alias = current if index >= 0 and current in self._aliases else None
        self.blockSignals(False)
        self.currentIndexChanged.emit(self.currentIndex())

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
