"""The Explore page's selection: by class and tag, tags saved in the run, export through
the engine's ``subset`` verb, and a new run trained on the selection from the window."""

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import QSettings
from PySide6.QtGui import QColor

from app.main_window import MainWindow
from app.pages.explore_page import ExplorePage
from engine.data.scan import read_image_list
from engine.evaluate import explore
from engine.evaluate.maps import MapParams
from engine.evaluate.tags import images_with, run_manifest
from engine.run.layout import RunDir

CHILD_MS = 90_000


@pytest.fixture
def page_on_map(qtbot, trained_run):
    """An Explore page showing the run's saved PCA map (made in this process)."""
    run_dir, cache = trained_run
    result = explore.make_map(run_dir, "last", space="h", params=MapParams(method="pca"),
                              cache_dir=cache, device="cpu")
    page = ExplorePage(cache_dir=cache)
    qtbot.addWidget(page)
    page.map_settings.set_method("pca")
    with qtbot.waitSignal(page.map_shown, timeout=10_000):
        page.set_run(run_dir)
    yield page, run_dir, result
    page.cancel(quiet=True)
    page.actions.wait()
    page.thumbnails.wait()


def test_select_by_class_invert_and_tag(qtbot, page_on_map):
    page, run_dir, result = page_on_map
    actions, bar = page.actions, page.actions.bar
    labels = np.asarray(result["labels"])
    assert [bar.class_box.itemText(i) for i in range(bar.class_box.count())] == \
        ["choose…", "circles", "squares"]
    bar.class_box.activated.emit(1)  # "circles", as a person picks it
    assert page.selection.indices.tolist() == np.flatnonzero(labels == 0).tolist()
    assert bar.count_label.text().startswith("12 of 24 selected (class circles)")
    assert page.tabs.tabText(1) == "Selection (12)"
    assert page.selection_grid.count() == 12
    x, _ = page.map_view.box_marks.getData()
    assert len(x) == 12

    bar.invert_button.click()
    squares = np.flatnonzero(labels == 1)
    assert page.selection.indices.tolist() == squares.tolist()
    bar.tag_name.setEditText("keep me")
    with qtbot.waitSignal(actions.tags_changed, timeout=10_000) as changed:
        bar.tag_button.click()
    assert changed.args[0]["keep me"].tolist() == squares.tolist()
    # saved in the run folder by path: the engine finds the same images
    manifest = run_manifest(run_dir)
    tagged = {manifest.images[i].path for i in images_with(run_dir, "keep me")}
    assert tagged == {result["paths"][i] for i in squares}
    assert bar.tag_select_box.itemText(1) == "keep me (12)"
    assert "Tagged 12 images" in page.status.text()

    # select by tag, adding to one circle; then remove the tag from two images
    page.actions.select([int(np.flatnonzero(labels == 0)[0])], source="click")
    bar.mode_box.setCurrentIndex(1)  # Add
    bar.tag_select_box.activated.emit(1)
    assert len(page.selection) == 13 and page.selection.source == "click + tag keep me"
    page.actions.select(squares[:2])
    with qtbot.waitSignal(actions.tags_changed, timeout=10_000) as changed:
        bar.untag_button.click()
    assert changed.args[0]["keep me"].tolist() == squares[2:].tolist()
    assert len(images_with(run_dir, "keep me")) == 10


def test_a_new_map_of_the_same_images_keeps_the_selection(qtbot, page_on_map):
    page, run_dir, result = page_on_map
    page.actions.select([1, 2, 3], source="box")
    with qtbot.waitSignal(page.map_shown, timeout=10_000):
        page._show_map(page.map_view.data)  # e.g. UMAP replacing PCA
    assert page.selection.indices.tolist() == [1, 2, 3]
    page.set_run(None)
    assert len(page.selection) == 0


def test_export_links_the_selection_through_the_engine(qtbot, page_on_map, tmp_path):
    page, run_dir, result = page_on_map
    chosen = [0, 5, 13, 20]
    page.actions.select(chosen, source="box")
    dest = tmp_path / "picked"
    page.actions.ask_destination = lambda count, folder: ("link", dest)
    with qtbot.waitSignal(page.idle, timeout=CHILD_MS):
        page.actions.bar.export_button.click()
    assert "Wrote 4 images (link)" in page.status.text(), page.status.text()
    root = Path(result["root"])
    made = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_symlink())
    assert made == sorted(result["paths"][i] for i in chosen)
    for rel in made:  # links to the originals, class sub-folders kept
        assert Path(os.readlink(dest / rel)) == (root / rel).resolve()


