"""The curves show what the run history holds, redrawn by a timer."""

import numpy as np
import pytest

pytest.importorskip("PySide6")

from app.model.run_model import RunHistory
from app.widgets.curves import TrainingCurves


def step(n, loss, std=0.9):
    return {"type": "step", "step": n, "loss": loss, "lr": 0.01 * n, "pairs_per_s": 30.0,
            "positive_pair_similarity": 0.1 * n, "embedding_std": std}


def test_curves_follow_the_history_on_the_timer(qtbot):
    widget = TrainingCurves()
    qtbot.addWidget(widget)
    history = RunHistory()
    widget.show_history(history)
    for n in range(1, 6):
        history.add(step(n, 5.0 - n))
    widget.mark_dirty()
    def drawn() -> int:
        x, _ = widget.curves["loss"].getData()
        return 0 if x is None else len(x)

    assert drawn() == 0  # nothing is drawn until the timer fires
    qtbot.waitUntil(lambda: not widget._dirty, timeout=2000)  # every plot, tick by tick
    x, y = widget.curves["loss"].getData()
    np.testing.assert_array_equal(x, [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(y, [4, 3, 2, 1, 0])
    np.testing.assert_allclose(widget.curves["lr"].getData()[1], [0.01, 0.02, 0.03, 0.04, 0.05])
    assert not widget.collapsing()
    history.add(step(6, 0.5, std=0.05))
    widget.mark_dirty()
    widget.redraw()
    assert widget.collapsing()
    other = RunHistory()
    other.add(step(1, 3.0))
    widget.add_overlay("earlier run", other)
    assert len(widget._overlays) == 1
    widget.clear_overlays()
    assert widget._overlays == []


def test_each_tick_redraws_one_plot_in_turn(qtbot):
    widget = TrainingCurves()
    qtbot.addWidget(widget)
    widget._timer.stop()  # ticks by hand
    history = RunHistory()
    widget.show_history(history)
    history.add(step(1, 4.0))
    history.add(step(2, 3.0))
    widget.mark_dirty()

    def points(key):
        x, _ = widget.curves[key].getData()
        return 0 if x is None else len(x)

    order = []
    for _ in range(4):
        widget.redraw()
        order.append([k for k in ("loss", "lr", "embedding_std", "pairs_per_s")
                      if points(k) == 2])
    assert order == [["loss"], ["loss", "lr"], ["loss", "lr", "embedding_std"],
                     ["loss", "lr", "embedding_std", "pairs_per_s"]]
    assert points("smoothed") == 2 and points("positive_pair_similarity") == 2


def test_the_knn_curve_holds_the_eval_events(qtbot):
    widget = TrainingCurves()
    qtbot.addWidget(widget)
    history = RunHistory()
    history.add({"type": "run_start", "dataset": {"classes": ["a", "b"]}, "total_steps": 9})
    for n in range(1, 7):
        history.add(step(n, 5.0 - n / 2))
    history.add({"type": "eval", "epoch": 1, "step": 3, "knn_top1": 0.55, "knn_k": 20})
    history.add({"type": "eval", "epoch": 2, "step": 6, "knn_top1": 0.75, "knn_k": 20})
    history.add({"type": "eval", "epoch": 2, "step": "6", "knn_top1": 0.9})  # malformed
    widget.show_history(history)
    x, y = widget.curves["knn"].getData()
    np.testing.assert_array_equal(x, [3, 6])
    np.testing.assert_allclose(y, [55.0, 75.0])
    assert history.best_knn == 0.75 and not widget.no_labels.isVisible()
    flat = RunHistory()
    flat.add({"type": "run_start", "dataset": {"classes": []}})
    widget.show_history(flat)
    x, _ = widget.curves["knn"].getData()
    assert widget.no_labels.isVisible() and (x is None or len(x) == 0)


def test_replayed_runs_know_their_best_knn(tmp_path):
    import json

    from app.model.run_model import list_runs

    run = tmp_path / "20260101-000000-simclr-x"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"method": "simclr", "data": "/x"}))
    lines = [step(1, 3.0), {"type": "eval", "step": 1, "epoch": 1, "knn_top1": 0.6},
             step(2, 2.0), {"type": "eval", "step": 2, "epoch": 2, "knn_top1": 0.5}]
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    (summary,) = list_runs(tmp_path)
    assert summary.best_knn == 0.6 and summary.steps == 2


def many_steps(history, n, rate=lambda s: 19.4 + 0.8 * (s % 2)):
    for s in range(1, n + 1):
        event = step(s, 5.0 - s / n)
        event["pairs_per_s"] = rate(s)
        history.add(event)


