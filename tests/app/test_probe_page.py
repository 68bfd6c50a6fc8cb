"""The Probe page against real engine children: what it shows equals what the engine
computes and saves."""

import json
import shutil

import numpy as np
import pyqtgraph as pg
import pytest

pytest.importorskip("PySide6")

from app.pages.probe_page import ProbePage
from engine.evaluate import explore
from engine.evaluate.probe import ProbeParams
from tests.helpers.folders import make_folder


def saved_rows(page):
    """The table rows of saved evaluations (not the kNN measured during training)."""
    return [r for r in range(page.table.rowCount())
            if page.table.item(r, 0).text() != "kNN (training)"]


def assert_empty_plots(page):
    for plot in (page.details.per_class_plot, page.details.confusion_plot):
        assert not plot.getPlotItem().getAxis("left").isVisible()
        assert page.details.empty_texts[plot].toPlainText().startswith("No result yet")


@pytest.fixture
def page(qtbot):
    widget = ProbePage()
    qtbot.addWidget(widget)
    yield widget
    widget.cancel(quiet=True)


def test_knn_and_probe_with_the_baseline_match_the_engine(qtbot, page, trained_run):
    run_dir, cache = trained_run
    page.jobs.cache_dir = cache
    page.set_run(run_dir)
    # Before any probe: only the kNN evaluations measured during training are listed, and
    # the empty plots say so instead of showing bare axes.
    assert page.run_button.isEnabled() and saved_rows(page) == []
    assert {page.table.item(r, 0).text() for r in range(page.table.rowCount())} == {
        "kNN (training)"}
    page.details.show_record(None)
    assert_empty_plots(page)
    with qtbot.waitSignal(page.evaluated, timeout=180_000):
        page.run_probes()
    rows = {(page.table.item(r, 0).text(), page.table.item(r, 1).text()): r
            for r in saved_rows(page)}
    assert set(rows) == {("kNN", "last"), ("kNN", "random"), ("linear probe", "last"),
                         ("linear probe", "random")}
    saved = {p.stem: json.loads(p.read_text()) for p in (run_dir / "probes").glob("*.json")}
    for (kind, ckpt), row in rows.items():
        name = (f"knn-{ckpt}-h" if kind == "kNN" else f"probe-{ckpt}-h-labels1")
        assert page.table.item(row, 4).text() == f"{100 * saved[name]['top1']:.1f}%"
        assert page.table.item(row, 6).text() == f"{100 * saved[name]['majority']:.1f}%"
        assert saved[name]["majority"] == 0.5  # 2 classes x 12 images, stratified
    # The same evaluation computed here, directly, gives the same numbers.
    direct = explore.probe(run_dir, "last", params=ProbeParams(label_fraction=1.0, seed=0,
                                                               test_fraction=0.2),
                           cache_dir=cache, device="cpu")
    assert direct["top1"] == saved["probe-last-h-labels1"]["top1"]
    knn = explore.knn(run_dir, "random", cache_dir=cache, device="cpu")
    assert knn["top1"] == saved["knn-random-h"]["top1"]
    assert f"{100 * direct['top1']:.1f}%" in page.summary.text()
    assert "random init" in page.summary.text()
    assert page.verdict.text() and "kNN" in page.verdict.text()  # plain words, from numbers
    # The selected probe row shows its confusion matrix: every held-out image once.
    page.table.selectRow(rows[("linear probe", "last")])
    shown = page.details.confusion_shown()
    np.testing.assert_array_equal(shown, np.asarray(direct["confusion"]))
    assert shown.sum() == direct["test"] > 0
    (bars,) = [i for i in page.details.per_class_plot.getPlotItem().items
               if isinstance(i, pg.BarGraphItem)]
    np.testing.assert_allclose(bars.opts["height"],
                               [100 * v for v in direct["per_class"].values()])
    assert [t.toPlainText() for t in page.details.bar_texts] == [
        f"{100 * v:.1f}%" for v in direct["per_class"].values()]
    assert page.details.per_class_plot.getPlotItem().getAxis("left").isVisible()


def test_a_folder_without_classes_says_so(qtbot, page, trained_run, tmp_path):
    run_dir, cache = trained_run
    config = json.loads((run_dir / "config.json").read_text())
    flat = tmp_path / "flat"
    flat.mkdir()
    for image in make_folder(tmp_path / "shapes").rglob("*.*"):
        shutil.copy(image, flat / image.name)  # the same images, no class sub-folders
    config["data"] = str(flat)
    (run_dir / "config.json").write_text(json.dumps(config))
    page.jobs.cache_dir = cache
    page.set_run(run_dir)
    with qtbot.waitSignal(page.failed, timeout=120_000) as failed:
        page.run_probes()
    assert "class sub-folders" in failed.args[0]
    assert ("class sub-folders" in page.status.text()
            and page.status.label.property("role") == "error")
    qtbot.waitUntil(lambda: not page.is_busy(), timeout=30_000)
    assert saved_rows(page) == [] and page.run_button.isEnabled()


