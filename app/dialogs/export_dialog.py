"""The Export dialog: write a checkpoint's encoder (torchvision state_dict, TorchScript, ONNX,
safetensors) or its embeddings (.npy, .csv) in an engine child process, then show what was
written: the file, its size, how it was verified, the metadata JSON beside it and the
loading code the engine wrote (app/dialogs/export_result.py).

The export itself is ``contrastive-engine export ... --json`` (engine/cli/explore.py): the
engine writes atomically, verifies encoder exports against its own encoder, returns the
loading code (``load_snippet``) and refuses with a message that says what to do (a missing
optional package names the extra to install). This dialog only chooses the arguments and
shows the outcome.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.child.engine_jobs import EngineJob
from app.child.engine_process import EngineProcess
from app.dialogs.export_formats import ALL_SUFFIXES, FORMATS, suffix_of
from app.dialogs.export_result import ExportResultPanel, bold_width
from app.widgets.checkpoint_box import CheckpointBox
from app.widgets.job_status import JobStatus
from app.widgets.space_chooser import SPACE_TIP, SpaceChooser
from engine.evaluate.explore import EMBEDDING_FORMATS, default_export_path
from engine.export.metadata import metadata_path_of
from engine.run.layout import RunDir


class ExportDialog(QDialog):
    """Choose checkpoint, format, space, head and output file; export in an engine child;
    show the file, its size, the verification and the metadata written beside it.

    Signals:
        exported(dict): the engine's result of a finished export (``path``, ``format``,
            ``metadata``, ``load_snippet``, and for encoders ``verified``, ``max_abs_diff``,
            ``tolerance``).
    """

    exported = Signal(dict)

    def __init__(self, run_dir: Path, cache_dir: Path | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.run_dir = Path(run_dir)
        self.engine = EngineProcess(self)
        #: The last finished export's result (None before one, or after a failure).
        self.last_result: dict[str, Any] | None = None
        #: The metadata JSON written beside the last export, as read from disk.
        self.metadata: dict[str, Any] | None = None
        self._pending: dict[str, Any] | None = None
        self._out_chosen = False  # the person typed or browsed a path: keep it
        self._cancelled = False
        self._started_at = 0.0
        self._running_out: Path | None = None
        self._running_format = ""

        self.checkpoint_box = CheckpointBox()
        self.format_box = QComboBox()
        for i, (fmt, label, tip) in enumerate(FORMATS):
            self.format_box.addItem(label, fmt)
            self.format_box.setItemData(i, tip, Qt.ToolTipRole)
        self.space_box = SpaceChooser()
        self.space_box.setToolTip("Which embeddings to write (embeddings formats only). "
                                  + SPACE_TIP)
        self.head_check = QCheckBox("Include projection head")
        self.head_check.setToolTip(
            "Also export the projection head g (encoder formats). TorchScript and ONNX then "
            "return (h, z); the torchvision and safetensors formats write the head to a "
            "second file, <name>-head<suffix>, that loads into a torch.nn.Sequential. "
            "Downstream tasks usually want h alone.")
        self.out_edit = QLineEdit()
        self.out_edit.setToolTip("The file to write; a metadata JSON is written beside it "
                                 "(<file name>.json). An existing file is replaced.")
        browse = QPushButton("Browse…")
        browse.setToolTip("Choose where to write the export")
        browse.clicked.connect(self._on_browse)

        self.export_button = QPushButton("Export")
        self.export_button.setDefault(True)
        self.export_button.setToolTip("Write the export in a background process, then load it "
                                      "back and check it against the engine")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the export; nothing half-written is left behind")
        self.close_button = QPushButton("Close")
        self.close_button.setToolTip("Close this window (a running export is cancelled)")
        self.export_button.clicked.connect(self.export)
        self.cancel_button.clicked.connect(self.cancel)
        self.close_button.clicked.connect(self.reject)

        self.status = JobStatus()
        self._job: EngineJob | None = None

        self.result_panel = ExportResultPanel()
        self.result_panel.show_folder_button.clicked.connect(self._on_show_folder)
        self.result_panel.copy_code_button.clicked.connect(self._on_copy_code)
        # In a dialog a focused button becomes the default one (bold in the style sheet,
        # which widens its text past the width laid out for it); only Export is default.
        for button in (browse, self.cancel_button, self.close_button,
                       self.result_panel.show_folder_button,
                       self.result_panel.copy_code_button):
            button.setAutoDefault(False)
        self.export_button.setMinimumWidth(bold_width(self.export_button))

        form = QFormLayout()
        form.addRow("Checkpoint", self.checkpoint_box)
        form.addRow("Format", self.format_box)
        form.addRow("Space", self.space_box)
        form.addRow("", self.head_check)
        out_row = QHBoxLayout()
        out_row.addWidget(self.out_edit, 1)
        out_row.addWidget(browse)
        form.addRow("Output file", out_row)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        for button in (self.export_button, self.cancel_button, self.close_button):
            buttons.addWidget(button)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        layout.addWidget(self.result_panel, 1)
        self.resize(680, 720)

        self.checkpoint_box.currentIndexChanged.connect(lambda _i: self._on_choice_changed())
        self.format_box.currentIndexChanged.connect(lambda _i: self._on_choice_changed())
        self.space_box.currentIndexChanged.connect(lambda _i: self._on_choice_changed())
        self.out_edit.textEdited.connect(self._on_out_edited)
        self.engine.event.connect(self._on_event)
        self.engine.result.connect(self._on_result)
        self.engine.ended.connect(self._on_ended)

        self.set_run(self.run_dir)
        self._clear_result()
        self._set_running(False)

    # --- choices ------------------------------------------------------------------------

    def set_run(self, run_dir: Path) -> None:
        """Export from ``run_dir`` (lists its checkpoints; the output follows unless chosen)."""
        self.run_dir = Path(run_dir)
        self.setWindowTitle(f"Export — {self.run_dir.name}")
        self._out_chosen = False
        self.checkpoint_box.set_run(self.run_dir)
        self._on_choice_changed()

    def refresh_checkpoints(self) -> None:
        """Read the run's checkpoints again (the window calls this when the run wrote one,
        ended, or the runs were refreshed); a new choice updates the output path."""
        self.checkpoint_box.refresh()

    def format(self) -> str:
        return str(self.format_box.currentData())

    def set_format(self, fmt: str) -> None:
        index = self.format_box.findData(fmt)
        if index < 0:
            raise ValueError(f"unknown export format {fmt!r}")
        self.format_box.setCurrentIndex(index)

    def space(self) -> str:
        return self.space_box.space()

    def output_path(self) -> Path:
        """The file the export will write (relative names go into the run's exports/)."""
        text = self.out_edit.text().strip()
        if not text:
            return self._default_path()
        path = Path(text).expanduser()
        return path if path.is_absolute() else RunDir(self.run_dir).exports / path

    def _default_path(self) -> Path:
        return default_export_path(self.run_dir, self.checkpoint_box.checkpoint() or "last",
                                   self.format(), self.space())

    def _on_choice_changed(self) -> None:
        fmt = self.format()
        embeddings = fmt in EMBEDDING_FORMATS
        self.space_box.setEnabled(embeddings)
        self.head_check.setEnabled(not embeddings)
        self.format_box.setToolTip(dict((f, tip) for f, _label, tip in FORMATS)[fmt])
        if not self._out_chosen:
            self.out_edit.setText(str(self._default_path()))
        else:  # keep the person's name, with the new format's suffix
            path = Path(self.out_edit.text().strip())
            if path.suffix.lower() in ALL_SUFFIXES and path.suffix.lower() != suffix_of(fmt):
                self.out_edit.setText(str(path.with_suffix(suffix_of(fmt))))
        if not self.engine.is_running():
            self._say_ready()

    def _on_out_edited(self, text: str) -> None:
        self._out_chosen = bool(text.strip())
        if not self.engine.is_running():
            self._say_ready()

    def _on_browse(self) -> None:
        fmt = self.format()
        suffix = suffix_of(fmt)
        label = dict((f, lab) for f, lab, _tip in FORMATS)[fmt]
        chosen, _filter = QFileDialog.getSaveFileName(
            self, "Export to", str(self.output_path()), f"{label} (*{suffix})")
        if chosen:
            path = Path(chosen)
            if path.suffix.lower() != suffix:
                path = path.with_name(path.name + suffix)
            self.out_edit.setText(str(path))
            self._out_chosen = True
            self._say_ready()

    def _say_ready(self) -> None:
        out = self.output_path()
        note = f" {out.name} exists and will be replaced." if out.exists() else ""
        self._say(f"Export {self.format_box.currentText()} of "
                  f"{self.checkpoint_box.currentText()} to {out}.{note}", "")

    # --- running ------------------------------------------------------------------------

    def arguments(self) -> list[str]:
        """The ``contrastive-engine`` arguments for the current choices."""
        fmt = self.format()
        args = ["export", "--run", str(self.run_dir),
                "--checkpoint", self.checkpoint_box.checkpoint() or "last",
                "--format", fmt, "--out", str(self.output_path()), "--json"]
        if fmt in EMBEDDING_FORMATS:
            args += ["--space", self.space()]
        elif self.head_check.isChecked():
            args.append("--include-head")
        if self.cache_dir is not None:
            args += ["--cache-dir", str(self.cache_dir)]
        return args

    def export(self) -> None:
        """Start the export in an engine child (nothing happens while one runs)."""
        if self.engine.is_running():
            return
        if not RunDir(self.run_dir).is_run():
            self._say(f"Cannot export: the run folder {self.run_dir} is gone (deleted or "
                      "moved outside the app). Close this window and choose another run.",
                      "error")
            return
        self._clear_result()
        self._pending = None
        self._cancelled = False
        self._started_at = time.time()
        self._running_out = self.output_path()
        self._running_format = self.format()
        self._set_running(True)
        args = self.arguments()
        self._job = EngineJob("export", args, f"Exporting to {self._running_out}")
        self.status.job_started(self._job)
        self.engine.start(args)

    def cancel(self) -> None:
        """Stop a running export (the engine writes atomically: no partial file remains)."""
        if self.engine.is_running():
            self._cancelled = True
            self.engine.kill()

    def reject(self) -> None:
        """Close; a running export is cancelled first (its file is written atomically)."""
        if self.engine.is_running():
            self._cancelled = True
            self.engine.kill()
            self.engine.wait(5000)
        super().reject()

    def _set_running(self, running: bool) -> None:
        for widget in (self.export_button, self.checkpoint_box, self.format_box,
                       self.out_edit):
            widget.setEnabled(not running)
        embeddings = self.format() in EMBEDDING_FORMATS
        self.space_box.setEnabled(not running and embeddings)
        self.head_check.setEnabled(not running and not embeddings)
        self.cancel_button.setVisible(running)
        if not running:
            self.status.jobs_idle()

    def _on_event(self, event: dict) -> None:
        if event.get("type") == "progress" and self._job is not None:
            self.status.job_progress(self._job, event)

    def _on_result(self, result: dict) -> None:
        self._pending = {k: v for k, v in result.items() if k not in ("v", "type")}

    def _on_ended(self, status: str, code: int, reason: str) -> None:
        self._set_running(False)
        if self._cancelled:
            self._say("Export cancelled; nothing was written. Press Export to start again.",
                      "")
            return
        if status == "finished" and self._pending is not None:
            self._show_result(self._pending)
            return
        if status == "finished":  # exit 0 but no result line: say so, not "done"
            reason = ("the engine finished without reporting a result; see the log "
                      "(contrastive-engine export on a terminal shows it)")
        self._say(f"Export failed: {reason}", "error")
        self._show_failed_check()

    # --- showing the outcome ----------------------------------------------------------

    def _show_result(self, result: dict[str, Any]) -> None:
        self.last_result = result
        path = Path(result["path"])
        fmt = str(result.get("format") or self._running_format)
        metadata_path = Path(result.get("metadata") or metadata_path_of(path))
        self._show_files(path, metadata_path, fmt)
        if fmt in EMBEDDING_FORMATS:
            self.result_panel.set_verification(
                f"not applicable: a copy of the saved embeddings ({result.get('images')} "
                f"images x {result.get('dim')} dimensions, space {result.get('space')})", "")
        elif result.get("verified"):
            self.result_panel.set_verification(
                f"verified: max abs difference {result['max_abs_diff']:.2e} ≤ tolerance "
                f"{result['tolerance']:.2e} (loaded back and compared with the engine)", "ok")
        else:
            self.result_panel.set_verification(
                f"NOT verified: max abs difference {result.get('max_abs_diff')} > tolerance "
                f"{result.get('tolerance')}; do not use this file", "error")
        code = result.get("load_snippet") or (self.metadata or {}).get("load_snippet") or ""
        self.result_panel.set_code(str(code) if self.metadata is not None else "")
        self._say(f"Exported to {path}.", "ok")
        self.exported.emit(result)

    def _show_files(self, path: Path, metadata_path: Path, fmt: str) -> None:
        self._running_format = fmt
        self._running_out = path
        self.metadata = self.result_panel.show_files(path, metadata_path)

    def _show_failed_check(self) -> None:
        """A failed verification keeps the files and says "passed": false in the metadata:
        show them (only when written by this export)."""
        out = self._running_out
        if out is None or self._running_format in EMBEDDING_FORMATS:
            return
        metadata_path = metadata_path_of(out)
        try:
            fresh = metadata_path.stat().st_mtime >= self._started_at - 1
        except OSError:
            return
        if not fresh or not out.is_file():
            return
        self._show_files(out, metadata_path, self._running_format)
        check = (self.metadata or {}).get("verification", {})
        self.result_panel.set_verification(
            f"FAILED: max abs difference {check.get('max_abs_diff')} (tolerance "
            f"{check.get('tolerance')})" + (f"; {check['error']}" if check.get("error") else "")
            + ". The file is kept only for inspection; do not use it.", "error")
        self.result_panel.set_code("", "No loading code: this export did not verify.")

    def _clear_result(self) -> None:
        self.last_result = None
        self.metadata = None
        self.result_panel.clear()

    def loading_code(self) -> str:
        """The engine's loading code of the last export, as shown ('' before one)."""
        return self.result_panel.code() if self.last_result is not None else ""

    def _on_copy_code(self) -> None:
        code = self.loading_code()
        if code:
            QGuiApplication.clipboard().setText(code)
            self._say("Loading code copied to the clipboard"
                      + ("; it runs on a dummy batch x: put your images, normalised as the "
                         "comments say, in its place."
                         if self._running_format not in EMBEDDING_FORMATS else "."), "ok")

    def _on_show_folder(self) -> None:
        if self._running_out is None:
            return
        folder = self._running_out.parent
        if not QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder))):
            self._say(f"Could not open a file manager; the export is in {folder}.", "error")

    def _say(self, text: str, role: str) -> None:
        self.status.say(text, role)
