"""The Data page on tiny generated folders: counts, skipped files, thumbnails, errors."""

from pathlib import Path

import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import Qt
from PySide6.QtGui import QPixmap

from app.pages.data_page import describe_folder
from app.widgets.folder_thumbnails import THUMBNAIL_SIZE
from engine.data.scan import scan_folder
from tests.helpers.folders import make_bad_files, make_folder


@pytest.fixture
def page(data_page):
    return data_page


@pytest.fixture
def folder(tmp_path):
    root = make_folder(tmp_path / "shapes")
    (root / "circles" / "empty.jpg").write_bytes(b"")
    (root / "squares" / "notes.png").write_text("not a picture")
    return root


def open_and_wait(qtbot, page, path):
    with qtbot.waitSignal(page.folder_scanned, timeout=10_000) as scanned:
        page.open_folder(path)
    return scanned.args[0]


def test_a_labelled_folder_shows_counts_sizes_and_skipped_files(qtbot, page, folder):
    manifest = open_and_wait(qtbot, page, folder)
    assert len(manifest.images) == 24
    assert page.counts.text() == "24 images in 2 classes"
    assert not page.error.isVisible()
    table = page.classes_table
    rows = [(table.item(r, 0).text(), table.item(r, 1).data(Qt.DisplayRole))
            for r in range(table.rowCount())]
    assert rows == [("circles", 12), ("squares", 12)]
    skipped = {page.skipped_table.item(r, 0).text(): page.skipped_table.item(r, 1).text()
               for r in range(page.skipped_table.rowCount())}
    assert skipped == {"circles/empty.jpg": "empty file (0 bytes)",
                       "squares/notes.png": "not an image (cannot identify format)"}
    assert "min 28 / median 28 / max 28 px" in page.sizes.text()
    assert "all 24 read" in page.sizes.text()  # the usable images (the scan decoded each)


def test_every_bad_file_is_listed_with_the_engines_reason(qtbot, page, tmp_path):
    """The page shows the engine's scan: truncated and corrupt files that only decoding
    finds are skipped here too, with the reasons the trainer gives, and the scan reports
    its progress as a count."""
    root = make_folder(tmp_path / "shapes", per_class=4)
    expected = make_bad_files(root / "squares")
    messages = []
    page._signals.progress.connect(lambda _generation, message: messages.append(message))
    manifest = open_and_wait(qtbot, page, root)
    assert page.counts.text() == "8 images in 2 classes"
    skipped = {page.skipped_table.item(r, 0).text(): page.skipped_table.item(r, 1).text()
               for r in range(page.skipped_table.rowCount())}
    assert set(skipped) == {f"squares/{name}" for name in expected}
    for name, start in expected.items():
        assert skipped[f"squares/{name}"].startswith(start)
    engine = scan_folder(root)
    assert [r.path for r in manifest.images] == [r.path for r in engine.images]
    assert [(s.path, s.reason) for s in manifest.skipped] == [
        (s.path, s.reason) for s in engine.skipped]
    assert page.status.text() == engine.summary()
    assert any("checked" in m and "of 14 files" in m for m in messages), messages


def test_thumbnails_are_decoded_lazily_into_real_pixmaps(qtbot, page, folder):
    open_and_wait(qtbot, page, folder)
    model = page.model
    assert model.rowCount() == 24
    index = model.index(0)
    assert model.data(index, Qt.DecorationRole) is model.placeholder or model.is_loaded(0)
    qtbot.waitUntil(lambda: model.is_loaded(0), timeout=5_000)
    pixmap = model.data(index, Qt.DecorationRole)
    assert isinstance(pixmap, QPixmap) and pixmap is not model.placeholder
    assert (pixmap.width(), pixmap.height()) == (THUMBNAIL_SIZE, THUMBNAIL_SIZE)
    assert pixmap.toImage().pixelColor(0, 0) != model.placeholder.toImage().pixelColor(0, 0)
    tip = model.data(index, Qt.ToolTipRole)
    assert str(folder / "circles") in tip and "class: circles" in tip


def test_many_images_only_decode_what_is_shown(qtbot, page, tmp_path):
    from PIL import Image

    root = tmp_path / "many"
    root.mkdir()
    Image.new("RGB", (8, 8), "red").save(root / "a.png")
    data = (root / "a.png").read_bytes()
    for i in range(1, 3000):
        (root / f"{i:05d}.png").write_bytes(data)
    open_and_wait(qtbot, page, root)
    assert page.model.rowCount() == 3000
    qtbot.waitUntil(lambda: page.model.is_loaded(0), timeout=5_000)
    qtbot.wait(200)
    assert len(page.model._cache) < 1000  # only the visible rows, not all 3000
    assert "a sample of 200 read" in page.sizes.text()


def test_a_flat_folder_has_no_labels(qtbot, page, tmp_path):
    flat = tmp_path / "flat"
    make_folder(tmp_path / "shapes", per_class=3)
    flat.mkdir()
    for f in (tmp_path / "shapes").rglob("*.*"):
        f.rename(flat / f.name)
    manifest = open_and_wait(qtbot, page, flat)
    assert not manifest.has_labels
    assert "no labels (no class sub-folders)" in page.counts.text()
    assert page.classes_table.rowCount() == 0


def test_a_missing_folder_shows_the_error_in_the_page(qtbot, page, tmp_path):
    with qtbot.waitSignal(page.scan_failed, timeout=10_000) as failed:
        page.open_folder(tmp_path / "nowhere")
    assert "not found" in failed.args[0]
    assert page.error.isVisible() and "not found" in page.error.text()
    assert page.model.rowCount() == 0


def test_opening_another_folder_discards_the_stale_scan(qtbot, page, folder, tmp_path):
    other = make_folder(tmp_path / "other", per_class=2)
    seen = []
    page.folder_scanned.connect(seen.append)
    page.open_folder(folder)
    with qtbot.waitSignal(page.folder_scanned, timeout=10_000):
        page.open_folder(other)
    page._pool.waitForDone(10_000)
    qtbot.wait(100)  # let a late first result arrive, if it were going to be shown
    assert [len(m.images) for m in seen] == [4]
    assert page.model.rowCount() == 4


def test_double_clicking_a_thumbnail_emits_its_absolute_path(qtbot, page, folder):
    open_and_wait(qtbot, page, folder)
    view = page.thumbnails
    qtbot.waitUntil(lambda: view.visualRect(page.model.index(1)).isValid(), timeout=2_000)
    centre = view.visualRect(page.model.index(1)).center()
    with qtbot.waitSignal(page.image_activated, timeout=2_000) as activated:
        # Qt's view acts on a double click only at the index pressed first, as a real one is.
        qtbot.mouseClick(view.viewport(), Qt.LeftButton, pos=centre)
        qtbot.mouseDClick(view.viewport(), Qt.LeftButton, pos=centre)
    path = Path(activated.args[0])
    assert path.is_absolute() and path.is_file()
    assert path == folder / page.report.manifest.images[1].path


def test_describe_folder_samples_headers_without_qt_widgets(tmp_path):
    report = describe_folder(make_folder(tmp_path / "shapes", per_class=5), sample=3)
    assert len(report.manifest.images) == 10
    assert report.sampled == 3 and not report.all_read
    assert report.total_bytes == sum(r.size for r in report.manifest.images)
