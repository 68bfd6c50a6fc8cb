"""The Export dialog against a real engine child: what it shows is what the engine wrote, and
the loading code it copies really loads the export."""

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6")

import torch
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from app.child import engine_process
from app.child.engine_jobs import EngineJob
from app.dialogs import export_dialog, export_result
from app.dialogs.export_dialog import FORMATS, ExportDialog
from app.widgets.job_status import JobStatus
from app.widgets.space_chooser import SpaceChooser
from engine.evaluate.embed import load_embeddings, load_encoder
from engine.evaluate.explore import default_export_path
from engine.export import MissingExtra, _require_extras

ENGINE_MS = 180_000


@pytest.fixture
def dialog(qtbot, trained_run):
    run_dir, cache = trained_run
    dlg = ExportDialog(run_dir, cache_dir=cache)
    qtbot.addWidget(dlg)
    dlg.show()
    yield dlg
    if dlg.engine.is_running():
        dlg.engine.kill()
        dlg.engine.wait(10_000)


def run_export(qtbot, dlg):
    with qtbot.waitSignal(dlg.engine.ended, timeout=ENGINE_MS) as ended:
        qtbot.mouseClick(dlg.export_button, Qt.LeftButton)
    return ended.args


def test_choices_follow_the_format_and_build_the_engine_arguments(dialog, trained_run):
    run_dir, cache = trained_run
    assert all(dialog.format_box.itemData(i, Qt.ToolTipRole)
               for i in range(dialog.format_box.count()))
    assert dialog.format_box.count() == len(FORMATS)
    dialog.set_format("torchscript")
    assert dialog.head_check.isEnabled() and not dialog.space_box.isEnabled()
    assert dialog.output_path() == run_dir / "exports" / "encoder-last.torchscript"
    dialog.head_check.setChecked(True)
    assert dialog.arguments() == [
        "export", "--run", str(run_dir), "--checkpoint", "last", "--format", "torchscript",
        "--out", str(run_dir / "exports" / "encoder-last.torchscript"), "--json",
        "--include-head", "--cache-dir", str(cache)]
    dialog.set_format("npy")
    dialog.space_box.setCurrentIndex(dialog.space_box.findData("z"))
    dialog.checkpoint_box.set_checkpoint("epoch-0002")
    assert dialog.space_box.isEnabled() and not dialog.head_check.isEnabled()
    assert dialog.output_path() == default_export_path(run_dir, "epoch-0002", "npy", "z")
    args = dialog.arguments()
    assert "--include-head" not in args and args[args.index("--space") + 1] == "z"
    # A name the person typed is kept; only its suffix follows the format.
    dialog.out_edit.textEdited.emit("mine.npy")
    dialog.out_edit.setText("mine.npy")
    dialog.set_format("onnx")
    assert dialog.output_path() == run_dir / "exports" / "mine.onnx"


def test_progress_and_space_use_the_shared_widgets(dialog):
    assert isinstance(dialog.status, JobStatus) and isinstance(dialog.space_box, SpaceChooser)
    assert not dialog.status.progress.isVisible()
    dialog.set_format("npy")
    dialog.space_box.set_space("z")
    assert dialog.space() == "z" and dialog.output_path().name.endswith("-z.npy")
    dialog._set_running(True)
    dialog._job = EngineJob("export", [], "Exporting")
    dialog.status.job_started(dialog._job)
    dialog._on_event({"type": "progress", "phase": "embed", "done": 1280, "total": 2624})
    bar = dialog.status.progress
    assert bar.isVisible() and (bar.value(), bar.maximum()) == (1280, 2624)
    assert dialog.status.text() == "Exporting: Embedding"
    assert bar.format() == "1,280 of 2,624 images"
    dialog._set_running(False)
    assert not bar.isVisible()


def test_cancel_stops_the_child_and_says_so(qtbot, dialog, monkeypatch):
    monkeypatch.setattr(engine_process, "engine_command",
                        lambda: (sys.executable, ["-c", "import time; time.sleep(60)"]))
    assert not dialog.cancel_button.isVisible()
    qtbot.mouseClick(dialog.export_button, Qt.LeftButton)
    assert dialog.cancel_button.isVisible() and not dialog.export_button.isEnabled()
    with qtbot.waitSignal(dialog.engine.ended, timeout=20_000):
        qtbot.mouseClick(dialog.cancel_button, Qt.LeftButton)
    assert "cancelled" in dialog.status.text()
    assert dialog.export_button.isEnabled() and not dialog.cancel_button.isVisible()
    assert not dialog.output_path().exists()


