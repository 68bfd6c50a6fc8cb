"""The dialog that asks how and where to write a subset of a run's images: a folder of
copies, a folder of symbolic links (both keeping the class sub-folders), or a list file
(.txt of paths, .csv of path,class) that ``contrastive-engine train --data`` reads.

The writing itself is the engine's ``subset`` verb, run by the Explore page; this dialog
only checks what it can before (a destination chosen, a list file's suffix).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (
    QButtonGroup,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

#: (engine mode, button text); the engine's flags are --copy, --link and --list.
MODES = (("copy", "A folder of copies (class sub-folders kept)"),
         ("link", "A folder of symbolic links to the originals (same layout, no extra space)"),
         ("list", "A list of paths: .txt (one a line) or .csv (path,class)"))


class SubsetDialog(QDialog):
    """Choose how (copy, link, list) and where to write ``count`` images."""

    def __init__(self, count: int, default_folder: Path, parent: QWidget | None = None
                 ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export the selected images")
        self.default_folder = Path(default_folder)
        self.buttons = QButtonGroup(self)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"Write the {count:,} selected images as:"))
        for i, (mode, text) in enumerate(MODES):
            button = QRadioButton(text)
            button.setProperty("mode", mode)
            self.buttons.addButton(button, i)
            layout.addWidget(button)
        self.buttons.button(0).setChecked(True)
        self.buttons.idToggled.connect(lambda _i, on: on and self._suggest())
        self.destination = QLineEdit()
        self.destination.textChanged.connect(lambda _: self._check())
        browse = QPushButton("Choose…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.destination, 1)
        row.addWidget(browse)
        layout.addLayout(row)
        self.problem = QLabel()
        self.problem.setWordWrap(True)
        layout.addWidget(self.problem)
        self.box = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        self.box.button(QDialogButtonBox.Ok).setText("Export")
        self.box.accepted.connect(self.accept)
        self.box.rejected.connect(self.reject)
        layout.addWidget(self.box)
        self._suggest()

    def mode(self) -> str:
        return self.buttons.checkedButton().property("mode")

    def path(self) -> Path:
        return Path(self.destination.text().strip()).expanduser()

    def set_choice(self, mode: str, path: Path) -> None:
        """Choose ``mode`` and ``path`` (as a person would, for tests and scripts)."""
        for button in self.buttons.buttons():
            button.setChecked(button.property("mode") == mode)
        self.destination.setText(str(path))

    def problem_text(self) -> str:
        """Why the choice cannot be written (empty when it can be tried)."""
        text = self.destination.text().strip()
        if not text:
            return "Choose where to write them."
        path = self.path()
        if self.mode() == "list":
            if path.suffix.lower() not in (".txt", ".csv"):
                return "A list file ends in .txt or .csv."
            if path.exists():
                return f"{path.name} exists already: choose another name."
        elif path.exists() and (not path.is_dir() or any(path.iterdir())):
            return f"{path} is not an empty folder: choose a new or empty one."
        return ""

    def _suggest(self) -> None:
        mode = self.mode()
        name = "subset.txt" if mode == "list" else "subset"
        current = self.destination.text().strip()
        base = Path(current).parent if current else self.default_folder
        self.destination.setText(str(base / name))

    def _browse(self) -> None:
        if self.mode() == "list":
            path, _ = QFileDialog.getSaveFileName(self, "List file", self.destination.text(),
                                                  "Lists (*.txt *.csv)")
        else:
            path = QFileDialog.getExistingDirectory(self, "Folder", str(self.default_folder))
        if path:
            self.destination.setText(path)

    def _check(self) -> None:
        problem = self.problem_text()
        self.problem.setText(problem)
        self.box.button(QDialogButtonBox.Ok).setEnabled(not problem)
