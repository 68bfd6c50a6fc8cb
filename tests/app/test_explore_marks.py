"""What the Explore page marks on its map and how its panel is laid out: the query and its
neighbours stand out from every class colour, the hover tooltip sits at the cursor, and the
map/panel split and the neighbour grid keep their geometry whatever is shown."""

import numpy as np
import pyqtgraph as pg
import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import QPoint
from PySide6.QtGui import QColor

from app.model.explore_data import MapData
from app.pages.explore_page import ExplorePage
from app.style import DARK, LIGHT
from app.widgets.map_view import NUMBERED_NEIGHBOURS, PALETTE, MapView, class_colour
from app.widgets.neighbours_panel import ThumbnailCache, ThumbnailGrid, TileInfo
from engine.evaluate import explore
from engine.evaluate.maps import MapParams

K = 5


def lab(colour: QColor) -> np.ndarray:
    """CIE L*a*b* (D65) of an sRGB colour."""
    c = np.array([colour.redF(), colour.greenF(), colour.blueF()])
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722],
                  [0.0193, 0.1192, 0.9505]])
    xyz = m @ c / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def delta_e(a: QColor, b: QColor) -> float:
    return float(np.linalg.norm(lab(a) - lab(b)))


def pen_colour(item: pg.ScatterPlotItem) -> QColor:
    return pg.mkPen(item.opts["pen"]).color()


def test_colour_distance_ranks_the_old_marks_as_too_close():
    # the old selection ring was the 4th class's red and the box marks a gold next to the
    # 2nd class's orange: the threshold below must reject both
    assert delta_e(QColor("#d62728"), QColor(PALETTE[3])) < 40
    assert delta_e(QColor("#e0a000"), QColor(PALETTE[1])) < 40


@pytest.mark.parametrize("theme", [LIGHT, DARK], ids=["light", "dark"])
def test_selection_marks_stand_out_from_every_class_colour(qtbot, theme):
    old = pg.getConfigOption("background"), pg.getConfigOption("foreground")
    pg.setConfigOptions(background=theme.plot_background, foreground=theme.plot_foreground)
    try:
        view = MapView()
        qtbot.addWidget(view)
        marks = (view.selected_mark, view.neighbour_marks, view.box_marks)
        for item in marks:
            outline = pen_colour(item)
            for colour in PALETTE:
                assert delta_e(outline, QColor(colour)) >= 40, (outline.name(), colour)
            assert delta_e(outline, QColor(theme.plot_background)) >= 80
        assert pen_colour(view.selected_halo) == QColor(theme.plot_background)
        assert view.selected_mark.opts["pen"].widthF() >= 3
        assert view.selected_mark.opts["size"] > view.scatter.opts["size"] + 8
    finally:
        pg.setConfigOptions(background=old[0], foreground=old[1])


def small_map(n=30, path="{i}.png"):
    coords = np.stack([np.arange(n), np.arange(n) % 7], 1).astype(np.float32)
    return MapData(coords, [path.format(i=i) for i in range(n)], np.arange(n) % 3,
                   ["a", "b", "c"], "/data", "last", "h", "pca")


def test_query_point_is_enlarged_in_its_class_colour_and_neighbours_numbered(qtbot):
    view = MapView()
    qtbot.addWidget(view)
    view.set_map(small_map())
    view.set_selected(4)
    x, y = view.selected_mark.getData()
    assert (x.tolist(), y.tolist()) == ([4.0], [4.0])
    assert view.selected_mark.points()[0].brush().color() == class_colour(1, 3)
    view.set_neighbours([7, 2, 9])
    x, y = view.neighbour_marks.getData()
    assert list(zip(x.tolist(), y.tolist())) == [(7, 0), (2, 2), (9, 2)]
    assert [t.textItem.toPlainText() for t in view.neighbour_numbers] == ["1", "2", "3"]
    assert [(t.pos().x(), t.pos().y()) for t in view.neighbour_numbers] == [(7, 0), (2, 2),
                                                                            (9, 2)]
    view.set_neighbours(list(range(25)))  # a new query replaces the marks
    assert len(view.neighbour_marks.getData()[0]) == 25
    assert len(view.neighbour_numbers) == NUMBERED_NEIGHBOURS
    numbers = [t for t in view.plot.plotItem.items if isinstance(t, pg.TextItem)]
    assert len(numbers) == NUMBERED_NEIGHBOURS  # the old numbers were removed
    view.set_neighbours([])
    assert len(view.neighbour_marks.getData()[0]) == 0 and view.neighbour_numbers == []
    assert not [t for t in view.plot.plotItem.items if isinstance(t, pg.TextItem)]


@pytest.fixture
def page(qtbot, trained_run):
    run_dir, cache = trained_run
    explore.make_map(run_dir, "last", space="h", params=MapParams(method="pca"),
                     cache_dir=cache, device="cpu")
    page = ExplorePage(cache_dir=cache)
    qtbot.addWidget(page)
    page.map_settings.set_method("pca")
    page.k_box.setValue(K)
    page.resize(1100, 760)  # the page in the window's default size
    page.show()
    with qtbot.waitSignal(page.map_shown, timeout=10_000):
        page.set_run(run_dir)
    yield page
    page.cancel(quiet=True)
    page.thumbnails.wait()


