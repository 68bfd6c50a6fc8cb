"""The Export dialog: write a checkpoint's encoder (torchvision state_dict, TorchScript, ONNX,
safetensors) or its embeddings (.npy, .csv) in an engine child process, then show what was
written: the file, its size, how it was verified and the metadata JSON beside it.

The export itself is ``contrastive-engine export ... --json`` (engine/cli_explore.py): the
engine writes atomically, verifies encoder exports against its own encoder and refuses
with a message that says what to do (a missing optional package names the extra to
install). This dialog only chooses the arguments and shows the outcome.
"""

from __future__ import annotations

import json
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
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.child.engine_process import EngineProcess
from app.style import set_role
from app.widgets.checkpoint_box import CheckpointBox
from engine.evaluate.explore import EMBEDDING_FORMATS, default_export_path
from engine.export import SUFFIXES

#: Formats offered: (engine --format value, label shown, tooltip: who can load it and how).
FORMATS: list[tuple[str, str, str]] = [
    ("torchvision", "torchvision state_dict (.pt)",
     "The backbone's weights with exactly the keys of torchvision.models.<arch>() minus fc. "
     "Anyone with torch + torchvision loads it: build the ResNet (small-image stem as the "
     "metadata says), set fc = nn.Identity(), load_state_dict(torch.load(file, "
     "weights_only=True), strict=True). Best for fine-tuning in PyTorch."),
    ("torchscript", "TorchScript (.torchscript)",
     "A traced model that needs only torch (no model code): torch.jit.load(file) in Python, "
     "or torch::jit::load in C++ (LibTorch), mobile and serving runtimes."),
    ("onnx", "ONNX (.onnx)",
     "An ONNX graph (opset 17, input 'images', dynamic batch) for onnxruntime, TensorRT, "
     "OpenVINO and other runtimes, in any language: onnxruntime.InferenceSession(file). "
     "Needs the onnx extra: pip install 'contrastive-explorer[onnx]'."),
    ("safetensors", "safetensors (.safetensors)",
     "The same tensors as the torchvision format in the safetensors file format (no pickle; "
     "Hugging Face tools read it): safetensors.torch.load_file(file) into the torchvision "
     "ResNet. Needs the safetensors extra: pip install 'contrastive-explorer[safetensors]'."),
    ("npy", "embeddings (.npy)",
     "The embedding of every image of the run's folder as one float32 matrix (images x "
     "dimensions), in the folder's order: numpy.load(file). Paths, labels and classes are "
     "in the metadata JSON beside it and in embeddings/<checkpoint>/index.json."),
    ("csv", "embeddings (.csv)",
     "One row per image: path, label, class, then the vector; opens in pandas "
     "(pandas.read_csv), R, or a spreadsheet. Values keep 7 significant digits."),
]
_ALL_SUFFIXES = {*SUFFIXES.values(), ".npy", ".csv"}


def suffix_of(fmt: str) -> str:
    """The file suffix the engine writes for ``fmt``."""
    return f".{fmt}" if fmt in EMBEDDING_FORMATS else SUFFIXES[fmt]


def human_size(n: int) -> str:
    """``n`` bytes for people: '44.7 MB (44,712,345 bytes)'."""
    value = float(n)
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            break
        value /= 1000
    short = f"{n} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
    return short if unit == "bytes" else f"{short} ({n:,} bytes)"


def loading_code(fmt: str, path: Path, metadata: dict[str, Any]) -> str:
    """Python that loads the export at ``path``, with the file names as absolute paths.

    Encoder formats use the engine's ``load_snippet`` from the metadata (torchvision,
    TorchScript, ONNX or safetensors code that needs nothing of this project; ``x`` is the
    caller's normalised batch). Embeddings give the matrix as ``h`` or ``z`` (numpy) with,
    for CSV, the paths and labels.
    """
    path = Path(path)
    if fmt in EMBEDDING_FORMATS:
        space = metadata.get("space", "h")
        if fmt == "npy":
            return (f"import numpy as np\n"
                    f"{space} = np.load({str(path)!r})  # (images, dim) float32, folder order\n")
        return ("import csv\n"
                "import numpy as np\n"
                f"with open({str(path)!r}, newline='', encoding='utf-8') as f:\n"
                "    header, *rows = list(csv.reader(f))\n"
                "paths = [row[0] for row in rows]\n"
                "labels = [int(row[1]) if row[1] else -1 for row in rows]  # -1: no label\n"
                "classes = [row[2] for row in rows]\n"
                f"{space} = np.array([[float(v) for v in row[3:]] for row in rows], "
                "dtype=np.float32)\n")
    snippet = str(metadata.get("load_snippet", ""))
    for key in ("file", "head_file"):
        name = metadata.get(key)
        if name:
            snippet = snippet.replace(repr(str(name)), repr(str(path.with_name(str(name)))))
    return snippet


