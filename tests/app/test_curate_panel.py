"""The curate panel: the thumbnail grid over 100,000 rows, duplicates regrouped by the
threshold against a brute-force union-find, and each view filled by a real engine child on
the trained run (outliers, mistakes, duplicates), compared with the engine's own answers;
then the saved results read again without a child, and the message of a folder without
classes."""

import json
import shutil
import time

import numpy as np
import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QImage

from app.child.engine_jobs import EngineQueue
from app.model.curation import (
    CurationImages,
    DuplicatePairs,
    load_curation,
    regroup,
)
from app.widgets.curate_panel import CuratePanel
from app.widgets.duplicates_view import DuplicatesView
from app.widgets.image_grid import INDEX_ROLE, PATH_ROLE, SCORE_ROLE, ImageGrid
from app.widgets.neighbours_panel import ThumbnailCache
from engine.evaluate import curate, explore
from engine.evaluate.knn import NO_LABELS_MESSAGE
from tests.helpers.folders import make_flat_folder, write_image

CHILD_MS = 90_000


def brute_groups(n, i, j, s, threshold, labels):
    """Union-find by hand over the pairs at or above ``threshold``: (members, highest and
    lowest similarity of those pairs within the group, their number, across classes)."""
    parent = list(range(n))

    def find(a):
        while parent[a] != a:
            a = parent[a]
        return a

    edges = [(a, b, w) for a, b, w in zip(i.tolist(), j.tolist(), s.tolist()) if w >= threshold]
    for a, b, _ in edges:
        parent[find(a)] = find(b)
    groups = {}
    for a, b, _ in edges:
        for node in (a, b):
            groups.setdefault(find(node), set()).add(node)
    out = []
    for members in sorted((sorted(g) for g in groups.values()), key=lambda g: g[0]):
        inside = [w for a, b, w in edges if a in members]
        classes = {labels[m] for m in members if labels[m] >= 0}
        out.append((members, max(inside), min(inside), len(inside), len(classes) > 1))
    return out


def groups_of(found):
    return [(found.group(g).tolist(), float(found.max_similarity[g]),
             float(found.min_similarity[g]), int(found.pairs[g]), bool(found.cross_class[g]))
            for g in range(len(found))]


def random_pairs(seed, n=60, m=150):
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n - 1, m)
    j = np.minimum(n - 1, i + 1 + rng.integers(0, 12, m))
    s = rng.uniform(0.8, 1.0, m).astype(np.float32)
    labels = rng.integers(-1, 3, n)
    return n, i, j, s, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_regroup_matches_a_brute_force_union_find(seed):
    n, i, j, s, labels = random_pairs(seed)
    for threshold in (0.8, 0.85, 0.9, 0.95, 0.99, 1.0):
        found = regroup(n, i, j, s, threshold, labels)
        want = brute_groups(n, i, j, s.astype(np.float64), np.float32(threshold), labels)
        got = groups_of(found)
        assert [g[0] for g in got] == [w[0] for w in want]
        assert [g[3:] for g in got] == [w[3:] for w in want]
        np.testing.assert_allclose(np.reshape([g[1:3] for g in got], (-1, 2)),
                                   np.reshape([w[1:3] for w in want], (-1, 2)), atol=1e-7)
        # the engine's own grouping of the same edges, and what is redundant
        keep = s >= threshold
        assert found.as_lists() == curate.connected_components(n, i[keep], j[keep])
        assert found.redundant().tolist() == sorted(m for w in want for m in w[0][1:])
    assert len(regroup(n, i, j, s, 1.01)) == 0


