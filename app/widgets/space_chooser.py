"""The choice of embedding space: h (the encoder's output) or z (the projection head's)."""

from __future__ import annotations

from PySide6.QtWidgets import QComboBox, QWidget

SPACES = (("h (representation)", "h"), ("z (projection)", "z"))
SPACE_TIP = ("h: the encoder's output, what transfers to other tasks (the usual choice). "
             "z: the projection head's output, what the contrastive loss compared.")


class SpaceChooser(QComboBox):
    """h or z; :meth:`space` gives the name the engine's ``--space`` takes.

    Signals (QComboBox's): currentIndexChanged(int) when the choice changes.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        for text, space in SPACES:
            self.addItem(text, space)
        self.setToolTip(SPACE_TIP)

    def space(self) -> str:
        return str(self.currentData())

    def set_space(self, space: str) -> None:
        index = self.findData(space)
        if index < 0:
            raise ValueError(f"no embedding space {space!r}: choose h or z")
        self.setCurrentIndex(index)
