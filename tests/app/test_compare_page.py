"""The Compare page: both sides' maps (made by engine children, or saved ones loaded at
once), the compare verb's result against a brute-force overlap, hover and box selection
linked by image between two runs whose folders differ, and the engine's refusal of runs
without common images."""

import shutil

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")

from app.model.explore_data import saved_neighbours
from app.pages.compare_page import A, B, ComparePage
from engine.evaluate import explore
from engine.evaluate.maps import MapParams
from tests.helpers.copied_runs import run_on_folder
from tests.helpers.folders import make_folder

CHILD_MS = 90_000
K = 5
PCA = MapParams(method="pca")


@pytest.fixture
def make_page(qtbot):
    pages = []

    def make(runs_root, cache):
        page = ComparePage(runs_root, cache)
        qtbot.addWidget(page)
        page.map_settings.set_method("pca")
        page.k_box.setValue(K)
        pages.append(page)
        return page

    yield make
    for page in pages:
        page.cancel(quiet=True)
        page.thumbnails.wait()
        page._pool.waitForDone(10_000)


def brute_force_overlap(xa, xb, k):
    def nearest(x):
        v = np.asarray(x, np.float64)
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
        sims = v @ v.T
        np.fill_diagonal(sims, -np.inf)
        return [set(np.argsort(-row)[:k].tolist()) for row in sims]

    return np.array([len(a & b) / k for a, b in zip(nearest(xa), nearest(xb))])


def mark_of(view):
    """The position of a map's selected mark, or None when there is none."""
    x, y = view.selected_mark.getData()
    return None if len(x) == 0 else (float(x[0]), float(y[0]))


def test_random_against_trained_maps_and_comparison(qtbot, make_page, trained_run):
    run_dir, cache = trained_run
    page = make_page(run_dir.parent, cache)
    page.set_run(run_dir)
    a, b = page.sides
    assert (a.run_dir(), a.checkpoint()) == (run_dir, "last")
    assert (b.run_dir(), b.checkpoint()) == (run_dir, "random")  # the default other side
    assert a.run_box.findData(str(run_dir)) >= 0
    assert a.map_view.data is None and b.map_view.data is None  # nothing saved yet

    with qtbot.waitSignal(page.maps_linked, timeout=2 * CHILD_MS):
        page.compute_maps()
    qtbot.waitUntil(lambda: not page.is_busy(), timeout=CHILD_MS)
    for side, ckpt in ((a, "last"), (b, "random")):  # the maps the children saved
        expected = explore.make_map(run_dir, ckpt, params=PCA, cache_dir=cache, device="cpu")
        np.testing.assert_array_equal(side.map_view.data.coords, expected["coords"])
        assert side.map_view.data.checkpoint == ckpt
    assert page.links.a_to_b.tolist() == list(range(24))

    with qtbot.waitSignal(page.compared, timeout=CHILD_MS) as compared:
        page.compare_neighbourhoods()
    result = compared.args[0]
    xa = explore.embeddings(run_dir, "last", cache_dir=cache).features
    xb = explore.embeddings(run_dir, "random", cache_dir=cache).features
    want = brute_force_overlap(xa, xb, K)
    np.testing.assert_allclose(page.overlap, want, atol=1e-6)
    assert result["k"] == K and result["mean_overlap"] < 1
    assert f"{want.mean():.3f}" in page.summary.text()
    assert f"{100 * (want == 0).mean():.0f}%" in page.summary.text()
    tiles = page.changed.tiles
    order = sorted(range(24), key=lambda i: (want[i], i))
    assert [t.info.index for t in tiles] == order  # all 24: fewer than the cap

    # A changed image clicked: marked on both maps, its neighbours in A and B shown.
    picked = order[0]
    with qtbot.waitSignals([page.neighbours_shown, page.neighbours_shown],
                           timeout=10_000):
        tiles[0].clicked.emit(picked)
    qtbot.waitUntil(lambda: all(len(p.grid.tiles) == K for p in page.panels), timeout=10_000)
    assert page.picked == (picked, picked)
    for side, panel, ckpt in ((a, page.panels[A], "last"), (b, page.panels[B], "random")):
        assert mark_of(side.map_view) == tuple(side.map_view.data.coords[picked].tolist())
        expected = saved_neighbours(run_dir, ckpt, "h", picked, K)
        assert [t.info.index for t in panel.grid.tiles] == [
            n["index"] for n in expected["neighbours"]]
        assert side.map_view.neighbours == [n["index"] for n in expected["neighbours"]]

    # Without the maps' links the comparison's own matching finds the other side.
    page.links = None
    page.pick(B, order[1])
    assert page.picked == (order[1], order[1])

    # Another checkpoint on a side: the comparison no longer applies.
    b.checkpoint_box.set_checkpoint("last")
    assert page.overlap is None and page.changed.tiles == []