def test_image_grid_opens_100k_rows_at_once_and_reports_clicks(qtbot, tmp_path):
    thumbnails = ThumbnailCache(size=32)
    grid = ImageGrid(thumbnails, px=32)
    qtbot.addWidget(grid)
    grid.resize(400, 300)
    grid.show()
    n = 100_000
    paths = [f"c/{k:06d}.png" for k in range(n)]
    write_image(tmp_path / "c" / "000003.png", 32, 32, seed=3)
    scores = np.linspace(0, 1, n, dtype=np.float32)
    indices = np.arange(n)[::-1].copy()  # row r shows image n - 1 - r
    started = time.perf_counter()
    grid.set_images(indices, paths, root=str(tmp_path), captions=lambda r: f"{scores[r]:.2f}",
                    scores=scores)
    seconds = time.perf_counter() - started
    assert seconds < 0.2, seconds  # no per-row work: measured 0.2-13 ms on two cores
    model = grid.model
    assert model.rowCount() == n and grid.count() == n
    at = model.index(3)
    assert model.data(at, Qt.DisplayRole) == f"{scores[3]:.2f}"
    assert model.data(at, INDEX_ROLE) == n - 4
    assert model.data(at, PATH_ROLE) == str(tmp_path / "c" / "000003.png")
    assert model.data(at, SCORE_ROLE) == pytest.approx(scores[3])
    assert model.data(at, Qt.ToolTipRole).startswith(f"#{n - 4} ")
    # the thumbnail is asked for when the row is drawn, and the row changes when it comes
    placeholder = model.data(at, Qt.DecorationRole)
    with qtbot.waitSignal(model.dataChanged, timeout=10_000) as changed:
        thumbnails.wait()
    assert changed.args[0].row() == 3
    drawn = model.data(at, Qt.DecorationRole).toImage()
    assert drawn.size() == placeholder.size() and drawn != placeholder.toImage()
    expected = QImage(str(tmp_path / "c" / "000003.png")).convertToFormat(drawn.format())
    assert drawn.pixelColor(16, 16).red() == pytest.approx(
        expected.scaled(32, 32).pixelColor(16, 16).red(), abs=60)

    with qtbot.waitSignal(grid.activated, timeout=2_000) as clicked:
        rect = grid.view.visualRect(model.index(2))
        qtbot.mouseClick(grid.view.viewport(), Qt.LeftButton, pos=rect.center())
    assert clicked.args == [n - 3]
    with qtbot.waitSignal(grid.selection_changed, timeout=2_000) as selected:
        grid.view.selectAll()
    assert len(selected.args[0]) == n and selected.args[0][0] == n - 1
    thumbnails.wait()


