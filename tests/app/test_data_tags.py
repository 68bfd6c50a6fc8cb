"""A run's tags on the Data page: the paths of a tag when the run trained on the folder shown
(tags_for_folder), the Tag filter, the marker and tooltip of tagged thumbnails, and the
window passing the selected run's tags."""

import json
import shutil
from pathlib import Path

import pytest

from app.model.tag_paths import tags_for_folder
from engine.evaluate.embed import RunError
from engine.evaluate.tags import add_tag, refs_for_indices, run_manifest


def test_a_runs_tags_are_paths_in_its_own_folder_only(trained_run, tmp_path):
    run_dir, _ = trained_run
    manifest = run_manifest(run_dir)
    root = Path(manifest.root)
    add_tag(run_dir, "blurry", refs_for_indices(manifest, [0, 3]))
    add_tag(run_dir, "check label", refs_for_indices(manifest, [3]))
    expected = {"blurry": [str(root / manifest.images[i].path) for i in (0, 3)],
                "check label": [str(root / manifest.images[3].path)]}
    assert tags_for_folder(run_dir, root) == expected
    assert tags_for_folder(run_dir, str(root) + "/.") == expected  # the same folder
    other = tmp_path / "other"
    other.mkdir()
    assert tags_for_folder(run_dir, other) is None
    # The same folder through a link: found, and spelled as the caller names the folder.
    link = tmp_path / "link"
    link.symlink_to(root, target_is_directory=True)
    assert tags_for_folder(run_dir, link) == {
        name: [str(link / Path(p).relative_to(root)) for p in paths]
        for name, paths in expected.items()}
    # A run without tags yet has none; one without a manifest is no run of this folder.
    bare = tmp_path / "runs" / "bare"
    shutil.copytree(run_dir, bare)
    (bare / "tags.json").unlink()
    assert tags_for_folder(bare, root) == {}
    (bare / "manifest.json").unlink()
    assert tags_for_folder(bare, root) is None
    (run_dir / "tags.json").write_text("{not json")
    with pytest.raises(RunError, match="tags file .* cannot be read"):
        tags_for_folder(run_dir, root)


def test_a_file_renamed_since_tagging_is_found_by_its_content(trained_run):
    run_dir, _ = trained_run
    manifest = run_manifest(run_dir)
    add_tag(run_dir, "blurry", refs_for_indices(manifest, [2]))
    # The run's manifest as if the folder had been rescanned after a rename.
    data = json.loads((run_dir / "manifest.json").read_text())
    renamed = data["images"][2]["path"].replace(".png", "-renamed.png")
    data["images"][2]["path"] = renamed
    (run_dir / "manifest.json").write_text(json.dumps(data))
    (paths,) = tags_for_folder(run_dir, manifest.root).values()
    assert paths == [str(Path(manifest.root) / renamed)]


pytest.importorskip("PySide6")

from PySide6.QtCore import QRect, QSettings, Qt  # noqa: E402
from PySide6.QtGui import QColor, QImage, QPainter  # noqa: E402
from PySide6.QtWidgets import QStyleOptionViewItem  # noqa: E402

from app.widgets.folder_thumbnails import TAG_MARK, TAGS_ROLE  # noqa: E402


@pytest.fixture
def page(data_page):
    return data_page


def shown_paths(page):
    return [page.model.path(r) for r in range(page.model.rowCount())]


