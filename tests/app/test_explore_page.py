"""The Explore page shows the engine's own map and neighbours of a trained run.

Engine children are few (they cost seconds each): the map (which embeds "last"), the
random-init embeddings, and a query with a file that is not an image. Other tests make what
they need in this process with the engine's functions, as a child would.
"""

import csv
import shutil

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")

from PySide6.QtCore import QMimeData, QPoint, QPointF, QRectF, Qt, QUrl
from PySide6.QtGui import QDropEvent, QImage

from app.model.explore_data import MapData
from app.pages.explore_page import ExplorePage
from app.widgets.map_view import UNLABELLED, MapView, class_colour
from engine.evaluate import explore
from engine.evaluate.maps import MapParams

CHILD_MS = 90_000
K = 5
PCA = MapParams(method="pca")


@pytest.fixture
def page(qtbot, trained_run):
    run_dir, cache = trained_run
    page = ExplorePage(cache_dir=cache)
    qtbot.addWidget(page)
    page.map_settings.set_method("pca")
    page.k_box.setValue(K)
    yield page
    page.cancel(quiet=True)
    page.thumbnails.wait()


def engine_neighbours(run_dir, cache, i, checkpoint):
    """The engine's k nearest neighbours of image i, the image itself left out (the engine
    lists it first, with score 1)."""
    result = explore.neighbours(run_dir, i, K + 1, checkpoint=checkpoint, cache_dir=cache,
                                device="cpu")
    assert result["neighbours"][0]["index"] == i
    return result["neighbours"][1:]


def shown(page):
    return [(n["index"], n["score"], n["class"]) for n in page.neighbours_result["neighbours"]]


def test_computed_map_is_the_engines_and_exports(qtbot, page, trained_run, tmp_path):
    run_dir, cache = trained_run
    page.set_run(run_dir)
    assert "Compute map" in page.status.text()
    with qtbot.waitSignal(page.idle, timeout=CHILD_MS):
        with qtbot.waitSignal(page.map_shown, timeout=CHILD_MS) as shown_map:
            page.compute_map()
    assert shown_map.args == ["pca"]
    expected = explore.make_map(run_dir, "last", space="h", params=PCA, cache_dir=cache,
                                device="cpu")  # the map the child saved under maps/
    x, y = page.map_view.scatter.getData()
    assert len(x) == 24
    np.testing.assert_array_equal(np.stack([x, y], 1).astype(np.float32), expected["coords"])

    # one colour per class, and a legend naming the classes
    classes = expected["classes"]
    assert classes == ["circles", "squares"]
    for i, label in enumerate(expected["labels"]):
        assert page.map_view.point_brush(i) == class_colour(label, 2)
    legend = page.map_view.legend.items
    assert [label.text for _, label in legend] == classes

    path = tmp_path / "map.csv"
    page.map_view.export_csv(path)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == expected["paths"]
    assert [r["class"] for r in rows] == [classes[label] for label in expected["labels"]]
    np.testing.assert_allclose([[float(r["x"]), float(r["y"])] for r in rows],
                               expected["coords"], rtol=1e-5, atol=1e-7)
    png = tmp_path / "map.png"
    page.map_view.export_png(png)
    image = QImage(str(png))
    assert png.stat().st_size > 0 and image.width() == 1600 and image.height() > 0


def test_saved_map_opens_without_a_child_and_box_selects(qtbot, page, trained_run):
    run_dir, cache = trained_run
    expected = explore.make_map(run_dir, "last", space="h", params=PCA, cache_dir=cache,
                                device="cpu")
    with qtbot.waitSignal(page.map_shown, timeout=10_000):
        page.set_run(run_dir)
    assert not page.is_busy()
    np.testing.assert_array_equal(page.map_view.data.coords, expected["coords"])

    coords = expected["coords"]
    rect = QRectF(QPointF(coords[:, 0].min() - 1, coords[:, 1].min() - 1),
                  QPointF(float(np.median(coords[:, 0])), coords[:, 1].max() + 1))
    inside = np.flatnonzero(coords[:, 0] <= np.median(coords[:, 0]))
    page.map_view.view_box.box_selected.emit(rect)
    assert page.selection_grid.indices().tolist() == inside.tolist()
    assert page.tabs.currentWidget() is page.selection_grid

    scatter = page.map_view.scatter
    scatter.sigHovered.emit(scatter, [scatter.points()[3]], None)
    assert expected["paths"][3] in page.hover.text.text()
    qtbot.waitUntil(lambda: not page.hover.image.pixmap().isNull(), timeout=10_000)


