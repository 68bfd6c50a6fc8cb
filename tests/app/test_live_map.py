"""The live map on the Train page: a run's frames read from disk, played with the slider and
Play, and frames added by the engine's live_map events while it trains."""

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("PySide6")

from app.model.live_map import LiveMapError, read_live_map
from app.pages.train_page import TrainPage
from app.widgets import live_map as live_map_module
from app.widgets.live_map import LiveMapView
from app.widgets.map_view import class_colour
from engine.run.layout import RunDir


def frame(run_dir, epoch):
    return np.load(RunDir(run_dir).live_map.frame(epoch))


def shown(view):
    coords = view.shown_coords()
    return None if coords is None else coords.astype(np.float32)


def loaded(qtbot, view, frames):
    qtbot.waitUntil(lambda: view.data is not None and len(view.data) == frames
                    and not view._loading and not view.tween_timer.isActive(), timeout=5000)


def live_event(run_dir, epoch, step):
    # The path as the trainer wrote it: maybe another machine's; the view goes by its name.
    return {"type": "live_map", "epoch": epoch, "step": step, "n": 24,
            "path": f"/elsewhere/{RunDir(run_dir).name}/live_map/epoch-{epoch:04d}.npy"}


def add_frame(run_dir, epoch, coords):
    np.save(RunDir(run_dir).live_map.frame(epoch), coords.astype(np.float32))


def test_the_view_shows_a_runs_newest_frame_coloured_by_class(qtbot, trained_run):
    run_dir, _ = trained_run
    view = LiveMapView()
    qtbot.addWidget(view)
    view.set_run(run_dir)
    loaded(qtbot, view, 2)
    assert view.data.epochs == [1, 2] and view.data.steps == [3, 6]
    np.testing.assert_array_equal(shown(view), frame(run_dir, 2))
    assert view.caption.text() == "epoch 2 of 2, 24 images (frame 2 of 2)"
    index = json.loads(RunDir(run_dir).live_map.index.read_text())
    brushes = view.scatter.data["brush"]
    for i, label in enumerate(index["labels"]):
        assert brushes[i].color().name() == class_colour(label, 2).name()
    assert view.slider.maximum() == 1 and view.slider.value() == 1


def test_the_slider_shows_another_epoch_and_stops_following_the_newest(qtbot, trained_run):
    run_dir, _ = trained_run
    view = LiveMapView()
    qtbot.addWidget(view)
    view.set_run(run_dir)
    loaded(qtbot, view, 2)
    view.slider.setValue(0)  # as a person dragging it
    np.testing.assert_array_equal(shown(view), frame(run_dir, 1))
    assert view.caption.text().startswith("epoch 1 of 2") and not view.follow_newest
    assert not np.allclose(frame(run_dir, 1), frame(run_dir, 2))

    # a new frame arrives: it is added, the chosen one stays shown
    new = np.random.default_rng(0).standard_normal((24, 2))
    add_frame(run_dir, 3, new)
    view.on_event(live_event(run_dir, 3, 9))
    assert len(view.data) == 3 and view.slider.maximum() == 2 and view.current == 0
    np.testing.assert_array_equal(shown(view), frame(run_dir, 1))
    view.slider.setValue(2)  # back at the end: the newest again, and the next ones
    assert view.follow_newest
    np.testing.assert_allclose(shown(view), new, rtol=1e-6)


def test_live_events_append_frames_and_show_the_newest(qtbot, trained_run):
    run_dir, _ = trained_run
    view = LiveMapView()
    qtbot.addWidget(view)
    view.set_run(run_dir)
    loaded(qtbot, view, 2)
    start = shown(view)
    new = np.random.default_rng(1).standard_normal((24, 2)).astype(np.float32)
    add_frame(run_dir, 3, new)
    view.on_event(live_event(run_dir, 3, 9))
    view.on_event({"type": "eval", "epoch": 3, "step": 9, "knn_top1": 0.5})  # not a frame
    assert view.data.epochs == [1, 2, 3] and view.current == 2
    assert view.tween_timer.isActive()  # the points glide from the old frame to the new
    qtbot.waitUntil(lambda: not view.tween_timer.isActive(), timeout=3000)
    np.testing.assert_array_equal(shown(view), new)
    assert not np.allclose(start, new)
    assert view.caption.text() == "epoch 3 of 3, 24 images (frame 3 of 3)"