def test_retrain_without_the_selection_writes_the_rest(qtbot, page_on_map):
    page, run_dir, result = page_on_map
    page.actions.select([3, 4], source="duplicates")
    with qtbot.waitSignal(page.retrain_requested) as asked:
        page.actions.bar.without_button.click()
    path, run, what = asked.args
    assert run == run_dir and path.parent == RunDir(run_dir).path / "subsets"
    assert path.name == "without-duplicates-22.txt"
    root = Path(result["root"])
    expected = [str(root / p) for i, p in enumerate(result["paths"]) if i not in (3, 4)]
    assert read_image_list(path) == expected
    assert what == "the 22 images not in duplicates"


def test_retrain_on_the_selection_trains_a_run_on_the_list(qtbot, tmp_path, trained_run):
    """From the window: the selection's list reaches a new training run, which keeps it."""
    run_dir, cache = trained_run
    explore.make_map(run_dir, "last", space="h", params=MapParams(method="pca"),
                     cache_dir=cache, device="cpu")
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
    win = MainWindow(run_dir.parent, cache_dir=cache, settings=settings)
    qtbot.addWidget(win)
    try:
        page = win.explore_page
        page.map_settings.set_method("pca")
        with qtbot.waitSignal(page.map_shown, timeout=10_000):
            win.select_run(run_dir)
        page.actions.select_class("squares")
        with qtbot.waitSignal(win.train_page.engine.ended, timeout=180_000) as ended:
            page.actions.bar.retrain_button.click()
            assert win.tabs.currentWidget() is win.train_page
        assert ended.args[0] == "finished", (ended.args, win.train_page.status.text(),
                                              win.train_page.log.toPlainText()[-2000:])
        new_run = win.train_page.run_dir
        assert new_run is not None and new_run != run_dir
        kept = RunDir(new_run).data_list(".txt")
        assert kept.is_file()
        manifest = run_manifest(new_run)
        data = page.map_view.data
        assert sorted(str(Path(manifest.root) / r.path) for r in manifest.images) == sorted(
            data.absolute_path(i) for i in range(len(data)) if data.class_name(i) == "squares")
        assert read_image_list(kept) == read_image_list(
            RunDir(run_dir).path / "subsets" / "on-class-squares-12.txt")
    finally:
        if win.train_page.engine.is_running():
            win.train_page.engine.kill()
            win.train_page.engine.wait(10_000)
        win.data_page.shutdown()
        win.augment_page.close()


def test_select_the_neighbours_of_an_image(qtbot, page_on_map):
    page, run_dir, result = page_on_map
    page.k_box.setValue(4)
    with qtbot.waitSignal(page.neighbours_shown, timeout=CHILD_MS):
        page.show_neighbours(7)
    shown = [n["index"] for n in page.neighbours_result["neighbours"]]
    assert len(shown) == 4 and 7 not in shown
    page.panel.select_button.click()
    assert page.selection.indices.tolist() == sorted([7, *shown])
    assert page.selection.source == "neighbours of #7"


def test_colour_the_map_by_tag_and_by_a_curation_score(qtbot, page_on_map):
    from app.widgets.map_colours import UNLABELLED

    page, run_dir, result = page_on_map
    box = page.colour_box
    assert [box.itemText(i) for i in range(box.count())] == ["class", "sub-folder"]
    with qtbot.waitSignal(page.actions.tags_changed, timeout=10_000):
        page.actions.tag("blurry", [2, 3])
    assert box.findText("tags") >= 0
    box.choose("tags")
    assert page.map_view.colouring.name == "tag"
    grey = page.map_view.point_colour(0)
    assert grey.name() == QColor(UNLABELLED).name()
    assert page.map_view.point_colour(2) == page.map_view.point_colour(3) != grey
    # a new tag redraws the colouring chosen
    with qtbot.waitSignal(page.actions.tags_changed, timeout=10_000):
        page.actions.tag("blurry", [5])
    assert page.map_view.point_colour(5) == page.map_view.point_colour(2)

    scores = np.linspace(0, 1, 24, dtype=np.float32)
    page.curate.scores_ready.emit("outliers", scores)
    name = page.SCORE_NAMES["outliers"]
    box.choose(name)
    assert page.map_view.colouring.continuous
    assert page.map_view.point_colour(0) != page.map_view.point_colour(23)


def test_a_lasso_on_the_map_is_the_pages_selection(qtbot, page_on_map):
    page, run_dir, result = page_on_map
    coords = np.asarray(result["coords"])
    lo, hi = coords.min(0) - 1, coords.max(0) + 1
    polygon = np.array([[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]]])
    page.map_view.view_box.region_selected.emit(polygon, "replace")
    assert len(page.selection) == 24 and page.selection.source == "lasso"
    assert page.selection_grid.count() == 24
    assert page.actions.bar.count_label.text().startswith("24 of 24 selected (lasso)")