def test_clicked_point_shows_the_engines_neighbours_per_checkpoint(qtbot, page, trained_run):
    run_dir, cache = trained_run
    explore.make_map(run_dir, "last", space="h", params=PCA, cache_dir=cache, device="cpu")
    with qtbot.waitSignal(page.map_shown, timeout=10_000):
        page.set_run(run_dir)
    scatter = page.map_view.scatter
    i = 7
    with qtbot.waitSignals([page.neighbours_shown, page.image_selected], timeout=10_000):
        scatter.sigClicked.emit(scatter, [scatter.points()[i]], None)
    trained = engine_neighbours(run_dir, cache, i, "last")
    assert shown(page) == [(n["index"], n["score"], n["class"]) for n in trained]
    assert [t.info.index for t in page.panel.grid.tiles] == [n["index"] for n in trained]
    assert f"{trained[0]['score']:.3f}" in page.panel.grid.tiles[0].caption.text()
    assert not page.is_busy()  # read from the saved embeddings, no child

    # the untrained baseline has no embeddings yet: an engine child makes them
    with qtbot.waitSignal(page.neighbours_shown, timeout=CHILD_MS):
        page.checkpoint_box.set_checkpoint("random")
    baseline = engine_neighbours(run_dir, cache, i, "random")
    assert shown(page) == [(n["index"], n["score"], n["class"]) for n in baseline]
    assert page.neighbours_result["checkpoint"] == "random"
    assert shown(page) != [(n["index"], n["score"], n["class"]) for n in trained]
    assert page.map_view.data is None  # no map of random init was made
    qtbot.waitUntil(lambda: not page.is_busy(), timeout=10_000)


def test_dropped_file_that_is_not_an_image_shows_the_engines_error(qtbot, page, trained_run,
                                                                    tmp_path):
    run_dir, _ = trained_run
    page.set_run(run_dir)
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(bad))])
    event = QDropEvent(QPoint(5, 5), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    with qtbot.waitSignal(page.failed, timeout=CHILD_MS) as failed:
        page.panel.dropEvent(event)
    with pytest.raises(Exception) as engine_error:
        explore.neighbours(run_dir, str(bad), K, cache_dir=trained_run[1], device="cpu")
    assert failed.args == [str(engine_error.value)]
    assert "not an image" in page.panel.title.text()
    assert page.panel.grid.tiles == []


def test_run_without_checkpoints_maps_random_init(qtbot, page, trained_run):
    """Before its first epoch ends a run has no checkpoint, but its untrained encoder (random
    init) needs none: it is offered, mapped and queried."""
    run_dir, cache = trained_run
    shutil.rmtree(run_dir / "checkpoints")
    shutil.rmtree(run_dir / "embeddings", ignore_errors=True)
    page.set_run(run_dir)
    assert "no checkpoint yet" in page.status.text() and "random init" in page.status.text()
    assert [page.checkpoint_box.itemData(i) for i in range(page.checkpoint_box.count())] == [
        "random"]
    assert page.compute_button.isEnabled()
    with qtbot.waitSignal(page.idle, timeout=CHILD_MS):
        with qtbot.waitSignal(page.map_shown, timeout=CHILD_MS):
            page.compute_map()
    assert page.map_view.data.checkpoint == "random" and len(page.map_view.data) == 24
    with qtbot.waitSignal(page.neighbours_shown, timeout=10_000):
        page.show_neighbours(0)
    assert page.neighbours_result["checkpoint"] == "random"
    assert shown(page) == [(n["index"], n["score"], n["class"])
                           for n in engine_neighbours(run_dir, cache, 0, "random")]


def test_cancel_kills_the_child_and_drops_its_map(qtbot, page, trained_run):
    page.set_run(trained_run[0])
    page.compute_map()
    assert page.is_busy() and page.cancel_button.isEnabled()
    with qtbot.assertNotEmitted(page.map_shown, wait=1000):
        page.cancel_button.click()
    assert not page.is_busy() and page.status.text().startswith("Cancelled")
    assert page.map_view.data is None


def test_map_without_labels_is_grey_with_no_legend(qtbot):
    view = MapView()
    qtbot.addWidget(view)
    coords = np.arange(10, dtype=np.float32).reshape(5, 2)
    view.set_map(MapData(coords, [f"{i}.png" for i in range(5)], np.full(5, -1), [], "/data",
                         "last", "h", "pca"))
    assert view.legend.items == []
    assert all(view.point_brush(i).name() == UNLABELLED for i in range(5))
    assert "no labels" in view.caption.text()
    assert view.points_in(QRectF(QPointF(1.5, 2.5), QPointF(6.5, 7.5))).tolist() == [1, 2, 3]


@pytest.mark.slow
def test_umap_replaces_the_pca_map(qtbot, page, trained_run):
    """UMAP's first fit compiles numba code (about 40 s cold)."""
    run_dir, cache = trained_run
    page.map_settings.set_method("umap")
    page.set_run(run_dir)
    methods = []
    page.map_shown.connect(methods.append)
    with qtbot.waitSignal(page.idle, timeout=300_000):
        page.compute_map()
    assert methods == ["pca", "umap"]
    expected = explore.make_map(run_dir, "last", space="h", params=page.map_params(),
                                cache_dir=cache, device="cpu")
    np.testing.assert_array_equal(page.map_view.data.coords, expected["coords"])