def test_torchvision_export_is_verified_and_its_loading_code_works(qtbot, dialog, trained_run,
                                                                    monkeypatch, tmp_path):
    run_dir, _ = trained_run
    dialog.set_format("torchvision")
    status, _code, reason = run_export(qtbot, dialog)
    assert status == "finished", reason
    path = run_dir / "exports" / "encoder-last.pt"
    assert path.is_file() and dialog.result_panel.file_label.text() == str(path)
    on_disk = json.loads((path.parent / (path.name + ".json")).read_text())
    assert json.loads(dialog.result_panel.metadata_text.toPlainText()) == on_disk
    check = on_disk["verification"]
    assert check["passed"]
    shown = dialog.result_panel.verification_label.text()
    assert shown.startswith("verified") and f"{check['max_abs_diff']:.2e}" in shown
    assert f"{check['tolerance']:.2e}" in shown
    assert dialog.result_panel.verification_label.property("role") == "ok"
    assert f"{path.stat().st_size:,} bytes" in dialog.result_panel.size_label.text()

    # The loading code is shown in the dialog, whole, not only copied.
    box = dialog.result_panel.code_text
    assert box.isVisible() and box.height() >= 4 * box.fontMetrics().lineSpacing()
    assert box.toPlainText() == on_disk["load_snippet"]
    qtbot.mouseClick(dialog.result_panel.copy_code_button, Qt.LeftButton)
    code = QApplication.clipboard().text()
    assert path.is_absolute() and repr(str(path)) in code  # loads by its absolute path
    # What is shown and copied is the engine's own snippet, as written into the metadata.
    assert code == dialog.result_panel.code_text.toPlainText() == on_disk["load_snippet"]
    assert dialog.result_panel.code_text.isReadOnly()
    size = on_disk["input_size"]
    namespace: dict = {}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # a person pastes it anywhere: no relative name in it
    exec(code, namespace)  # the copied snippet, as a person would paste it
    x = namespace["x"]  # its dummy batch
    assert x.shape == (2, 3, size, size)
    encoder, _cfg, _info = load_encoder(run_dir, "last")
    with torch.no_grad():
        expected, _z = encoder(x)
    torch.testing.assert_close(namespace["h"].detach(), expected, rtol=1e-5, atol=1e-5)

    opened = []
    monkeypatch.setattr(export_dialog.QDesktopServices, "openUrl",
                        staticmethod(lambda url: opened.append(url) or True))
    qtbot.mouseClick(dialog.result_panel.show_folder_button, Qt.LeftButton)
    assert [Path(u.toLocalFile()) for u in opened] == [path.parent]


def test_embeddings_csv_holds_the_saved_features(qtbot, dialog, trained_run):
    run_dir, _ = trained_run
    dialog.set_format("csv")
    dialog.checkpoint_box.set_checkpoint("epoch-0002")
    status, _code, reason = run_export(qtbot, dialog)
    assert status == "finished", reason
    path = run_dir / "exports" / "embeddings-epoch-0002-h.csv"
    assert dialog.result_panel.file_label.text() == str(path)
    saved = load_embeddings(run_dir / "embeddings" / "epoch-0002")
    header, *rows = list(csv.reader(path.open(newline="")))
    assert len(rows) == 24 == len(saved.paths)
    assert [r[0] for r in rows] == saved.paths
    vectors = np.array([[float(v) for v in r[3:]] for r in rows], dtype=np.float32)
    np.testing.assert_allclose(vectors, saved.features, rtol=1e-6, atol=1e-7)
    meta = json.loads((path.parent / (path.name + ".json")).read_text())
    assert json.loads(dialog.result_panel.metadata_text.toPlainText()) == meta
    assert meta["images"] == 24 and meta["dim"] == saved.features.shape[1]

    qtbot.mouseClick(dialog.result_panel.copy_code_button, Qt.LeftButton)
    assert QApplication.clipboard().text() == meta["load_snippet"]
    assert dialog.result_panel.code_text.toPlainText() == meta["load_snippet"]
    namespace: dict = {}
    exec(QApplication.clipboard().text(), namespace)
    np.testing.assert_allclose(namespace["h"], saved.features, rtol=1e-6, atol=1e-7)
    assert namespace["paths"] == saved.paths


def test_missing_onnx_names_the_extra_to_install(qtbot, dialog, monkeypatch):
    # The real engine, in a child that cannot import onnx.
    script = ("import sys; sys.modules['onnx'] = None; from engine.cli.main import main; "
              "sys.exit(main(sys.argv[1:]))")
    monkeypatch.setattr(engine_process, "engine_command",
                        lambda: (sys.executable, ["-c", script]))
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(MissingExtra) as missing:
        _require_extras("onnx")
    dialog.set_format("onnx")
    status, _code, reason = run_export(qtbot, dialog)
    assert status == "failed" and reason == str(missing.value)
    assert str(missing.value) in dialog.status.text()
    assert "pip install 'contrastive-explorer[onnx]'" in dialog.status.text()
    assert dialog.status.is_error()
    assert not dialog.output_path().exists()
    assert not dialog.result_panel.copy_code_button.isEnabled()


def test_focused_buttons_keep_their_text_unclipped(qtbot, qapp, trained_run):
    from PySide6.QtWidgets import QPushButton

    from app.style import LIGHT, style_sheet

    # The app's style sheet draws the default button bold, and the layout does not widen a
    # button when it turns default: a focused button that took the default role showed
    # its text clipped. Only Export is ever default, and it has room for its bold text.
    qapp.setStyleSheet(style_sheet(LIGHT))  # as the app styles itself before its windows
    try:
        dialog = ExportDialog(trained_run[0])
        qtbot.addWidget(dialog)
        dialog.show()
        buttons = [b for b in dialog.findChildren(QPushButton) if b.isVisible()]
        assert len(buttons) >= 5
        for button in buttons:
            button.setEnabled(True)
            button.setFocus(Qt.TabFocusReason)
            qtbot.waitUntil(button.hasFocus, timeout=2000)
            QApplication.processEvents()
            assert [b for b in buttons if b.isDefault()] == [dialog.export_button], button.text()
            for other in buttons:
                assert other.sizeHint().width() <= other.width(), (button.text(), other.text())
            assert export_result.bold_width(dialog.export_button) <= dialog.export_button.width()
    finally:
        qapp.setStyleSheet("")