def test_a_run_whose_map_is_not_written_yet_loads_it_with_its_first_frame(qtbot,
                                                                          trained_run,
                                                                          tmp_path):
    run_dir, _ = trained_run
    files = RunDir(run_dir).live_map
    kept = tmp_path / "kept"
    shutil.move(files.path, kept)
    view = LiveMapView()
    qtbot.addWidget(view)
    view.set_run(run_dir)
    qtbot.waitUntil(lambda: not view._loading, timeout=5000)
    assert view.data is None and view.caption.text().startswith("No live map yet")
    shutil.move(kept, files.path)  # the engine writes the index, then the event comes
    view.on_event(live_event(run_dir, 2, 6))
    loaded(qtbot, view, 2)
    np.testing.assert_array_equal(shown(view), frame(run_dir, 2))


def test_play_steps_through_every_frame_from_the_first(qtbot, trained_run, monkeypatch):
    run_dir, _ = trained_run
    add_frame(run_dir, 3, np.random.default_rng(2).standard_normal((24, 2)))
    index_path = RunDir(run_dir).live_map.index
    index = json.loads(index_path.read_text())
    index["frames"].append({"epoch": 3, "step": 9, "file": "epoch-0003.npy"})
    index_path.write_text(json.dumps(index))
    view = LiveMapView()
    qtbot.addWidget(view)
    view.play_timer.setInterval(20)
    view.set_run(run_dir)
    loaded(qtbot, view, 3)
    seen = []
    view.frame_shown.connect(seen.append)
    view.play_button.click()  # at the newest frame: from the first again
    assert view.play_button.text() == "Pause"
    qtbot.waitUntil(lambda: not view.play_button.isChecked(), timeout=5000)
    assert seen == [0, 1, 2] and view.play_button.text() == "Play" and view.follow_newest
    qtbot.waitUntil(lambda: not view.tween_timer.isActive(), timeout=3000)
    np.testing.assert_array_equal(shown(view), frame(run_dir, 3))


def test_a_damaged_index_is_named_and_a_run_without_a_map_says_why(qtbot, trained_run):
    run_dir, _ = trained_run
    files = RunDir(run_dir).live_map
    files.index.write_text('{"indices": [1, 2], "labels": [0]}')
    with pytest.raises(LiveMapError, match="index.json"):
        read_live_map(run_dir)
    view = LiveMapView()
    qtbot.addWidget(view)
    failures = []
    view.load_failed.connect(failures.append)
    view.set_run(run_dir)
    qtbot.waitUntil(lambda: bool(failures), timeout=5000)
    assert "index.json" in view.caption.text() and view.data is None

    shutil.rmtree(files.path)
    config = json.loads(RunDir(run_dir).config.read_text())
    RunDir(run_dir).config.write_text(json.dumps({**config, "live_map": "off"}))
    view.set_run(run_dir)
    qtbot.waitUntil(lambda: not view._loading, timeout=5000)
    assert "live_map setting is off" in view.caption.text()


def test_the_train_page_shows_the_runs_map_and_forgets_it_for_a_new_run(qtbot, trained_run,
                                                                       tmp_path):
    run_dir, _ = trained_run
    page = TrainPage(tmp_path / "runs")
    qtbot.addWidget(page)
    assert page.charts.widget(1) is page.live_map
    page._on_event({"v": 1, "type": "run_start", "time": 1.0, "run_dir": str(run_dir)})
    loaded(qtbot, page.live_map, 2)
    add_frame(run_dir, 3, np.zeros((24, 2)))
    page._on_event({"v": 1, "time": 2.0, **live_event(run_dir, 3, 9)})
    assert page.live_map.data.epochs == [1, 2, 3]
    page._forget_shown()  # a new run starts
    assert page.live_map.data is None and page.live_map.run_dir is None
    assert page.live_map.caption.text() == live_map_module.NO_RUN
    page.show_live_map(run_dir)  # a run opened from the runs list while the page is idle
    loaded(qtbot, page.live_map, 2)  # what index.json lists
    np.testing.assert_array_equal(shown(page.live_map), frame(run_dir, 2))
