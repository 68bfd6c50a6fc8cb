"""The time estimate before a run, and the CPU's choice of epochs for a first run."""

import json

import pytest

from app.model.estimate import (
    Speed,
    first_run_epochs,
    load_bench,
    run_seconds,
    save_bench,
    speed_from_bench,
    speed_from_runs,
    total_steps,
)
from app.model.run_model import RunHistory

SETTINGS = {"method": "simclr", "backbone": "resnet18", "image_size": 32, "batch_size": 64,
            "epochs": 100, "max_steps": None}


def test_the_estimate_counts_steps_as_the_engine_and_agrees_with_the_eta():
    assert total_steps(2624, 64, 100, None) == 100 * 41
    assert total_steps(2624, 64, 100, 50) == 50
    speed = Speed(20.0, "test")
    seconds = run_seconds(2624, SETTINGS, speed)
    assert seconds == pytest.approx(4100 * 64 / 20)  # about 3.6 h: too long for a first run
    # The ETA during the run, at the same speed, says the same.
    history = RunHistory()
    history.add({"type": "run_start", "total_steps": 4100, "config": {"batch_size": 64}})
    history.add({"type": "step", "step": 1, "loss": 5.0, "pairs_per_s": 20.0})
    assert history.eta_seconds() == pytest.approx(seconds * 4099 / 4100)
    epochs = first_run_epochs(2624, speed, minutes=10)
    assert epochs == 4 and run_seconds(2624, {**SETTINGS, "epochs": epochs}, speed) <= 600
    assert first_run_epochs(10, speed) == 100 and first_run_epochs(10**7, speed) == 1


def test_speeds_come_from_earlier_runs_here_then_the_bench(tmp_path):
    run = tmp_path / "20261201-100000-simclr-birds"
    run.mkdir()
    events = [{"type": "run_start", "config": SETTINGS, "device": {"name": "cpu-x"}}] + [
        {"type": "step", "step": i, "loss": 1.0, "pairs_per_s": rate}
        for i, rate in enumerate([30.0, 31.0, 29.0], 1)]
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    speed = speed_from_runs(tmp_path, "cpu-x", SETTINGS)
    assert speed.pairs_per_s == 30.0 and run.name in speed.source
    assert speed_from_runs(tmp_path, "another machine", SETTINGS) is None
    assert speed_from_runs(tmp_path, "cpu-x", {**SETTINGS, "batch_size": 32}) is None
    bench = [{"backbone": "resnet18", "image_size": 32, "batch_size": 64, "pairs_per_s": 24.0,
              "method": "simclr"},
             {"backbone": "resnet18", "image_size": 64, "batch_size": 32, "pairs_per_s": 6.0,
              "method": "simclr"}]
    save_bench(tmp_path / "speed.json", "cpu-x", bench)
    assert load_bench(tmp_path / "speed.json", "cpu-x") == bench
    assert load_bench(tmp_path / "speed.json", "other") == []
    assert speed_from_bench(bench, SETTINGS).pairs_per_s == 24.0
    scaled = speed_from_bench(bench, {**SETTINGS, "image_size": 48})
    assert scaled.pairs_per_s == pytest.approx(24.0 * (32 / 48) ** 2)  # nearest: 32 px
    assert "scaled to 48 px" in scaled.source
    assert speed_from_bench(bench, {**SETTINGS, "backbone": "resnet50"}) is None


def test_the_train_page_chooses_cpu_epochs_until_a_person_does(qtbot, tmp_path, monkeypatch):
    pytest.importorskip("PySide6")
    from app.pages.train_page import TrainPage
    from app.widgets import run_estimate
    from engine.config.resolve import DeviceInfo

    page = TrainPage(tmp_path / "runs", tmp_path / "cache")
    qtbot.addWidget(page)
    monkeypatch.setattr(page.estimate, "device",
                        lambda requested="auto": DeviceInfo("cpu", "cpu-x", None, False))
    save_bench(page.estimate.bench_file, "cpu-x", [
        {"backbone": "resnet18", "image_size": 32, "batch_size": 64, "pairs_per_s": 20.0,
         "method": "simclr"}])
    folder = tmp_path / "birds"
    folder.mkdir()
    page.set_folder(folder)
    assert "open the folder" in page.estimate.label.text()
    page.set_folder_counts(folder, 2624, 2)
    assert page.status.text() == "Ready: 2,624 images in 2 classes; press Start."
    assert page.form.values().epochs == 4
    text = page.estimate.label.text()
    assert "Estimated time: about 9 min for 4 epochs (164 steps) at 20 pairs/s" in text
    assert "epochs 4: chosen for this CPU so that a first run takes minutes (100 epochs " \
        "would take about 3 h 38 min)" in text
    page.form.set_value("epochs", "2")  # a person's choice is kept
    page.set_folder_counts(folder, 5000, 2)
    assert page.form.values().epochs == 2 and "for 2 epochs" in page.estimate.label.text()
    assert run_estimate.BENCH_SECONDS > 0


def test_settings_the_engine_would_refuse_are_said_in_window_words(qtbot, tmp_path):
    pytest.importorskip("PySide6")
    from app.pages.train_page import TrainPage

    page = TrainPage(tmp_path / "runs", tmp_path / "cache")
    qtbot.addWidget(page)
    page.set_folder(tmp_path)
    page.form.set_value("batch_size", "64")
    page.set_folder_counts(tmp_path, 24, 2)
    text = page.estimate.label.text()
    assert "the engine would refuse these settings: batch_size 64 is larger" in text
    assert "--" not in text