def test_hover_and_selection_are_linked_by_path_between_runs(qtbot, make_page, trained_run,
                                                             tmp_path):
    run_dir, cache = trained_run
    folder = tmp_path / "subset"
    shutil.copytree(explore.embeddings(run_dir, "last", cache_dir=cache).root, folder)
    gone = sorted(folder.rglob("*.png"))[:3]  # B lacks three of A's images
    for path in gone:
        path.unlink()
    run_b = run_on_folder(run_dir, folder, run_dir.parent / "run-b")
    for run, ckpt in ((run_dir, "last"), (run_b, "random")):  # saved maps: load at once
        explore.make_map(run, ckpt, params=PCA, cache_dir=cache, device="cpu")

    page = make_page(run_dir.parent, cache)
    page.set_run(run_dir)
    a, b = page.sides
    assert b.run_box.findData(str(run_b)) >= 0  # both runs are listed
    with qtbot.waitSignal(page.maps_linked, timeout=10_000):
        b.set_choice(run_b, "random")
    data_a, data_b = a.map_view.data, b.map_view.data
    assert (len(data_a), len(data_b)) == (24, 21) and not page.is_busy()
    where_b = {p: j for j, p in enumerate(data_b.paths)}
    missing = {p.relative_to(folder).as_posix() for p in gone}

    # Hover: the same image is ringed on the other map, found by its path.
    shifted = next(i for i, p in enumerate(data_a.paths) if where_b.get(p, i) != i)
    a.map_view.point_hovered.emit(shifted)
    j = where_b[data_a.paths[shifted]]
    assert mark_of(b.map_view) == tuple(data_b.coords[j].tolist())
    b.map_view.point_hovered.emit(j)  # and back
    assert mark_of(a.map_view) == tuple(data_a.coords[shifted].tolist())
    absent = data_a.paths.index(sorted(missing)[0])
    a.map_view.point_hovered.emit(absent)  # not in B: no ring there
    assert mark_of(b.map_view) is None
    a.map_view.point_hovered.emit(-1)
    assert mark_of(b.map_view) is None  # nothing picked to go back to

    # Box selection on A marks the same images on B (those B has), and the other way.
    chosen = np.array([absent, shifted, 20, 23], np.int64)
    a.map_view.box_selected.emit(chosen)
    want_b = sorted(where_b[data_a.paths[i]] for i in chosen if data_a.paths[i] in where_b)
    assert a.selection.indices.tolist() == sorted(chosen.tolist())
    assert b.selection.indices.tolist() == want_b and len(want_b) == 3
    x, y = b.map_view.box_marks.getData()
    np.testing.assert_array_equal(np.stack([x, y], 1), data_b.coords[want_b])
    b.map_view.box_selected.emit(np.arange(5))
    where_a = {p: i for i, p in enumerate(data_a.paths)}
    assert a.selection.indices.tolist() == sorted(where_a[data_b.paths[j]] for j in range(5))
    x, y = a.map_view.box_marks.getData()
    np.testing.assert_array_equal(np.stack([x, y], 1), data_a.coords[a.selection.indices])

    # A picked image that B lacks: marked on A, B says it is not there.
    page.pick(A, absent)
    assert page.picked == (absent, -1) and mark_of(b.map_view) is None
    assert "This image is not in B" in page.panels[B].title.text()

    # The window's next run becomes A; B keeps the run chosen for it.
    page.set_run(run_b)
    assert (a.run_dir(), b.run_dir(), b.checkpoint()) == (run_b, run_b, "random")
    page.set_run(run_dir)
    assert (a.run_dir(), b.run_dir()) == (run_dir, run_dir)  # B showed A's run: it goes along


def test_runs_without_common_images_are_refused_with_the_engines_message(
        qtbot, make_page, trained_run, tmp_path):
    run_dir, cache = trained_run
    elsewhere = make_folder(tmp_path / "others", per_class=3, classes=("cats", "dogs"))
    run_b = run_on_folder(run_dir, elsewhere, run_dir.parent / "run-elsewhere")
    page = make_page(run_dir.parent, cache)
    page.set_run(run_dir)
    page.sides[B].set_choice(run_b, "random")
    with qtbot.waitSignal(page.failed, timeout=CHILD_MS) as failed:
        page.compare_neighbourhoods()
    assert "only 0 images are in both runs" in failed.args[0]
    assert "needs at least 6" in page.status.text() and page.overlap is None
