"""What the three curation views (duplicates, outliers, label mistakes) have in common: a
button that asks the engine, a line saying what is shown, and the signals through which
the curate panel runs the engine, selects, tags and shows an image's neighbours."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QLabel, QPushButton, QSizePolicy, QWidget

from app.style import set_role


class CurationView(QWidget):
    """The base of a curation view. The panel fills it with :meth:`show_data` and
    :meth:`clear`, and runs the engine when it asks.

    Signals:
        run_requested(list): run the view's verb with these extra arguments (the panel adds
            the run, checkpoint and space).
        select_requested(object, str): select these image indices (int64 array); what
            chose them ("duplicates: redundant").
        tag_requested(object, str): tag these image indices; the tag name to propose.
        image_activated(int): an image was clicked: its index.
        scores_ready(str, object): a score per image of the run (float32 array), to colour
            the map by: its name.
    """

    run_requested = Signal(list)
    select_requested = Signal(object, str)
    tag_requested = Signal(object, str)
    image_activated = Signal(int)
    scores_ready = Signal(str, object)

    #: The engine verb the view shows.
    kind = ""

    def __init__(self, run_text: str, run_tip: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.run_button = QPushButton(run_text)
        self.run_button.setToolTip(run_tip)
        self.run_button.clicked.connect(self._on_run)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.summary.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self._busy = False
        self._ready = False

    def set_ready(self, ready: bool) -> None:
        """Whether the engine can be asked (a run is chosen)."""
        self._ready = ready
        self._update_buttons()

    def set_busy(self, busy: bool) -> None:
        """Whether this view's engine child is running."""
        self._busy = busy
        self._update_buttons()

    def show_message(self, text: str, *, error: bool = False) -> None:
        set_role(self.summary, "error" if error else "")
        self.summary.setText(text)

    def clear(self, text: str = "") -> None:
        """Show nothing (another run, checkpoint or space), with ``text``."""
        self.show_message(text)

    def has_data(self) -> bool:
        return False

    def _on_run(self) -> None:
        self.run_requested.emit([])

    def _update_buttons(self) -> None:
        self.run_button.setEnabled(self._ready and not self._busy)
