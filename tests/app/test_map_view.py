"""The map's selection tools and colourings: a lasso selects what a plain ray-cast says is
inside, the modifiers combine it with the selection, every point gets its colouring's
colour (grey for none), the legend follows, and a selection dims the rest of the map."""

import numpy as np
import pyqtgraph as pg
import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import QEvent, QPoint, QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QImage, QMouseEvent, QPainter
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from app.model.explore_data import MapData
from app.model.map_regions import (
    NearestPoint,
    points_in_polygon,
    points_in_rect,
    simplify_path,
)
from app.model.selection import ADD, INTERSECT, MODES, REMOVE, REPLACE, Selection
from app.widgets.map_colours import (
    LEGEND_ENTRIES,
    SCORE_BINS,
    UNLABELLED,
    ColourByBox,
    Colouring,
    by_class,
    by_score,
    by_subfolder,
    by_tags,
    class_colour,
    score_colours,
)
from app.widgets.map_items import BOX, LASSO, PAN, MapScatter, selection_mode
from app.widgets.map_view import DIM_ALPHA, MAX_OUTLINED, MapView


def ray_cast(x: float, y: float, polygon: list[tuple[float, float]]) -> bool:
    """The textbook even-odd test (W. R. Franklin's pnpoly), one point at a time."""
    inside = False
    j = len(polygon) - 1
    for i in range(len(polygon)):
        xi, yi = polygon[i]
        xj, yj = polygon[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            inside = not inside
        j = i
    return inside


def reference_inside(coords: np.ndarray, polygon: np.ndarray) -> list[int]:
    vertices = [(float(x), float(y)) for x, y in polygon]
    return [i for i, (x, y) in enumerate(coords.tolist()) if ray_cast(x, y, vertices)]


def star(centre=(0.0, 0.0), outer=4.0, inner=1.5, spikes=7, turn=0.3) -> np.ndarray:
    """A concave star polygon."""
    angles = np.arange(2 * spikes) * np.pi / spikes + turn
    radii = np.where(np.arange(2 * spikes) % 2 == 0, outer, inner)
    return np.stack([centre[0] + radii * np.cos(angles), centre[1] + radii * np.sin(angles)], 1)


def clustered_map(n=300, seed=0, paths=None) -> MapData:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    coords = (np.array([[-3, 0], [3, 1], [0, 4]])[labels]
              + rng.normal(0, 1.6, (n, 2))).astype(np.float32)
    labels[:5] = -1  # a few without a label
    if paths is None:
        paths = [f"{['train', 'test'][i % 2]}/{['a', 'b', 'c'][labels[i]]}/{i}.png"
                 for i in range(n)]
    return MapData(coords, paths, labels.astype(np.int64), ["a", "b", "c"], "/data",
                   "last", "h", "umap")


# --- geometry ------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lasso_matches_a_plain_ray_cast_on_a_concave_polygon(seed):
    rng = np.random.default_rng(seed)
    coords = rng.uniform(-5, 5, (400, 2)).astype(np.float32)
    polygon = star(centre=tuple(rng.uniform(-1, 1, 2)), turn=float(rng.uniform(0, 1)))
    expected = reference_inside(coords, polygon)
    assert 20 < len(expected) < 380  # the polygon cuts through the points
    assert points_in_polygon(coords, polygon).tolist() == expected


def test_lasso_follows_the_even_odd_rule_on_a_self_crossing_path():
    rng = np.random.default_rng(3)
    coords = rng.uniform(-5, 5, (400, 2))
    polygon = rng.uniform(-5, 5, (25, 2))  # a random scribble crosses itself often
    assert points_in_polygon(coords, polygon).tolist() == reference_inside(coords, polygon)


def test_lasso_in_small_chunks_gives_the_same(monkeypatch):
    from app.model import map_regions

    rng = np.random.default_rng(6)
    coords = rng.uniform(-5, 5, (400, 2))
    polygon = rng.uniform(-5, 5, (40, 2))
    expected = reference_inside(coords, polygon)
    monkeypatch.setattr(map_regions, "PAIRS_PER_CHUNK", 7)
    assert points_in_polygon(coords, polygon).tolist() == expected


def test_degenerate_lassos_select_nothing():
    coords = np.random.default_rng(0).uniform(-1, 1, (50, 2))
    assert points_in_polygon(coords, np.zeros((0, 2))).tolist() == []
    assert points_in_polygon(coords, np.array([[-1, -1], [1, 1]])).tolist() == []
    assert points_in_polygon(np.zeros((0, 2)), star()).tolist() == []


def test_a_dense_path_is_thinned_but_keeps_its_shape():
    angles = np.linspace(0, 2 * np.pi, 20_000)
    circle = np.stack([np.cos(angles), np.sin(angles)], 1)
    circle = np.repeat(circle, 2, axis=0)  # every vertex twice, as a paused mouse gives
    thin = simplify_path(circle, max_vertices=500)
    assert len(thin) <= 500
    coords = np.random.default_rng(1).uniform(-1.2, 1.2, (400, 2))
    inside = np.flatnonzero(np.hypot(coords[:, 0], coords[:, 1]) < 0.99)
    ring = np.abs(np.hypot(coords[:, 0], coords[:, 1]) - 1) < 0.01
    got = points_in_polygon(coords, thin)
    assert set(inside) <= set(got) and set(got) - set(inside) <= set(np.flatnonzero(ring))


def test_rectangle_includes_its_edges():
    coords = np.array([[0, 0], [1, 1], [2, 2], [1, 3]], np.float32)
    assert points_in_rect(coords, 1, 1, 2, 2).tolist() == [1, 2]


def test_nearest_point_is_the_brute_force_nearest_inside_the_radius():
    rng = np.random.default_rng(4)
    coords = rng.uniform(0, 10, (500, 2))
    picker = NearestPoint(coords)
    for x, y in rng.uniform(0, 10, (200, 2)):
        rx, ry = 0.3, 0.6
        d = ((coords[:, 0] - x) / rx) ** 2 + ((coords[:, 1] - y) / ry) ** 2
        expected = int(np.argmin(d)) if d.min() <= 1 else -1
        assert picker.nearest(x, y, rx, ry) == expected


def test_modifiers_give_the_selection_modes():
    assert selection_mode(Qt.NoModifier) == REPLACE
    assert selection_mode(Qt.ShiftModifier) == ADD
    assert selection_mode(Qt.ControlModifier) == REMOVE
    assert selection_mode(Qt.MetaModifier) == REMOVE  # the Control key on macOS
    assert selection_mode(Qt.ShiftModifier | Qt.ControlModifier) == INTERSECT


# --- the view ------------------------------------------------------------------------------

@pytest.fixture
def view(qtbot):
    view = MapView()
    qtbot.addWidget(view)
    view.resize(700, 600)
    view.show()
    qtbot.waitExposed(view)
    view.set_map(clustered_map())
    qtbot.wait(20)
    view.plot.autoRange(padding=0.05)
    qtbot.wait(20)
    return view


def to_pixel(view: MapView, x: float, y: float) -> QPoint:
    """The viewport pixel of data point (x, y)."""
    return view.plot.mapFromScene(view.view_box.mapViewToScene(QPointF(x, y)))


def to_data(view: MapView, pixel: QPoint) -> tuple[float, float]:
    point = view.view_box.mapSceneToView(view.plot.mapToScene(pixel))
    return point.x(), point.y()


def drag(qtbot, view: MapView, pixels: list[QPoint], modifiers=Qt.NoModifier) -> None:
    viewport = view.plot.viewport()
    qtbot.mousePress(viewport, Qt.LeftButton, modifiers, pixels[0])
    for pixel in pixels[1:]:
        qtbot.wait(12)  # pyqtgraph drops mouse moves closer than 10 ms
        qtbot.mouseMove(viewport, pixel)
    qtbot.mouseRelease(viewport, Qt.LeftButton, modifiers, pixels[-1])


def send_drag(view: MapView, pixels: list[QPoint], modifiers) -> None:
    """A drag with ``modifiers`` held throughout (QTest's mouse moves carry none)."""
    viewport = view.plot.viewport()

    def send(kind, pixel, button, buttons):
        point = QPointF(pixel)
        QApplication.sendEvent(viewport, QMouseEvent(kind, point, viewport.mapToGlobal(point),
                                                     button, buttons, modifiers))

    send(QEvent.MouseButtonPress, pixels[0], Qt.LeftButton, Qt.LeftButton)
    for pixel in pixels[1:]:
        QTest.qWait(12)
        send(QEvent.MouseMove, pixel, Qt.NoButton, Qt.LeftButton)
    send(QEvent.MouseButtonRelease, pixels[-1], Qt.LeftButton, Qt.NoButton)


def test_lasso_drawn_with_the_mouse_selects_what_it_encloses(qtbot, view):
    view.set_tool(LASSO)
    assert view.tool_buttons[LASSO].isChecked() and not view.tool_buttons[PAN].isChecked()
    pixels = [to_pixel(view, x, y) for x, y in star(centre=(-1.0, 1.0), outer=4, inner=2)]
    pixels.append(pixels[0])
    with qtbot.waitSignal(view.selection_made) as made:
        drag(qtbot, view, pixels)
    indices, mode = made.args
    assert mode == REPLACE
    # the reference: the polygon of the pixels the mouse went through, in data coordinates
    polygon = np.array([to_data(view, p) for p in pixels])
    expected = reference_inside(view.data.coords, polygon)
    assert len(expected) > 30
    assert indices.dtype == np.int64 and indices.tolist() == expected
    assert view.selection.indices.tolist() == expected
    assert view.selected.tolist() == expected
    assert view.selection.source == "lasso"


def test_modes_combine_each_drawn_region_with_the_selection(qtbot, view):
    coords = view.data.coords
    left = QRectF(QPointF(-10, -10), QPointF(0, 10))
    low = star(centre=(0.0, 0.0), outer=3, inner=1.5)
    in_left = set(np.flatnonzero((coords[:, 0] >= -10) & (coords[:, 0] <= 0)
                                 & (coords[:, 1] >= -10) & (coords[:, 1] <= 10)).tolist())
    in_low = set(reference_inside(coords, low))
    assert in_left - in_low and in_low - in_left and in_left & in_low
    emitted = []
    view.box_selected.connect(lambda indices: emitted.append(indices.tolist()))
    expected = {REPLACE: in_low, ADD: in_left | in_low, REMOVE: in_left - in_low,
                INTERSECT: in_left & in_low}
    for mode in MODES:
        view.view_box.region_selected.emit(left, REPLACE)
        assert view.selection.indices.tolist() == sorted(in_left)
        with qtbot.waitSignal(view.selection_made) as made:
            view.view_box.region_selected.emit(low, mode)
        assert made.args[0].tolist() == sorted(in_low) and made.args[1] == mode
        assert view.selection.indices.tolist() == sorted(expected[mode]), mode
        assert emitted[-1] == sorted(expected[mode])
        assert view.selected.tolist() == sorted(expected[mode])


def test_box_tool_and_shift_drag_while_panning_select_rectangles(qtbot, view):
    coords = view.data.coords

    def inside(a: QPoint, b: QPoint) -> set[int]:
        (x0, y0), (x1, y1) = to_data(view, a), to_data(view, b)
        rect = QRectF(QPointF(x0, y0), QPointF(x1, y1)).normalized()
        return set(points_in_rect(coords, rect.left(), rect.top(), rect.right(),
                                  rect.bottom()).tolist())

    a, b = to_pixel(view, -6, -3), to_pixel(view, -1, 3)
    view.set_tool(BOX)
    drag(qtbot, view, [a, QPoint((a.x() + b.x()) // 2, (a.y() + b.y()) // 2), b])
    first = inside(a, b)
    assert len(first) > 20 and set(view.selection.indices.tolist()) == first
    assert view.selection.source == "box"

    view.set_tool(PAN)
    c, d = to_pixel(view, 1, 0), to_pixel(view, 5, 4)
    range_before = view.view_box.viewRange()
    send_drag(view, [c, QPoint((c.x() + d.x()) // 2, (c.y() + d.y()) // 2), d],
              Qt.ShiftModifier)  # Shift: a box even while panning, and it adds
    assert view.view_box.viewRange() == range_before  # it did not pan
    second = inside(c, d)
    assert second - first
    assert set(view.selection.indices.tolist()) == first | second

    view.set_tool(BOX)
    send_drag(view, [a, QPoint((a.x() + b.x()) // 2, (a.y() + b.y()) // 2), b],
              Qt.ControlModifier)  # Ctrl: removes
    assert set(view.selection.indices.tolist()) == second - first
    e = to_pixel(view, 3, 2)
    send_drag(view, [c, QPoint((c.x() + e.x()) // 2, (c.y() + e.y()) // 2), e],
              Qt.ShiftModifier | Qt.ControlModifier)  # both: intersects
    third = (second - first) & inside(c, e)
    assert third and third != second - first
    assert set(view.selection.indices.tolist()) == third

    view.set_tool(PAN)
    drag(qtbot, view, [c, QPoint(c.x() + 40, c.y() + 30), d])  # a plain drag pans
    assert view.view_box.viewRange() != range_before
    assert set(view.selection.indices.tolist()) == third


def test_the_view_box_rectangle_signal_replaces_the_selection(qtbot, view):
    view.selection.set([1, 2, 3])
    rect = QRectF(QPointF(-100, -100), QPointF(0, 100))
    view.view_box.box_selected.emit(rect)
    expected = np.flatnonzero(view.data.coords[:, 0] <= 0)
    assert view.selection.indices.tolist() == expected.tolist()


def test_selection_dims_the_other_points_and_is_counted(qtbot, view):
    n = len(view.data)
    chosen = np.arange(0, n, 3)[:MAX_OUTLINED]  # few enough to be outlined too
    view.set_selection(chosen)
    colours = [view.point_brush(i) for i in range(n)]
    for i in range(n):
        full = view.point_colour(i)
        assert (colours[i].rgb(), colours[i].alpha()) == (
            full.rgb(), 255 if i in set(chosen.tolist()) else DIM_ALPHA), i
    assert f"{len(chosen):,} selected" in view.caption.text()
    x, y = view.box_marks.getData()
    np.testing.assert_array_equal(np.stack([x, y], 1), view.data.coords[chosen])

    view.set_box_selection([])  # the old name
    assert all(view.point_brush(i).alpha() == 255 for i in range(n))
    assert "selected" not in view.caption.text() and len(view.box_marks.getData()[0]) == 0


def test_a_large_selection_is_shown_by_dimming_alone(qtbot):
    n = MAX_OUTLINED * 2
    coords = np.random.default_rng(0).normal(size=(n, 2)).astype(np.float32)
    view = MapView()
    qtbot.addWidget(view)
    view.set_map(MapData(coords, [f"{i}.png" for i in range(n)], np.zeros(n, np.int64), ["a"],
                         "/data", "last", "h", "pca"))
    view.set_selection(np.arange(MAX_OUTLINED + 1))
    assert len(view.box_marks.getData()[0]) == 0
    assert view.point_brush(MAX_OUTLINED).alpha() == 255
    assert view.point_brush(MAX_OUTLINED + 1).alpha() == DIM_ALPHA
    view.set_selection(np.array([5, n + 10, -1]))  # outside the map: ignored
    assert view.selected.tolist() == [5]


def test_a_shared_selection_is_filled_by_the_map_and_shown_by_it(qtbot, view):
    shared = Selection()
    shared.set([4, 7])
    view.use_selection(shared)
    assert view.selected.tolist() == [4, 7]
    view.view_box.region_selected.emit(QRectF(QPointF(-100, -100), QPointF(100, 100)), REMOVE)
    assert shared.indices.tolist() == [] and view.selected.tolist() == []
    shared.set([1, 2, 3], ADD, "class a")  # chosen elsewhere: shown here
    assert view.selected.tolist() == [1, 2, 3]
    view.set_map(clustered_map(seed=1))  # a shared selection outlives a new map
    assert shared.indices.tolist() == [1, 2, 3] and view.selected.tolist() == [1, 2, 3]


def test_hover_and_click_find_the_point_under_the_mouse(qtbot, view):
    target = 17
    x, y = view.data.coords[target]
    hovered, clicked = [], []
    view.point_hovered.connect(hovered.append)
    view.point_clicked.connect(clicked.append)
    pixel = to_pixel(view, float(x), float(y))
    # the nearest point to the pixel's centre (another may share the pixel)
    px, py = to_data(view, pixel)
    expected = int(np.argmin(np.hypot(view.data.coords[:, 0] - px,
                                      view.data.coords[:, 1] - py)))
    qtbot.mouseMove(view.plot.viewport(), pixel)
    qtbot.waitUntil(lambda: hovered and hovered[-1] == expected, timeout=2000)
    np.testing.assert_array_equal(np.stack(view.hover_mark.getData(), 1),
                                  view.data.coords[[expected]])
    qtbot.mouseClick(view.plot.viewport(), Qt.LeftButton, Qt.NoModifier, pixel)
    assert clicked == [expected]
    view.plot.autoRange(padding=2.0)  # room around the points: a pixel with none near
    qtbot.wait(20)
    qtbot.mouseMove(view.plot.viewport(), QPoint(3, 3))
    qtbot.waitUntil(lambda: hovered[-1] == -1, timeout=2000)
    assert len(view.hover_mark.getData()[0]) == 0


# --- colourings ----------------------------------------------------------------------------

def test_class_colouring_is_the_default_with_grey_for_no_label(qtbot, view):
    data = view.data
    for i in range(len(data)):
        assert view.point_brush(i) == class_colour(int(data.labels[i]), 3)
    assert view.point_brush(0).name() == UNLABELLED
    assert [label.text for _, label in view.legend.items] == ["a", "b", "c", "no label"]


def test_categorical_colouring_gives_each_point_its_palette_colour(qtbot, view):
    n = len(view.data)
    codes = np.arange(n) % 5 - 1  # -1 .. 3
    view.set_colouring(Colouring("tag", codes=codes, names=["w", "x", "y", "z"],
                                 none_name="untagged"))
    for i in [0, 1, 2, 3, 4, 57, 123]:
        expected = QColor(UNLABELLED) if codes[i] < 0 else class_colour(int(codes[i]), 4)
        assert view.point_brush(i) == expected, i
    assert [label.text for _, label in view.legend.items] == ["w", "x", "y", "z", "untagged"]


def test_the_colouring_shown_is_not_drawn_again_and_any_other_is(qtbot, view):
    data = view.data
    legend = [label for _, label in view.legend.items]
    brushes = view.scatter.data["brush"].copy()
    view.set_colouring(by_class(data))  # a new, equal colouring: nothing to draw
    assert [label for _, label in view.legend.items] == legend
    assert all(a is b for a, b in zip(view.scatter.data["brush"], brushes, strict=True))
    codes = np.where(data.labels >= 0, (data.labels + 1) % 3, -1)  # the classes' colours
    view.set_colouring(Colouring("class", codes=codes, names=list(data.classes),
                                 none_name="no label"))
    for i in range(len(data)):
        assert view.point_brush(i) == (QColor(UNLABELLED) if codes[i] < 0
                                       else class_colour(int(codes[i]), 3)), i
    scores = np.linspace(0.0, 1.0, len(data))
    scores[::5] = np.nan
    view.set_colouring(by_score("s", scores))
    before = [label.text for _, label in view.legend.items]
    view.set_colouring(by_score("s", scores.copy()))  # equal, NaN and all
    assert [label.text for _, label in view.legend.items] == before
    scores[1] = 0.5  # changed in place: drawn again all the same
    view.set_colouring(by_score("s", scores))
    low, high = np.nanmin(scores), np.nanmax(scores)
    assert view.point_brush(1) == score_colours()[int((0.5 - low) / (high - low) * SCORE_BINS)]


def test_score_colouring_spans_the_colormap_with_nan_grey(qtbot, view):
    n = len(view.data)
    values = np.linspace(2.0, 12.0, n)
    values[7] = np.nan
    view.set_colouring(by_score("blur", values))
    colours = score_colours()
    assert len(colours) == SCORE_BINS
    assert view.point_brush(0) == colours[0]
    assert view.point_brush(n - 1) == colours[-1]
    assert view.point_brush(7).name() == UNLABELLED
    i = n // 2
    expected_bin = min(int((values[i] - 2.0) / 10.0 * SCORE_BINS), SCORE_BINS - 1)
    assert view.point_brush(i) == colours[expected_bin]
    texts = [label.text for _, label in view.legend.items]
    assert texts[0] == "blur: high 12" and texts[2] == "low 2" and texts[-1] == "no score"
    flat = by_score("flat", np.full(n, 3.0))  # one value: one colour, no division by zero
    palette, index = flat.colours()
    assert len(set(index.tolist())) == 1


def test_subfolder_and_tag_codes(qtbot):
    paths = ["train/a/1.png", "test/b/2.png", "train/b/3.png", "4.png", "val\\c\\5.png"]
    data = clustered_map(n=5, paths=paths)
    folders = by_subfolder(data)
    assert folders.names == ["test/", "train/", "val/"]
    assert folders.codes.tolist() == [1, 0, 1, -1, 2]
    tags = by_tags(data, {"blurry": np.array([0, 2]), "dark": [2, 3], "all": [1, 2]})
    assert tags.names == ["all", "blurry", "dark"]
    assert tags.codes.tolist() == [1, 0, 0, 2, -1]  # image 2 has all three: "all" first
    assert [text for _, text in tags.legend()] == ["all", "blurry", "dark", "untagged"]
    with pytest.raises(ValueError, match="outside this map"):
        by_tags(data, {"x": [9]})
    assert by_class(data).codes.tolist() == data.labels.tolist()


def test_a_long_legend_is_cut_and_bad_colourings_are_refused(qtbot, view):
    n = len(view.data)
    names = [f"folder{i}" for i in range(LEGEND_ENTRIES + 7)]
    view.set_colouring(Colouring("sub-folder", codes=np.arange(n) % len(names), names=names))
    texts = [label.text for _, label in view.legend.items]
    assert texts[:LEGEND_ENTRIES] == names[:LEGEND_ENTRIES] and texts[-1] == "… and 7 more"
    with pytest.raises(ValueError, match="has 3 entries but the map has"):
        view.set_colouring(by_score("x", np.zeros(3)))
    with pytest.raises(ValueError, match="codes outside"):
        Colouring("bad", codes=np.array([0, 2]), names=["a"])
    with pytest.raises(ValueError, match="either codes"):
        Colouring("bad")


def test_colour_by_box_offers_the_pages_colourings(qtbot):
    data = clustered_map()
    box = ColourByBox()
    qtbot.addWidget(box)
    chosen, failed = [], []
    box.colouring_chosen.connect(chosen.append)
    box.failed.connect(failed.append)

    def broken() -> Colouring:
        raise ValueError("no scores computed yet")

    box.set_entries({"class": lambda: by_class(data), "sub-folder": lambda: by_subfolder(data),
                     "blur": broken})
    assert [box.itemText(i) for i in range(box.count())] == ["class", "sub-folder", "blur"]
    assert len(chosen) == 1 and chosen[-1].name == "class"
    box.choose("sub-folder")
    assert chosen[-1].name == "sub-folder"
    box.set_entries({"sub-folder": lambda: by_subfolder(data), "class": lambda: by_class(data)})
    assert box.currentText() == "sub-folder" and len(chosen) == 2  # kept, not re-emitted
    box.set_entries({"class": lambda: by_class(data), "blur": broken})
    box.choose("blur")
    assert failed and "no scores computed yet" in failed[-1]
    with pytest.raises(ValueError, match="no colouring"):
        box.choose("nothing")


def test_a_new_map_of_the_same_images_moves_the_points(qtbot, view):
    old = view.data
    moved = MapData(old.coords[::-1].copy(), old.paths, old.labels, old.classes, old.root,
                    old.checkpoint, old.space, "pca")
    view.set_selection([1, 2])
    view.set_map(moved)
    x, y = view.scatter.getData()
    np.testing.assert_array_equal(np.stack([x, y], 1).astype(np.float32), moved.coords)
    assert view.selected.tolist() == []  # the map's own selection is cleared
    assert view.point_brush(0) == class_colour(int(old.labels[0]), 3)
    i = 40
    assert view.scatter._picker.nearest(float(moved.coords[i, 0]), float(moved.coords[i, 1]),
                                        1e-6, 1e-6) == i


def test_points_are_drawn_as_pyqtgraph_draws_them(qtbot, view):
    view.set_colouring(by_score("x", view.data.coords[:, 0]))
    view.set_selection(np.arange(0, len(view.data), 4))
    view.view_box.setRange(xRange=(-4, 2), yRange=(-3, 3), padding=0)  # some out of view
    qtbot.wait(20)
    scatter, viewport = view.scatter, view.plot.viewport()

    def render(paint) -> QImage:
        image = QImage(viewport.size(), QImage.Format_ARGB32)
        image.fill(0)
        painter = QPainter(image)
        painter.setTransform(scatter.deviceTransform(view.plot.viewportTransform()))
        paint(scatter, painter, None, viewport)
        painter.end()
        return image

    ours = render(MapScatter.paint)
    assert ours == render(pg.ScatterPlotItem.paint)
    view.set_selection([])
    assert render(MapScatter.paint) != ours  # the comparison sees a change


def test_a_map_of_100k_points_exports_as_png(qtbot, tmp_path):
    # pyqtgraph's export draws each point with its own Python call, which PySide ends in a
    # crash ("deallocating None") at this size; the map exports its fragments instead
    n = 100_000
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, n)
    coords = (np.array([[-5, 0], [5, 0]])[labels] + rng.normal(0, 1, (n, 2))).astype(np.float32)
    view = MapView()
    qtbot.addWidget(view)
    view.resize(500, 400)
    view.show()
    view.set_map(MapData(coords, [f"{i}.png" for i in range(n)], labels, ["a", "b"], "/data",
                         "last", "h", "umap"))
    path = tmp_path / "map.png"
    view.export_png(path, width=800)
    image = QImage(str(path))
    assert image.width() == 800
    centre = view.plot.plotItem.vb.mapViewToScene(QPointF(-5, 0))
    scale = 800 / view.plot.plotItem.sceneBoundingRect().width()
    offset = view.plot.plotItem.sceneBoundingRect().topLeft()
    pixel = image.pixelColor(int((centre.x() - offset.x()) * scale),
                             int((centre.y() - offset.y()) * scale))
    assert pixel.rgb() == class_colour(0, 2).rgb()  # the middle of class a's cluster