def test_saved_results_are_listed_and_damaged_ones_skipped(qtbot, page, trained_run):
    run_dir, _ = trained_run
    probes = run_dir / "probes"
    probes.mkdir()
    good = {"kind": "linear-probe", "checkpoint": "epoch-0002", "space": "z", "top1": 0.75,
            "label_fraction": 0.1, "train": 2, "test": 6, "per_class": {"circles": 1.0,
                                                                        "squares": 0.5},
            "confusion": [[3, 0], [1, 2]]}
    (probes / "probe-epoch-0002-z-labels0p1.json").write_text(json.dumps(good))
    (probes / "knn-last-h.json").write_text('{"kind": "knn", "top1": 0.')  # cut short
    page.set_run(run_dir)
    assert len(saved_rows(page)) == 1
    assert [page.table.item(0, c).text() for c in range(6)] == [
        "linear probe", "epoch-0002", "z", "10.0%", "75.0%", ""]
    assert "knn-last-h.json" in page.damaged_label.text() and page.damaged_label.isVisibleTo(page)
    np.testing.assert_array_equal(page.details.confusion_shown(), [[3, 0], [1, 2]])
    page.set_run(None)
    assert page.table.rowCount() == 0 and not page.run_button.isEnabled()
    assert page.details.confusion_shown() is None
    assert_empty_plots(page)


def test_random_init_is_evaluated_before_the_first_checkpoint(qtbot, page, trained_run):
    """A run whose first epoch has not ended has no checkpoint; the untrained encoder needs
    none and is offered and evaluated."""
    run_dir, cache = trained_run
    shutil.rmtree(run_dir / "checkpoints")
    shutil.rmtree(run_dir / "embeddings", ignore_errors=True)
    page.jobs.cache_dir = cache
    page.set_run(run_dir)
    assert page.checkpoint_box.checkpoint() == "random"
    assert "random init" in page.status.text() and page.run_button.isEnabled()
    knn, probe = page.arguments()
    assert "--baseline" not in knn and knn[knn.index("--checkpoint") + 1] == "random"
    with qtbot.waitSignal(page.evaluated, timeout=180_000):
        page.run_probes()
    assert sorted((page.table.item(r, 0).text(), page.table.item(r, 1).text())
                  for r in saved_rows(page)) == [("kNN", "random"),
                                                             ("linear probe", "random")]


def _with_config(run_dir, **values):
    path = run_dir / "config.json"
    config = json.loads(path.read_text())
    config.update(values)
    path.write_text(json.dumps(config))


def _saved_probe(run_dir, checkpoint, top1):
    probes = run_dir / "probes"
    probes.mkdir(exist_ok=True)
    result = {"kind": "linear-probe", "checkpoint": checkpoint, "space": "h", "top1": top1,
              "label_fraction": 1.0, "test_fraction": 0.2, "seed": 0, "train": 18, "test": 6,
              "per_class": {"circles": 1.0, "squares": 0.5}, "confusion": [[3, 0], [1, 2]]}
    (probes / f"probe-{checkpoint}-h-labels1.json").write_text(json.dumps(result))


@pytest.mark.parametrize("init, shown", [("", "init: random"), ("imagenet", "init: imagenet"),
                                         ("/somewhere/else/start.pth", "init: start.pth")])
def test_each_result_says_what_the_run_started_from(qtbot, page, trained_run, init, shown):
    run_dir, _ = trained_run
    _with_config(run_dir, init=init)
    _saved_probe(run_dir, "last", 0.9)
    _saved_probe(run_dir, "random", 0.5)
    page.set_run(run_dir)
    assert f"last 90.0% ({shown})  vs  random init 50.0%" in page.summary.text()
    note = page.origin_note
    assert note.init_label.isVisibleTo(page) and note.init_label.text().startswith(shown)
    assert ("not the starting point" in note.init_label.text()) == bool(init)
    assert not note.labels_label.isVisibleTo(page)  # SimCLR reads no labels


def test_a_method_that_saw_the_labels_is_flagged(qtbot, page, trained_run, monkeypatch):
    from engine.methods import METHODS, MethodSpec

    monkeypatch.setitem(METHODS, "labelled", MethodSpec(
        name="labelled", title="Labelled Method", paper="a test", uses_labels=True))
    run_dir, _ = trained_run
    _with_config(run_dir, method="labelled")
    _saved_probe(run_dir, "last", 0.9)
    page.set_run(run_dir)
    note = page.origin_note.labels_label
    assert note.isVisibleTo(page) and note.property("role") == "error"
    assert "Labelled Method" in note.text() and "saw the folder's labels" in note.text()
    assert "not a self-supervised result" in note.text()
    page.set_run(None)
    assert not note.isVisibleTo(page) and not page.origin_note.init_label.isVisibleTo(page)