def test_clicked_point_and_its_neighbours_are_marked_then_replaced(qtbot, page):
    view = page.map_view
    with qtbot.waitSignal(page.neighbours_shown, timeout=10_000):
        page.show_neighbours(3)
    first = [n["index"] for n in page.neighbours_result["neighbours"]]
    assert len(first) == K and 3 not in first
    assert view.neighbours == first
    np.testing.assert_array_equal(np.stack(view.neighbour_marks.getData(), 1),
                                  view.data.coords[first])
    np.testing.assert_array_equal(np.stack(view.selected_mark.getData(), 1),
                                  view.data.coords[[3]])
    with qtbot.waitSignal(page.neighbours_shown, timeout=10_000):
        page.show_neighbours(first[0])
    second = [n["index"] for n in page.neighbours_result["neighbours"]]
    assert view.neighbours == second and len(view.neighbour_numbers) == K
    np.testing.assert_array_equal(np.stack(view.selected_mark.getData(), 1),
                                  view.data.coords[[first[0]]])


def test_hover_shows_a_thumbnail_tooltip_at_the_cursor(qtbot, page, monkeypatch):
    from app.pages import explore_page

    at = QPoint(300, 200)
    monkeypatch.setattr(explore_page.QCursor, "pos", staticmethod(lambda: at))
    scatter = page.map_view.scatter
    scatter.sigHovered.emit(scatter, [scatter.points()[5]], None)
    tip, data = page.hover_tip, page.map_view.data
    assert tip.isVisible()
    assert tip.name.text() == data.paths[5].split("/")[-1]
    assert tip.class_label.text() == data.class_name(5)
    assert 0 < tip.pos().x() - at.x() < 40 and 0 < tip.pos().y() - at.y() < 40
    qtbot.waitUntil(lambda: tip.image.pixmap() is not None and not tip.image.pixmap().isNull(),
                    timeout=10_000)
    assert data.paths[5] in page.hover.text.text()  # the side panel still shows it too
    scatter.sigHovered.emit(scatter, [], None)
    assert not tip.isVisible()


def test_split_and_neighbour_grid_keep_their_geometry(qtbot, page):
    sizes = page.splitter.sizes()
    assert sizes[1] == 520
    # long texts without spaces (a deep path) and a result must not move the split
    page.hover.show_point(small_map(path="a" * 300 + "{i}.png"), 2)
    page.status.say("x" * 400)
    page.panel.show_message("y" * 300)
    with qtbot.waitSignal(page.neighbours_shown, timeout=10_000):
        page.show_neighbours(0)
    page.k_box.setValue(12)
    qtbot.waitUntil(lambda: len(page.panel.grid.tiles) == 12, timeout=10_000)
    qtbot.wait(50)
    assert page.splitter.sizes() == sizes
    grid = page.panel.grid
    assert grid.columns == 4  # at this width
    assert_tiles_fit(grid)
    page.resize(1400, 760)  # a wider window: the map takes the difference
    qtbot.waitUntil(lambda: page.splitter.sizes()[0] > sizes[0], timeout=2000)
    assert page.splitter.sizes()[1] == sizes[1]


def assert_tiles_fit(grid: ThumbnailGrid):
    assert not grid.horizontalScrollBar().isVisible()
    right = grid.viewport().width()
    for tile in grid.tiles:
        assert tile.geometry().right() < right, (tile.geometry(), right)


@pytest.mark.parametrize("width", [260, 420, 700])
def test_grid_columns_follow_the_width(qtbot, width):
    grid = ThumbnailGrid(ThumbnailCache())
    qtbot.addWidget(grid)
    grid.resize(width, 400)
    grid.show()
    grid.set_tiles([TileInfo(i, f"/nowhere/{i}.png", f"0.9{i}\nclass") for i in range(10)])
    qtbot.waitUntil(lambda: grid.tiles[0].isVisible(), timeout=2000)
    expected = max(1, (width - 60) // grid.tile_width())
    assert abs(grid.columns - expected) <= 1 and grid.columns >= 1
    assert_tiles_fit(grid)
    grid.resize(width + grid.tile_width() * 2, 400)
    qtbot.waitUntil(lambda: grid.columns >= min(10, expected + 1), timeout=2000)
    assert_tiles_fit(grid)


def test_map_caption_wraps_beside_its_buttons(qtbot, page):
    caption = page.map_view.caption
    qtbot.wait(20)
    assert caption.text() == page.map_view.data.describe()
    if caption.wordWrap():
        assert caption.heightForWidth(caption.width()) <= caption.height()
    else:
        assert caption.fontMetrics().horizontalAdvance(caption.text()) <= caption.width()