def marker_drawn(page, row: int) -> bool:
    """Whether the view's delegate paints the tag marker on ``row``'s tile."""
    image = QImage(72, 72, QImage.Format_RGB32)
    image.fill(QColor("white"))
    painter = QPainter(image)
    option = QStyleOptionViewItem()
    option.rect = QRect(0, 0, 72, 72)
    page.thumbnails.itemDelegate().paint(painter, option, page.model.index(row))
    painter.end()
    side = 72 // 6
    centre = image.pixelColor(72 - 1 - 3 - side // 2, 3 + side // 2)
    return centre == TAG_MARK


def test_the_tag_filter_shows_a_tags_images_and_marks_them(qtbot, page, trained_run):
    run_dir, _ = trained_run
    root = Path(run_manifest(run_dir).root)
    with qtbot.waitSignal(page.folder_scanned, timeout=10_000):
        page.open_folder(root)
    assert page.tag_filter.isHidden()  # no run's tags yet
    everything = shown_paths(page)
    blurry = [everything[5], everything[1]]
    page.set_tags({"blurry": blurry, "dup": [everything[1], str(root / "gone.png")]}, "run A")
    assert not page.tag_filter.isHidden() and page.tag_filter.isEnabled()
    entries = [page.tag_filter.itemText(i) for i in range(page.tag_filter.count())]
    assert entries == ["All images (24)", "blurry (2)", "dup (1)"]  # only images found
    assert "run A" in page.tag_filter.toolTip()
    assert shown_paths(page) == everything and page.tag_shown() is None
    page.tag_filter.setCurrentIndex(1)
    assert page.tag_shown() == "blurry"
    assert shown_paths(page) == [everything[1], everything[5]]  # in the order shown
    tip = page.model.data(page.model.index(0), Qt.ToolTipRole)
    assert "tags: blurry, dup" in tip
    assert page.model.data(page.model.index(1), TAGS_ROLE) == ["blurry"]
    assert marker_drawn(page, 0)
    # The filter keeps the chosen order.
    with qtbot.waitSignal(page.order_shown, timeout=10_000):
        page.set_order("shuffled")
    order = [p for p in (everything[i] for i in page._order) if p in blurry]
    assert shown_paths(page) == order
    page.tag_filter.setCurrentIndex(0)
    assert len(shown_paths(page)) == 24
    untagged = next(r for r in range(24) if page.model.path(r) not in (blurry + [everything[1]]))
    assert not marker_drawn(page, untagged)
    assert "tags:" not in page.model.data(page.model.index(untagged), Qt.ToolTipRole)
    # A run of another folder: no filter, no markers.
    page.set_tags(None, "")
    assert page.tag_filter.isHidden() and len(shown_paths(page)) == 24
    assert page.model.data(page.model.index(0), TAGS_ROLE) == []
    # A run of this folder without tags: the filter says where tags are made.
    page.set_tags({}, "run B")
    assert not page.tag_filter.isHidden() and not page.tag_filter.isEnabled()
    assert "Explore page" in page.tag_filter.toolTip()


def test_the_window_gives_the_data_page_the_selected_runs_tags(qtbot, trained_run, tmp_path):
    from app.main_window import MainWindow

    run_dir, cache = trained_run
    manifest = run_manifest(run_dir)
    add_tag(run_dir, "blurry", refs_for_indices(manifest, [0, 3, 7]))
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
    win = MainWindow(run_dir.parent, cache_dir=cache, settings=settings)
    qtbot.addWidget(win)
    page = win.data_page
    try:
        with qtbot.waitSignal(page.folder_scanned, timeout=20_000):
            win.open_folder(Path(manifest.root))
        assert page.tag_filter.isHidden()  # no run selected
        win.select_run(run_dir)
        qtbot.waitUntil(lambda: page.tag_filter.count() == 2, timeout=10_000)
        assert page.tag_filter.itemText(1) == "blurry (3)"
        # A tag made meanwhile (on the Explore page) shows when the Data page is shown again.
        add_tag(run_dir, "dup", refs_for_indices(manifest, [1]))
        win.tabs.setCurrentWidget(win.train_page)
        win.tabs.setCurrentWidget(page)
        qtbot.waitUntil(lambda: page.tag_filter.count() == 3, timeout=10_000)
        # Another folder: the run's tags are not of it.
        other = tmp_path / "other"
        shutil.copytree(manifest.root, other)
        with qtbot.waitSignal(page.folder_scanned, timeout=20_000):
            win.open_folder(other)
        assert page.tag_filter.isHidden()  # at once: the tags were of the other folder
        page._pool.waitForDone(10_000)
        qtbot.wait(50)
        assert page.tag_filter.isHidden()
    finally:
        page.shutdown()
        win.augment_page.close()
