"""A bad event stream loses nothing: every bad event is reported once and never fatal, and a
child that ends without run_end is shown as crashed."""

import math

import pytest

pytest.importorskip("PySide6")


from app.child import engine_process
from app.child.engine_process import EngineProcess
from app.model.run_model import RunHistory, event_problems
from app.pages.train_page import TrainPage
from tests.helpers.windows import fake

# --- 1. the event stream ------------------------------------------------------------------

def test_event_problems_name_the_field_and_what_is_wrong():
    assert event_problems({"type": "step", "step": 3, "loss": 1.5, "lr": None}) == []
    assert event_problems({"type": "step", "step": 3}) == ["step event: loss is missing"]
    assert event_problems({"type": "step", "step": "3", "loss": "low", "lr": True}) == [
        "step event: step is text, not an integer", "step event: loss is text, not a number",
        "step event: lr is true/false, not a number"]
    assert event_problems({"type": "run_start", "run_dir": 5, "config": []}) == [
        "run_start event: run_dir is an integer, not text",
        "run_start event: config is a list, not an object"]
    assert event_problems({"type": "from_the_future", "x": "anything"}) == []


def test_a_history_keeps_what_is_usable_of_bad_events():
    history = RunHistory()
    for event in [
            {"type": "run_start", "run_dir": "r", "total_steps": "ten", "config": "no",
             "dataset": {"classes": 3}},
            {"type": "step", "step": 1, "loss": 2.0, "lr": 0.1},
            {"type": "step", "step": 2, "lr": 0.2},  # no loss
            {"type": "step", "step": "3", "loss": 1.0},  # no usable step number
            {"type": "step", "step": 4, "loss": "1.5", "lr": "fast"},
            {"type": "step", "step": 5, "loss": 1.0, "lr": 0.1},
            {"type": "epoch_end", "epoch": 0, "loss": "x"},
            {"type": "eval", "step": 5, "knn_top1": "high"},
            {"type": "run_end", "status": 7}]:
        history.add(event)
    assert history.steps == [1, 2, 4, 5]
    loss = history.curves["loss"]
    assert loss[0] == 2.0 and math.isnan(loss[1]) and math.isnan(loss[2]) and loss[3] == 1.0
    assert all(math.isfinite(v) for v in history.smoothed_loss)  # no gap in the smoothed
    assert math.isnan(history.curves["lr"][2])
    assert history.total_steps is None and history.config == {} and not history.has_labels
    assert history.progress is None and history.eta_seconds() is None
    assert history.epoch_losses[0][0] == 0 and math.isnan(history.epoch_losses[0][1])
    assert history.knn == [] and history.status == "failed"
    assert history.bad_events == 7 and history.unknown_events == 0


SILENT_TRAINER = r"""
import json, sys
def say(**e):
    print(json.dumps({"v": 1, **e}), flush=True)
say(type="run_start", run_dir="nowhere", total_steps=10)
say(type="step", step=1, loss=2.0)
sys.stderr.write("step 1/10 loss 2.0\n")
sys.exit(CODE)
"""


@pytest.mark.parametrize("code", [0, 5])
def test_a_trainer_that_ends_without_run_end_crashed(qtbot, monkeypatch, code):
    monkeypatch.setattr(engine_process, "engine_command",
                        fake(SILENT_TRAINER.replace("CODE", str(code))))
    child = EngineProcess()
    with qtbot.waitSignal(child.ended, timeout=30_000) as ended:
        child.start(["train", "--data", "x"])
    status, exit_code, reason = ended.args
    assert (status, exit_code) == ("crashed", code)
    assert ("without reporting how the run ended" if code == 0
            else "exited with code 5 without finishing") in reason
    assert "last message: step 1/10 loss 2.0" in reason


GARBLED_TRAINER = r"""
import json, sys
def say(**e):
    print(json.dumps({"v": 1, **e}), flush=True)
say(type="run_start", run_dir=sys.argv[sys.argv.index("--runs-root") + 1] + "/garbled",
    total_steps=10, steps_per_epoch=5,
    config={"batch_size": 8}, dataset={"summary": "24 images"}, device={"name": "cpu"})
for i in range(3):  # a newer engine's event type, several times
    print(json.dumps({"v": 2, "type": "gradient_histogram", "bins": [1, 2]}), flush=True)
say(type="step", step=1, loss=2.0, lr=0.1, pairs_per_s=40.0, embedding_std=0.5)
say(type="step", step=2, lr=0.1)
say(type="step", step=3, loss="abc", lr="fast")
say(type="step", step="four", loss=1.0)
say(type="step", step=5, loss=1.5, lr=0.1, pairs_per_s=40.0, embedding_std=0.5)
say(type="step", step=6, lr=0.1)
say(type="eval", epoch=1, step=5)
say(type="eval", epoch=1, step=5, knn_top1="high", seconds="slow")
say(type="epoch_end", epoch=0, step=5, loss="x")
say(type="progress", phase=3, done="a")
say(type="warning", message=5)
sys.stderr.write("Traceback (most recent call last):\nRuntimeError: boom\n")
sys.exit(0)
"""


def test_the_train_page_survives_a_garbled_event_stream(qtbot, monkeypatch, tmp_path):
    monkeypatch.setattr(engine_process, "engine_command", fake(GARBLED_TRAINER))
    page = TrainPage(tmp_path / "runs")
    qtbot.addWidget(page)
    page.set_folder(tmp_path)
    with qtbot.waitSignal(page.engine.ended, timeout=30_000) as ended:
        page.start()
    assert ended.args[0] == "crashed"
    log = page.log.toPlainText()
    assert log.count("'gradient_histogram' are unknown to this version") == 1
    assert log.count("schema version 2") == 1
    assert log.count("step event: loss is missing") == 1  # steps 2 and 6: said once
    assert "step event: loss is text, not a number" in log
    assert "step event: step is text, not an integer" in log
    assert "eval event: knn_top1 is missing" in log
    assert "epoch_end event: loss is text" in log
    assert "RuntimeError: boom" in log
    history = page.history
    assert history.steps == [1, 2, 3, 5, 6] and history.unknown_events == 3
    page.curves.redraw_all()
    x, y = page.curves.curves["loss"].getData()
    assert list(x) == [1, 2, 3, 5, 6] and y[0] == 2.0 and y[3] == 1.5
    _, smoothed = page.curves.curves["smoothed"].getData()
    assert all(math.isfinite(v) for v in smoothed)
    assert history.status == "crashed"
    assert "Run crashed" in page.status.text()
    assert "without reporting how the run ended" in page.status.text()
    assert "RuntimeError: boom" in page.failure_box.detailedText()
    assert page.start_button.isEnabled() and not page.stop_button.isEnabled()
    page.failure_box.close()


