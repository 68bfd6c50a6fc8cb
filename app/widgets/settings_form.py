"""A form for a settings dataclass, built from its fields' declared help and ranges.

Each value is checked as it is typed with the engine's own rules (engine.config.settings), so the
form and the command line accept and refuse exactly the same values. Fields whose default is
"auto" show "auto" as a choice or placeholder.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QWidget,
)

from app.style import set_invalid
from engine.config.settings import ConfigError, coerce, describe_allowed, field_types


class SettingsForm(QWidget):
    """Editable settings of one dataclass instance.

    Signals:
        changed(): a field now holds a new valid value.
        validity_changed(bool): whether every field is valid.
    """

    changed = Signal()
    validity_changed = Signal(bool)

    def __init__(self, values: Any, *, fields: list[str] | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._cls = type(values)
        self._types = field_types(self._cls)
        self._meta = {f.name: f.metadata for f in dataclasses.fields(values) if f.metadata}
        names = fields or [n for n, m in self._meta.items() if m["cli"]]
        self._editors: dict[str, QWidget] = {}
        self._rows: dict[str, QWidget] = {}  # each row's field widget (the editor, or its box)
        self._values: dict[str, Any] = {n: getattr(values, n) for n in names}
        self._errors: dict[str, str] = {}
        layout = self._layout = QFormLayout(self)
        for name in names:
            editor = self._make_editor(name, self._values[name])
            tip = f"{self._meta[name]['help']}\nAllowed: " + describe_allowed(
                self._meta[name], self._types[name])
            editor.setToolTip(tip)
            label = QLabel(name.replace("_", " "))
            label.setToolTip(tip)
            layout.addRow(label, editor)
            self._editors[name] = self._rows[name] = editor

    # --- editors -----------------------------------------------------------------------------

    def _make_editor(self, name: str, value: Any) -> QWidget:
        meta, tp = self._meta[name], self._types[name]
        if meta["choices"] is not None:
            box = QComboBox()
            items = (["auto"] if meta["auto"] else []) + [str(c) for c in meta["choices"]]
            box.addItems(items)
            box.setCurrentText("auto" if value is None else str(value))
            box.currentTextChanged.connect(lambda text, n=name: self._on_edited(n, text))
            return box
        if tp is bool and meta["auto"] is None:
            check = QCheckBox()
            check.setChecked(bool(value))
            check.toggled.connect(lambda on, n=name: self._on_edited(n, on))
            return check
        if tp is bool:
            box = QComboBox()
            box.addItems(["auto", "on", "off"])
            box.setCurrentText("auto" if value is None else ("on" if value else "off"))
            box.currentTextChanged.connect(lambda text, n=name: self._on_edited(n, text))
            return box
        edit = QLineEdit("" if value is None else str(value))
        if meta["auto"]:
            # The explanation is in the tooltip ("or auto (8/7 of image_size, ...)"): a
            # field is too narrow for it, and a cut-off placeholder reads as nonsense.
            edit.setPlaceholderText("auto")
            edit.setMinimumWidth(edit.fontMetrics().horizontalAdvance("auto") * 3)
        edit.textChanged.connect(lambda text, n=name: self._on_edited(n, text))
        return edit

    def _on_edited(self, name: str, raw: Any) -> None:
        meta, tp = self._meta[name], self._types[name]
        if isinstance(raw, str) and raw.strip() == "" and meta["auto"]:
            raw = None
        try:
            value = coerce(raw, tp, name, meta)
            candidate = dataclasses.replace(self.values(), **{name: value})
            value = getattr(candidate, name)  # __post_init__ validated ranges and relations
        except ConfigError as exc:
            self._set_error(name, str(exc))
            return
        except (TypeError, ValueError) as exc:  # a relation between fields, named in the text
            self._set_error(name, str(exc))
            return
        self._set_error(name, None)
        self._values[name] = value
        self.changed.emit()

    def _set_error(self, name: str, message: str | None) -> None:
        was_valid = not self._errors
        editor = self._editors.get(name)
        if message is None:
            self._errors.pop(name, None)
            if editor is not None:
                set_invalid(editor, False)
                editor.setToolTip(editor.toolTip().split("\n\n")[0])
        else:
            self._errors[name] = message
            if editor is not None:
                set_invalid(editor, True)
                editor.setToolTip(editor.toolTip().split("\n\n")[0] + "\n\n" + message)
        if was_valid != (not self._errors):
            self.validity_changed.emit(not self._errors)

    # --- reading ---------------------------------------------------------------------------

    def is_valid(self) -> bool:
        return not self._errors

    def errors(self) -> dict[str, str]:
        return dict(self._errors)

    def values(self) -> Any:
        """A new instance holding the last valid value of every field."""
        base = self._cls()
        return dataclasses.replace(base, **self._values)

    def set_shown(self, name: str, shown: bool) -> None:
        """Show or hide the row of ``name`` (a hidden field keeps its value)."""
        self._layout.setRowVisible(self._rows[name], shown)

    def is_shown(self, name: str) -> bool:
        return not self._rows[name].isHidden()

    def has(self, name: str) -> bool:
        """Whether the form edits setting ``name``."""
        return name in self._editors

    def add_button(self, name: str, text: str, tooltip: str) -> QPushButton:
        """A button at the right of the field ``name`` (e.g. "…" to choose a file)."""
        editor = self._editors[name]
        row, _ = self._layout.getWidgetPosition(editor)
        self._layout.removeWidget(editor)
        box = QWidget()
        line = QHBoxLayout(box)
        line.setContentsMargins(0, 0, 0, 0)
        line.addWidget(editor, 1)
        button = QPushButton(text)
        button.setToolTip(tooltip)
        line.addWidget(button)
        self._layout.setWidget(row, QFormLayout.FieldRole, box)
        self._rows[name] = box
        return button

    def set_value(self, name: str, value: Any) -> None:
        """Set a field programmatically (as if typed)."""
        editor = self._editors[name]
        text = "auto" if value is None else str(value)
        if isinstance(editor, QComboBox):
            if self._types[name] is bool and value is not None:
                text = "on" if value else "off"
            editor.setCurrentText(text)
        elif isinstance(editor, QCheckBox):
            editor.setChecked(bool(value))
        elif isinstance(editor, QLineEdit):
            editor.setText("" if value is None else str(value))