class ExportDialog(QDialog):
    """Choose checkpoint, format, space, head and output file; export in an engine child;
    show the file, its size, the verification and the metadata written beside it.

    Signals:
        exported(dict): the engine's result of a finished export (``path``, ``format``, and
            for encoders ``metadata``, ``verified``, ``max_abs_diff``, ``tolerance``).
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
        self.space_box = QComboBox()
        self.space_box.addItem("h: encoder features (what transfers)", "h")
        self.space_box.addItem("z: projection head output (what the loss saw)", "z")
        self.space_box.setToolTip("Which embeddings to write (embeddings formats only): h, the "
                                  "encoder's pooled features used for transfer, or z, the "
                                  "projection head's output that the contrastive loss saw.")
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

        self.progress = QProgressBar()
        self.progress.setTextVisible(False)
        self.progress.hide()
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)

        self.file_label = QLabel()
        self.file_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.file_label.setWordWrap(True)
        self.size_label = QLabel()
        self.verification_label = QLabel()
        self.verification_label.setWordWrap(True)
        self.verification_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.metadata_text = QPlainTextEdit()
        self.metadata_text.setReadOnly(True)
        self.metadata_text.setLineWrapMode(QPlainTextEdit.NoWrap)
        self.metadata_text.setToolTip("The metadata JSON written beside the export")
        self.show_folder_button = QPushButton("Show in folder")
        self.show_folder_button.setToolTip("Open the folder that holds the export")
        self.show_folder_button.clicked.connect(self._on_show_folder)
        self.copy_code_button = QPushButton("Copy loading code")
        self.copy_code_button.setToolTip("Copy Python that loads this export to the clipboard")
        self.copy_code_button.clicked.connect(self._on_copy_code)

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

        self.result_box = QGroupBox("Result")
        result_form = QFormLayout()
        result_form.addRow("File", self.file_label)
        result_form.addRow("Size", self.size_label)
        result_form.addRow("Verification", self.verification_label)
        result_layout = QVBoxLayout(self.result_box)
        result_layout.addLayout(result_form)
        result_layout.addWidget(QLabel("Metadata written beside it"))
        result_layout.addWidget(self.metadata_text, 1)
        result_buttons = QHBoxLayout()
        result_buttons.addWidget(self.show_folder_button)
        result_buttons.addWidget(self.copy_code_button)
        result_buttons.addStretch(1)
        result_layout.addLayout(result_buttons)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.result_box, 1)
        self.resize(640, 560)

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

    def format(self) -> str:
        return str(self.format_box.currentData())

    def set_format(self, fmt: str) -> None:
        index = self.format_box.findData(fmt)
        if index < 0:
            raise ValueError(f"unknown export format {fmt!r}")
        self.format_box.setCurrentIndex(index)

    def space(self) -> str:
        return str(self.space_box.currentData())

    def output_path(self) -> Path:
        """The file the export will write (relative names go into the run's exports/)."""
        text = self.out_edit.text().strip()
        if not text:
            return self._default_path()
        path = Path(text).expanduser()
        return path if path.is_absolute() else self.run_dir / "exports" / path

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
            if path.suffix.lower() in _ALL_SUFFIXES and path.suffix.lower() != suffix_of(fmt):
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
        if not (self.run_dir / "config.json").is_file():
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
        self._say(f"Exporting to {self._running_out}…", "")
        self.engine.start(self.arguments())

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
        self.progress.setVisible(running)
        self.progress.setRange(0, 0)  # busy until the engine reports counts

    def _on_event(self, event: dict) -> None:
        if event.get("type") != "progress":
            return
        done, total = event.get("done"), event.get("total")
        if isinstance(done, int) and isinstance(total, int) and total > 0:
            self.progress.setRange(0, total)
            self.progress.setValue(done)
            self._say(f"{event.get('phase', 'working')}: {done}/{total}", "")
        elif event.get("message"):
            self._say(str(event["message"]), "")

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
        metadata_path = Path(result.get("metadata") or path.with_name(path.name + ".json"))
        self._show_files(path, metadata_path, fmt)
        if fmt in EMBEDDING_FORMATS:
            self.verification_label.setText(
                f"not applicable: a copy of the saved embeddings ({result.get('images')} "
                f"images x {result.get('dim')} dimensions, space {result.get('space')})")
            set_role(self.verification_label, "")
        elif result.get("verified"):
            self.verification_label.setText(
                f"verified: max abs difference {result['max_abs_diff']:.2e} ≤ tolerance "
                f"{result['tolerance']:.2e} (loaded back and compared with the engine)")
            set_role(self.verification_label, "ok")
        else:
            self.verification_label.setText(
                f"NOT verified: max abs difference {result.get('max_abs_diff')} > tolerance "
                f"{result.get('tolerance')}; do not use this file")
            set_role(self.verification_label, "error")
        self._say(f"Exported to {path}.", "ok")
        self.exported.emit(result)

    def _show_files(self, path: Path, metadata_path: Path, fmt: str) -> None:
        self._running_format = fmt
        self._running_out = path
        self.file_label.setText(str(path))
        try:
            size = human_size(path.stat().st_size)
        except OSError as exc:
            size = f"cannot read the file's size: {exc.strerror or exc}"
        try:
            self.metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            self.metadata = None
            self.metadata_text.setPlainText(
                f"The metadata {metadata_path} cannot be read ({exc}); export again.")
        else:
            self.metadata_text.setPlainText(json.dumps(self.metadata, indent=2,
                                                       ensure_ascii=False))
            head = self.metadata.get("head_file")
            if head and (path.parent / head).is_file():
                size += (f"; projection head {head}: "
                         f"{human_size((path.parent / head).stat().st_size)}")
        self.size_label.setText(size)
        self.show_folder_button.setEnabled(True)
        self.copy_code_button.setEnabled(self.metadata is not None)

    def _show_failed_check(self) -> None:
        """A failed verification keeps the files and says "passed": false in the metadata:
        show them (only when written by this export)."""
        out = self._running_out
        if out is None or self._running_format in EMBEDDING_FORMATS:
            return
        metadata_path = out.with_name(out.name + ".json")
        try:
            fresh = metadata_path.stat().st_mtime >= self._started_at - 1
        except OSError:
            return
        if not fresh or not out.is_file():
            return
        self._show_files(out, metadata_path, self._running_format)
        check = (self.metadata or {}).get("verification", {})
        self.verification_label.setText(
            f"FAILED: max abs difference {check.get('max_abs_diff')} (tolerance "
            f"{check.get('tolerance')})" + (f"; {check['error']}" if check.get("error") else "")
            + ". The file is kept only for inspection; do not use it.")
        set_role(self.verification_label, "error")
        self.copy_code_button.setEnabled(False)

    def _clear_result(self) -> None:
        self.last_result = None
        self.metadata = None
        for label in (self.file_label, self.size_label, self.verification_label):
            label.setText("—")
        set_role(self.verification_label, "")
        self.metadata_text.setPlainText("")
        self.show_folder_button.setEnabled(False)
        self.copy_code_button.setEnabled(False)

    def loading_code(self) -> str:
        """Python that loads the last export ('' before one)."""
        if self.last_result is None or self.metadata is None:
            return ""
        return loading_code(self._running_format, Path(self.last_result["path"]),
                            self.metadata)

    def _on_copy_code(self) -> None:
        code = self.loading_code()
        if code:
            QGuiApplication.clipboard().setText(code)
            self._say("Loading code copied to the clipboard"
                      + ("; x is your batch, normalised as the comments say."
                         if self._running_format not in EMBEDDING_FORMATS else "."), "ok")

    def _on_show_folder(self) -> None:
        if self._running_out is None:
            return
        folder = self._running_out.parent
        if not QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder))):
            self._say(f"Could not open a file manager; the export is in {folder}.", "error")

    def _say(self, text: str, role: str) -> None:
        self.status.setText(text)
        set_role(self.status, role)