@pytest.mark.parametrize("size", [(1110, 560), (690, 400)])  # 1440x900 and the smallest
def test_titles_and_ticks_fit_inside_each_plot(qtbot, size):
    widget = TrainingCurves()
    qtbot.addWidget(widget)
    widget.resize(*size)
    widget.show()
    qtbot.waitExposed(widget)
    history = RunHistory()
    many_steps(history, 820)
    widget.show_history(history)
    qtbot.wait(50)
    for name, plot in widget.plots.items():
        item = plot.getPlotItem()
        title = item.titleLabel
        assert title.item.boundingRect().width() <= title.boundingRect().width() + 1, name
        assert item.geometry().width() <= plot.viewport().width() + 1, name  # not cut
        bottom = item.getAxis("bottom")
        right = bottom.mapRectToItem(item, bottom.boundingRect()).right()
        assert item.geometry().width() - right >= 10, name  # room for the last tick label
    for name, plot in widget.plots.items():  # the titles name the curves: no legend over data
        assert plot.getPlotItem().legend is None, name


def test_few_points_are_marked_and_the_axes_are_not_overzoomed(qtbot):
    widget = TrainingCurves()
    qtbot.addWidget(widget)
    history = RunHistory()
    history.add({"type": "run_start", "dataset": {"classes": ["a", "b"]}, "total_steps": 900})
    many_steps(history, 2)
    widget.show_history(history)
    assert widget.curves["smoothed"].opts["symbol"] == "o"
    assert widget.curves["smoothed_rate"].opts["symbol"] == "o"
    assert widget.curves["pairs_per_s"].opts["symbol"] is None  # the raw rate: faint
    assert widget.no_labels.isVisible() and "end of each epoch" in widget.no_labels.toPlainText()
    many_steps(history, 60)
    history.add({"type": "eval", "epoch": 1, "step": 41, "knn_top1": 0.86, "knn_k": 20})
    history.add({"type": "eval", "epoch": 2, "step": 60, "knn_top1": 0.865, "knn_k": 20})
    widget.mark_dirty()
    widget.redraw_all()
    assert widget.curves["smoothed"].opts["symbol"] is None
    # 19.4-20.2 pairs/s is noise: the axis starts at zero
    low, high = widget.plots["speed"].getPlotItem().viewRange()[1]
    assert low == 0 and 20.2 <= high <= 25
    low, high = widget.plots["knn"].getPlotItem().viewRange()[1]
    assert high - low >= 10 and low <= 86 and high >= 86.5 and high <= 101
    low, high = widget.plots["health"].getPlotItem().viewRange()[1]
    assert low <= 0 < 0.2 < 1 <= high  # the collapse line is in view
    assert widget.collapse_line.label.toPlainText() == "collapse below 0.2"
    assert not widget.no_labels.isVisible()


def test_the_rate_is_smoothed_as_the_loss_and_its_title_gives_the_smoothed_value(qtbot):
    widget = TrainingCurves()
    qtbot.addWidget(widget)
    history = RunHistory()
    rates = np.random.default_rng(0).uniform(10, 100, size=300)  # jumps from step to step
    rates[40] = np.nan  # a step without a rate (the engine writes NaN as null)
    for n, rate in enumerate(rates, start=1):
        event = step(n, 5.0)
        event["pairs_per_s"] = None if np.isnan(rate) else float(rate)
        history.add(event)
    widget.show_history(history)
    # The reference: an exponential moving average with weight 0.9 on the past, written out.
    expected, previous = [], rates[0]
    for rate in rates:
        previous = previous if np.isnan(rate) else 0.9 * previous + 0.1 * rate
        expected.append(previous)
    x, y = widget.curves["smoothed_rate"].getData()
    np.testing.assert_array_equal(x, np.arange(1, 301))
    np.testing.assert_allclose(y, expected)
    assert np.all(np.isfinite(y))  # the gap is bridged in the smoothed curve, as the loss's
    _, raw = widget.curves["pairs_per_s"].getData()  # the raw rate is still drawn, thin
    assert np.isnan(raw[40]) and raw[0] == rates[0]
    assert widget.curves["pairs_per_s"].opts["pen"].width() < (
        widget.curves["smoothed_rate"].opts["pen"].width())
    assert np.std(np.diff(y)) < np.std(np.diff(rates[np.isfinite(rates)])) / 5
    title = widget.plots["speed"].getPlotItem().titleLabel.text
    assert "Pairs per second: " in title and f">{round(expected[-1])}<" in title
    low, high = widget.plots["speed"].getPlotItem().viewRange()[1]
    assert low == 0 and high >= max(expected)
