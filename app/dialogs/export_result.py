"""The Export dialog's result panel: the file written, its size, how it was verified, the
metadata JSON beside it and the engine's loading code, with buttons to show the folder and
copy the code. It shows what it is given; the dialog decides what that is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QFontDatabase, QFontMetrics
from PySide6.QtWidgets import (
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.style import set_role


def human_size(n: int) -> str:
    """``n`` bytes for people: '44.7 MB (44,712,345 bytes)'."""
    value = float(n)
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            break
        value /= 1000
    short = f"{n} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
    return short if unit == "bytes" else f"{short} ({n:,} bytes)"


def bold_width(button: QPushButton) -> int:
    """The width ``button`` needs to show its text in bold (the style sheet's default
    button), where its size hint counts the regular font."""
    bold = button.font()
    bold.setBold(True)
    extra = (QFontMetrics(bold).horizontalAdvance(button.text())
             - QFontMetrics(button.font()).horizontalAdvance(button.text()))
    return button.sizeHint().width() + max(0, extra)


def _text_box(tooltip: str) -> QPlainTextEdit:
    """A read-only, selectable, monospace text box that does not wrap."""
    box = QPlainTextEdit()
    box.setReadOnly(True)
    box.setLineWrapMode(QPlainTextEdit.NoWrap)
    box.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
    box.setTextInteractionFlags(Qt.TextSelectableByMouse | Qt.TextSelectableByKeyboard)
    box.setToolTip(tooltip)
    return box


class ExportResultPanel(QGroupBox):
    """File, size, verification, metadata and loading code of one export."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Result", parent)
        self.file_label = QLabel()
        self.file_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.file_label.setWordWrap(True)
        self.size_label = QLabel()
        self.verification_label = QLabel()
        self.verification_label.setWordWrap(True)
        self.verification_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.metadata_text = _text_box("The metadata JSON written beside the export")
        self.code_text = _text_box(
            "Python that loads this export by its absolute path, runs it on a dummy batch "
            "(or reads the arrays) and prints the shapes; the engine wrote it into the "
            "metadata as load_snippet")
        self.show_folder_button = QPushButton("Show in folder")
        self.show_folder_button.setToolTip("Open the folder that holds the export")
        self.copy_code_button = QPushButton("Copy loading code")
        self.copy_code_button.setToolTip("Copy the loading code below to the clipboard")

        form = QFormLayout()
        form.addRow("File", self.file_label)
        form.addRow("Size", self.size_label)
        form.addRow("Verification", self.verification_label)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(QLabel("Metadata written beside it"))
        layout.addWidget(self.metadata_text, 1)
        layout.addWidget(QLabel("Loading code (Python, runs as it is)"))
        layout.addWidget(self.code_text, 1)
        buttons = QHBoxLayout()
        buttons.addWidget(self.show_folder_button)
        buttons.addWidget(self.copy_code_button)
        buttons.addStretch(1)
        layout.addLayout(buttons)
        self.clear()

    def clear(self) -> None:
        for label in (self.file_label, self.size_label, self.verification_label):
            label.setText("—")
        set_role(self.verification_label, "")
        self.metadata_text.setPlainText("")
        self.set_code("", "The loading code appears here after an export.")
        self.show_folder_button.setEnabled(False)

    def show_files(self, path: Path, metadata_path: Path) -> dict[str, Any] | None:
        """Show the export at ``path`` and its metadata; returns the metadata read from
        disk, or None when it cannot be read (the panel then says so)."""
        self.file_label.setText(str(path))
        try:
            size = human_size(path.stat().st_size)
        except OSError as exc:
            size = f"cannot read the file's size: {exc.strerror or exc}"
        metadata: dict[str, Any] | None
        try:
            metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            metadata = None
            self.metadata_text.setPlainText(
                f"The metadata {metadata_path} cannot be read ({exc}); export again.")
        else:
            self.metadata_text.setPlainText(json.dumps(metadata, indent=2, ensure_ascii=False))
            head = metadata.get("head_file") if isinstance(metadata, dict) else None
            if head and (path.parent / head).is_file():
                size += (f"; projection head {head}: "
                         f"{human_size((path.parent / head).stat().st_size)}")
        self.size_label.setText(size)
        self.show_folder_button.setEnabled(True)
        return metadata

    def set_verification(self, text: str, role: str) -> None:
        self.verification_label.setText(text)
        set_role(self.verification_label, role)

    def set_code(self, code: str, placeholder: str = "") -> None:
        """Show ``code`` (copyable when not empty); ``placeholder`` says why there is none."""
        self.code_text.setPlainText(code)
        if placeholder:
            self.code_text.setPlaceholderText(placeholder)
        self.copy_code_button.setEnabled(bool(code))

    def code(self) -> str:
        return self.code_text.toPlainText()