def test_duplicates_view_regroups_at_once_and_asks_below_the_pairs(qtbot):
    n, i, j, s, labels = random_pairs(5)
    images = CurationImages([f"x/{k}.png" for k in range(n)], labels, ["a", "b", "c"], "/none")
    pairs = DuplicatePairs(n, i, j, s, start=0.9, threshold=0.95)
    view = DuplicatesView(ThumbnailCache())
    qtbot.addWidget(view)
    view.set_ready(True)
    view.show_data(pairs, images)
    assert view.threshold() == 0.95 and view.spin.value() == pytest.approx(0.95)
    want = brute_groups(n, i, j, s, np.float32(0.95), labels)
    assert view.groups.as_lists() == [w[0] for w in want] and view.model.rowCount() == len(want)
    view.slider.setValue(view.slider.maximum() * 3 // 4)  # the slider regroups, no engine
    t = view.threshold()
    assert view.spin.value() == pytest.approx(t) and 0.9 < t < 1.0
    assert view.groups.as_lists() == [w[0] for w in brute_groups(n, i, j, s, np.float32(t),
                                                                 labels)]
    view.spin.setValue(0.91)
    assert view.groups.as_lists() == [w[0] for w in brute_groups(n, i, j, s, np.float32(0.91),
                                                                 labels)]
    with qtbot.waitSignal(view.image_activated, timeout=2_000) as clicked:
        rect, gap, px = view.list.visualRect(view.model.index(0)), view.delegate.GAP, 56
        second = QPoint(rect.left() + 2 * gap + px + px // 2,
                        rect.top() + view.list.fontMetrics().height() + 4 + gap + px // 2)
        qtbot.mouseClick(view.list.viewport(), Qt.LeftButton, pos=second)
    assert clicked.args == [int(view.groups.group(0)[1])]  # row 0, second thumbnail
    row = next(r for r in range(view.model.rowCount()) if view.groups.cross_class[r])
    assert "across classes" in view.model.data(view.model.index(row), Qt.DisplayRole)
    with qtbot.waitSignal(view.select_requested) as selected:
        view.select_redundant.click()
    assert selected.args[0].tolist() == sorted(m for w in brute_groups(
        n, i, j, s, np.float32(0.91), labels) for m in w[0][1:])
    assert selected.args[1] == "duplicates: redundant"
    view.list.setCurrentIndex(view.model.index(1))
    with qtbot.waitSignal(view.select_requested) as group:
        view.select_group.click()
    assert group.args[0].tolist() == view.groups.group(1).tolist()
    # below the pairs' start: no groups, and the engine is asked at that threshold
    assert not view.find_here.isEnabled()
    view.spin.setValue(0.85)
    assert view.groups is None and view.model.rowCount() == 0
    assert "found from similarity 0.9000" in view.summary.text()
    assert view.find_here.isEnabled()
    with qtbot.waitSignal(view.run_requested) as asked:
        view.find_here.click()
    assert asked.args[0] == ["--threshold", "0.85", "--min-threshold", "0.83"]


@pytest.fixture
def panel(qtbot, trained_run):
    run_dir, cache = trained_run
    jobs = EngineQueue(cache)
    thumbnails = ThumbnailCache()
    panel = CuratePanel(jobs, thumbnails)
    qtbot.addWidget(panel)
    panel.tag_names = []
    panel.ask_tag_name = lambda default: panel.tag_names.append(default) or default
    yield panel
    jobs.cancel()
    thumbnails.wait()


def test_engine_children_fill_the_views_like_the_engine(qtbot, panel, trained_run):
    run_dir, cache = trained_run
    with qtbot.waitSignal(panel.loaded, timeout=10_000):
        panel.set_context(run_dir, "last", "h")
    assert "press Find outliers" in panel.outliers.summary.text()
    assert not panel.duplicates.has_data() and not panel.mistakes.has_data()

    # outliers with a diverse subset of 5: shown and selected
    scores, picks = [], []
    panel.scores_ready.connect(lambda name, array: scores.append((name, array)))
    panel.select_requested.connect(lambda *args: picks.append(args))
    with qtbot.waitSignal(panel.loaded, timeout=CHILD_MS):
        panel.outliers.n_box.setValue(5)
        panel.outliers.diverse_button.click()
    engine = explore.outliers(run_dir, "last", diverse=5, cache_dir=cache, device="cpu")
    ranked = [r["index"] for r in engine["ranked"]]
    assert scores[-1][0] == "outliers" and len(scores[-1][1]) == 24
    np.testing.assert_allclose(scores[-1][1][ranked], [r["score"] for r in engine["ranked"]])
    diverse = [d["index"] for d in engine["diverse"]]
    assert picks[-1][0].tolist() == diverse and picks[-1][1:] == ("replace", "outliers: diverse 5")
    assert panel.outliers.grid.indices().tolist() == diverse
    panel.outliers.order.setCurrentText("Most unusual first")
    assert panel.outliers.grid.indices().tolist() == ranked
    panel.outliers.n_box.setValue(3)
    panel.mode_box.setCurrentIndex(1)  # add to the selection
    panel.outliers.select_top.click()
    assert picks[-1][0].tolist() == ranked[:3] and picks[-1][1] == "add"
    tags = []
    panel.tag_requested.connect(lambda name, indices: tags.append((name, indices.tolist())))
    panel.outliers.tag_top.click()
    assert tags[-1] == ("outlier", ranked[:3])

    # label mistakes: the engine's suspects, most confident first; tagged "check label"
    with qtbot.waitSignal(panel.loaded, timeout=CHILD_MS):
        panel.mistakes.run_button.click()
    engine = explore.mistakes(run_dir, "last", cache_dir=cache, device="cpu")
    model = panel.mistakes.model
    assert [model.image_index(r) for r in range(model.rowCount())] == [
        s["index"] for s in engine["suspects"]]
    confidence = scores[-1][1]
    assert scores[-1][0] == "mistakes" and len(confidence) == 24
    for s in engine["suspects"]:
        assert confidence[s["index"]] == pytest.approx(s["confidence"])
    assert (confidence > 0).sum() == len(engine["suspects"])
    # (the 6-step encoder barely tells circles from squares: observed 12 suspects)
    assert len(engine["suspects"]) >= 2
    suspect = engine["suspects"][1]
    row = 1
    assert model.image_index(row) == suspect["index"]
    assert model.data(model.index(row, 3), Qt.DisplayRole) == suspect["suggested"]
    assert model.data(model.index(row, 2), Qt.DisplayRole) == suspect["class"]
    assert model.data(model.index(row, 1), Qt.DisplayRole) == suspect["path"].split("/")[1]
    assert suspect["suggested"] != suspect["class"]
    panel.mistakes.set_checked([row])
    panel.mistakes.select_checked.click()
    assert picks[-1][0].tolist() == [suspect["index"]] and picks[-1][2] == "mistakes: checked"
    panel.mistakes.tag_button.click()
    assert tags[-1] == ("check label", [suspect["index"]])
    model.sort(4, Qt.AscendingOrder)
    assert model.image_index(0) == engine["suspects"][-1]["index"]

    # duplicates at a low threshold with pairs from lower still; the slider regroups
    emb = explore.embeddings(run_dir, "last", cache_dir=cache)
    dense = curate.normalise(emb.features) @ curate.normalise(emb.features).T
    upper = np.sort(dense[np.triu_indices(24, 1)])
    low, high = float(upper[-30]), float(upper[-8])  # 30 pairs listed, groups at 8 pairs
    with qtbot.waitSignal(panel.loaded, timeout=CHILD_MS):
        panel.run("duplicates", ["--threshold", f"{high:.6f}", "--min-threshold",
                                 f"{low:.6f}"])
    view = panel.duplicates
    engine = explore.duplicates(run_dir, "last", threshold=round(high, 6), cache_dir=cache,
                                device="cpu")
    assert view.groups.as_lists() == [[m["index"] for m in g["members"]]
                                      for g in engine["groups"]]
    middle = float(upper[-20])
    qtbot.waitUntil(lambda: not panel.jobs.is_busy(), timeout=10_000)
    started = []
    panel.jobs.started.connect(started.append)
    view.spin.setValue(middle)  # down to 20 pairs: regrouped here, no child
    assert not panel.jobs.is_busy() and not started
    engine = explore.duplicates(run_dir, "last", threshold=round(middle, 6), cache_dir=cache,
                                device="cpu")
    assert view.groups.as_lists() == [[m["index"] for m in g["members"]]
                                      for g in engine["groups"]]
    assert view.redundant().tolist() == sorted(
        emb.paths.index(p) for p in engine["redundant"])
    view.tag_redundant.click()
    assert tags[-1] == ("duplicate", view.redundant().tolist())
    assert len(engine["groups"]) > 0
    assert panel.tag_names[-3:] == ["outlier", "check label", "duplicate"]

    # a new panel reads the saved results at once, without a child
    other = CuratePanel(EngineQueue(cache), ThumbnailCache())
    qtbot.addWidget(other)
    with qtbot.waitSignal(other.loaded, timeout=10_000):
        other.set_context(run_dir, "last", "h")
    assert other.outliers.has_data() and other.mistakes.has_data() and other.duplicates.has_data()
    assert other.duplicates.threshold() == round(middle, 6)  # the last duplicates run saved
    assert other.mistakes.model.rowCount() == model.rowCount()
    with qtbot.waitSignal(other.loaded, timeout=10_000):
        other.set_context(run_dir, "random", "h")
    assert not other.outliers.has_data() and "press Find" in other.outliers.summary.text()


def test_a_folder_without_classes_says_so(qtbot, panel, trained_run, tmp_path):
    run_dir, cache = trained_run
    flat = make_flat_folder(tmp_path / "flat", 8)
    config = json.loads((run_dir / "config.json").read_text())
    config["data"] = str(flat)
    (run_dir / "config.json").write_text(json.dumps(config))
    shutil.rmtree(run_dir / "embeddings", ignore_errors=True)
    with qtbot.waitSignal(panel.loaded, timeout=10_000):
        panel.set_context(run_dir, "random", "h")
    panel.mistakes.run_button.click()
    qtbot.waitUntil(lambda: panel.mistakes.run_button.isEnabled(), timeout=CHILD_MS)
    assert NO_LABELS_MESSAGE.split(";")[0][:40] in panel.mistakes.summary.text()
    assert panel.mistakes.summary.property("role") == "error"
    assert load_curation(run_dir, "random", "h")["images"] is not None
    assert not panel.mistakes.has_data()


def test_views_ignore_a_panel_with_no_run(qtbot):
    panel = CuratePanel(EngineQueue(None), ThumbnailCache())
    qtbot.addWidget(panel)
    assert not panel.duplicates.run_button.isEnabled()
    panel.run("outliers")
    assert not panel.jobs.is_busy()


def test_mistakes_table_sorts_each_column_like_a_stable_python_sort(qtbot):
    from app.model.curation import LabelSuspects
    from app.widgets.mistakes_view import MistakesView

    rng = np.random.default_rng(1)
    n = 30
    images = CurationImages([f"{'ab'[k % 2]}/{rng.integers(5)}-{k}.png" for k in range(n)],
                            np.arange(n) % 2, ["a", "b"], "/none")
    index = rng.permutation(n)[:12]
    confidence = rng.choice([0.6, 0.7, 0.9], 12).astype(np.float32)  # ties
    suggested = ["b" if images.labels[i] == 0 else "a" for i in index]
    view = MistakesView(ThumbnailCache())
    qtbot.addWidget(view)
    view.show_data(LabelSuspects(n, index, suggested, confidence, 5), images)
    model = view.model
    view.table.selectRow(3)  # the selection follows its suspect through the sorts
    selected = model.image_index(3)
    keys = {1: lambda s: images.paths[index[s]].split("/")[1], 2: lambda s: images.paths[
        index[s]][0], 3: lambda s: suggested[s], 4: lambda s: float(confidence[s])}
    for column, key in keys.items():
        for descending in (False, True):
            model.sort(column, Qt.DescendingOrder if descending else Qt.AscendingOrder)
            got = [model.image_index(r) for r in range(12)]
            # a stable sort: ties keep the engine's order in both directions
            want = sorted(range(12), key=key, reverse=descending)
            assert got == [int(index[s]) for s in want], (column, descending)
            rows = {i.row() for i in view.table.selectionModel().selectedIndexes()}
            assert [model.image_index(r) for r in rows] == [selected]
    view.set_checked([0, 2])
    assert view.model.checked_indices().tolist() == sorted(
        [model.image_index(0), model.image_index(2)])


def test_a_capped_pair_list_still_shows_the_engines_groups_at_its_threshold():
    n, i, j, s, labels = random_pairs(7)
    order = np.argsort(-s, kind="stable")[:40]  # the 40 most similar: from s[order[-1]] up
    start = float(s[order[-1]])
    at = brute_groups(n, i, j, s, np.float32(0.9), labels)
    result = {"threshold": 0.9, "images": n, "groups": [
        {"members": [{"index": m} for m in g[0]], "max_similarity": g[1],
         "min_similarity": g[2], "pairs": g[3], "cross_class": g[4]} for g in at],
        "pairs_list": {"from": start, "i": i[order].tolist(), "j": j[order].tolist(),
                       "similarity": s[order].tolist(), "message": "capped"}}
    pairs = DuplicatePairs.from_result(result)
    assert pairs.can_regroup(0.9) and not pairs.can_regroup(0.91) and start > 0.91
    assert pairs.groups(0.9).as_lists() == [g[0] for g in at]  # the engine's own
    assert pairs.groups(start).as_lists() == [g[0] for g in brute_groups(
        n, i, j, s, np.float32(start), labels)]
    del result["pairs_list"]  # saved before pair lists: its own groups only
    old = DuplicatePairs.from_result(result)
    assert old.can_regroup(0.9) and not old.can_regroup(0.95)
    assert old.groups(0.9).as_lists() == [g[0] for g in at]


def test_thumbnail_requests_ask_a_bounded_number_and_redraw_the_rest(qtbot, tmp_path,
                                                                     monkeypatch):
    from app.widgets import image_grid

    monkeypatch.setattr(image_grid, "MAX_IN_FLIGHT", 4)
    paths = [str(write_image(tmp_path / f"{k}.png", 16, 16, seed=k)) for k in range(10)]
    thumbnails = ThumbnailCache(size=16)
    ready = []
    requests = image_grid.ThumbnailRequests(thumbnails, 16, ready.extend)
    assert all(requests.pixmap(p, row) is None for row, p in enumerate(paths))
    assert requests.in_flight() == 4  # rows 4-9 were told to wait
    thumbnails.wait()
    qtbot.waitUntil(lambda: requests.in_flight() == 0, timeout=5_000)
    assert sorted(set(ready)) == list(range(10))  # each row is told to draw again
    drawn = [requests.pixmap(p, row) for row, p in enumerate(paths)]
    assert all(d is not None for d in drawn[:4]) and requests.in_flight() == 4
    thumbnails.wait()
