"""A drop-down of a run's checkpoints, with the untrained encoder as a baseline."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QComboBox, QWidget

from engine.run.layout import RANDOM_INIT, RunDir

RANDOM_LABEL = "random init (untrained baseline)"


class CheckpointBox(QComboBox):
    """Checkpoint names of one run, newest first, then ``random`` (the untrained encoder).

    :meth:`checkpoint` gives the name the engine's verbs take ("last", "epoch-0003",
    "random"); the shown text of the baseline is longer so a person knows what it is.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.run_dir: Path | None = None
        self.setToolTip("Which checkpoint's encoder to use. 'random init' is the same network "
                        "before training: compare with it to see what training bought.")

    def set_run(self, run_dir: Path | None) -> None:
        """List ``run_dir``'s checkpoints, keeping the current choice when it still exists."""
        current = self.checkpoint()
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.blockSignals(True)
        self.clear()
        names = list(reversed(RunDir(self.run_dir).checkpoint_names())) if self.run_dir else []
        for name in names:
            self.addItem(name, name)
        if self.run_dir is not None:
            self.addItem(RANDOM_LABEL, RANDOM_INIT)
        index = self.findData(current) if current else -1
        self.setCurrentIndex(index if index >= 0 else 0)
        self.blockSignals(False)
        self.currentIndexChanged.emit(self.currentIndex())

    def refresh(self) -> bool:
        """List the same run's checkpoints again (one was written, the run ended, the runs
        were refreshed). A choice of the newest entry (the baseline alone, before the first
        checkpoint) moves to the new newest one; another choice stays while it exists.
        Returns whether the choice changed; ``currentIndexChanged`` is emitted only then."""
        if self.run_dir is None:
            return False
        before = [self.itemData(i) for i in range(self.count())]
        names = list(reversed(RunDir(self.run_dir).checkpoint_names())) + [RANDOM_INIT]
        if names == before:
            return False
        current = self.checkpoint()
        newest = not before or current == before[0]
        keep = current if current in names and not newest else names[0]
        self.blockSignals(True)
        self.clear()
        for name in names:
            self.addItem(RANDOM_LABEL if name == RANDOM_INIT else name, name)
        self.setCurrentIndex(self.findData(keep))
        self.blockSignals(False)
        if keep == current:
            return False
        self.currentIndexChanged.emit(self.currentIndex())
        return True

    def checkpoint(self) -> str | None:
        data = self.currentData()
        return str(data) if data is not None else None

    def set_checkpoint(self, name: str) -> None:
        index = self.findData(name)
        if index < 0:
            raise ValueError(f"no checkpoint {name!r} in {self.run_dir}")
        self.setCurrentIndex(index)
