"""The Data page's grid as it copes with 100,000 images: each cell drawn straight from the
model (the thumbnail, the selection, the tag marker), a folder's counts, summary and paths
worked out with its scan, and tags found among the images as index arrays."""

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import QRect, Qt
from PySide6.QtGui import QColor, QImage, QPainter, QPixmap
from PySide6.QtWidgets import QStyle, QStyleOptionViewItem

from app.pages.data_choices import tag_rows
from app.pages.data_page import describe_folder
from app.widgets.folder_thumbnails import TAGS_ROLE, thumbnail_paths
from tests.helpers.folders import make_folder


def reference_rows(tags: dict[str, list[str]], paths: list[str]) -> dict[str, list[int]]:
    """Each tag's images by a plain search: the path as given, else its normal form."""
    out = {}
    for name, wanted in tags.items():
        found = set()
        for p in wanted:
            matches = [i for i, q in enumerate(paths) if q == p] or \
                      [i for i, q in enumerate(paths) if q == os.path.normpath(p)]
            found.update(matches)
        out[name] = sorted(found)
    return out


def test_tags_are_found_as_a_plain_search_finds_them():
    rng = np.random.default_rng(3)
    paths = [f"/data/c{i % 3}/img{i:04d}.jpg" for i in range(300)]
    index_of = {p: i for i, p in enumerate(paths)}
    picks = rng.choice(300, 80).tolist()  # with repeats
    tags = {"a": [paths[i] for i in picks] + ["/data/gone.jpg"],
            "b": [paths[i].replace("/c", "/./c") for i in picks[:10]]  # another spelling
                 + [paths[5].replace("/c", "//c")],
            "empty": []}
    rows = tag_rows(tags, index_of)
    assert {k: v.tolist() for k, v in rows.items()} == reference_rows(tags, paths)
    assert all(v.dtype == np.int64 for v in rows.values())


def test_the_model_names_each_images_tags_in_the_tags_order(data_page, tmp_path):
    page = data_page
    folder = make_folder(tmp_path / "shapes", per_class=6)
    page.report = describe_folder(folder)
    page._show_report(page.report)
    n = page.model.rowCount()
    tagged = {"zeta": np.array([0, 3, 3, 7]), "alpha": np.array([3, 11])}
    page.model.set_tags(tagged)
    for row in range(n):
        image = page.model.image(row)
        expected = [name for name, rows in tagged.items() if image in rows.tolist()]
        assert page.model.data(page.model.index(row), TAGS_ROLE) == expected, row
        assert page.model.has_tags(row) == bool(expected)
        tip = page.model.data(page.model.index(row), Qt.ToolTipRole)
        assert ("tags: " + ", ".join(expected) in tip) == bool(expected)


def cell(page, row: int, selected: bool = False) -> QImage:
    """``row``'s cell as the view's delegate draws it, on white, 72 px square."""
    image = QImage(72, 72, QImage.Format_RGB32)
    image.fill(QColor("white"))
    painter = QPainter(image)
    option = QStyleOptionViewItem()
    option.rect = QRect(0, 0, 72, 72)
    option.palette = page.thumbnails.palette()
    if selected:
        option.state |= QStyle.State_Selected
    page.thumbnails.itemDelegate().paint(painter, option, page.model.index(row))
    painter.end()
    return image


def test_a_cell_shows_its_thumbnail_centred_and_the_selection_around_it(data_page, tmp_path):
    page = data_page
    page.report = describe_folder(make_folder(tmp_path / "shapes", per_class=4))
    page._show_report(page.report)
    page.model.loader.request = lambda image: None  # nothing decoded: placeholders
    thumb = QPixmap(64, 64)
    thumb.fill(QColor("#2060c0"))
    page.model._cache[page.model.image(2)] = thumb  # as if decoded
    drawn = cell(page, 2)
    assert drawn.pixelColor(36, 36) == QColor("#2060c0")
    assert drawn.pixelColor(4, 4) == QColor("#2060c0")  # 64 px centred: 4..67
    assert drawn.pixelColor(2, 2) == QColor("white")
    placeholder = cell(page, 1)
    assert placeholder.pixelColor(36, 36) == page.model.placeholder.toImage().pixelColor(0, 0)
    highlight = page.thumbnails.palette().highlight().color()
    selected = cell(page, 2, selected=True)
    assert selected.pixelColor(2, 2) == highlight
    assert selected.pixelColor(36, 36) == QColor("#2060c0")


def test_a_folders_counts_summary_and_paths_come_with_its_scan(data_page, tmp_path):
    folder = make_folder(tmp_path / "shapes", per_class=5)
    (folder / "circles" / "empty.png").write_bytes(b"")
    report = describe_folder(folder)
    m = report.manifest
    assert report.summary == m.summary() and "1 file skipped" in report.summary
    assert report.class_counts == [sum(r.label == c for r in m.images)
                                   for c in range(len(m.classes))] == [5, 5]
    assert report.paths == [str(Path(m.root) / r.path) for r in m.images]
    assert thumbnail_paths(m) == report.paths
    page = data_page
    page.report = report
    page._show_report(report)
    assert page.status.text() == m.summary()
    assert page.model.paths() == report.paths
    assert [page.classes_table.item(r, 1).data(Qt.DisplayRole) for r in range(2)] == [5, 5]
    with pytest.raises(ValueError, match="paths for"):
        page.model.set_manifest(m, report.paths[:-1])


def test_the_collector_pauses_while_records_are_built_and_comes_back_after():
    import gc
    import threading

    from app.model.collector import collector_paused

    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():  # nested
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer pause holds
    assert gc.isenabled()

    entered, leave = threading.Event(), threading.Event()

    def other() -> None:  # another worker's pause, overlapping this thread's
        with collector_paused():
            entered.set()
            leave.wait(10)

    worker = threading.Thread(target=other)
    worker.start()
    entered.wait(10)
    with collector_paused():
        leave.set()
        worker.join(10)
        assert not gc.isenabled()  # the other pause ended; this one holds
    assert gc.isenabled()

    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # off before the first pause: left off
    finally:
        gc.enable()
