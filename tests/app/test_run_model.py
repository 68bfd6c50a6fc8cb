"""The app's plain-Python model of runs: curves from events, replay, the runs list."""

import json
import math

import pytest

from app.model.run_model import EVENT_FIELDS, RunHistory, event_problems, list_runs
from engine.run import schema


def step(n, loss, rate=10.0):
    return {"v": 1, "type": "step", "step": n, "epoch": 0, "loss": loss, "lr": 0.1,
            "pairs_per_s": rate, "positive_pair_similarity": 0.5, "embedding_std": 0.9}


def test_curves_progress_and_eta():
    h = RunHistory(smoothing=0.5)
    h.add({"type": "run_start", "total_steps": 10, "steps_per_epoch": 5,
           "config": {"batch_size": 20}})
    for n, loss in [(1, 4.0), (2, 2.0), (3, None)]:
        h.add(step(n, loss))
    assert h.steps == [1, 2, 3]
    assert h.curves["loss"][:2] == [4.0, 2.0] and math.isnan(h.curves["loss"][2])
    assert h.smoothed_loss[:2] == [4.0, 3.0]
    assert h.progress == pytest.approx(0.3)
    assert h.eta_seconds() == pytest.approx(7 / (10.0 / 20))  # 7 steps at 0.5 steps/s
    h.add({"type": "something_new", "x": 1})  # a newer engine's event type
    h.add({"type": "run_end", "status": "stopped", "reason": "stop requested"})
    assert h.unknown_events == 1 and h.status == "stopped"


def test_the_fields_the_app_checks_are_the_engines_schema():
    assert set(EVENT_FIELDS) == set(schema.EVENTS)
    for name, described in schema.EVENTS.items():
        assert list(EVENT_FIELDS[name]) == [f.name for f in described.fields]
    assert EVENT_FIELDS["step"]["loss"] == ("a number", True)
    assert EVENT_FIELDS["step"]["lr"] == ("a number", False)
    assert EVENT_FIELDS["run_start"]["resumed"] == ("true/false", False)
    assert event_problems({"type": "run_start", "run_dir": "r", "resumed": "no"}) == [
        "run_start event: resumed is text, not true/false"]
    # Unknown fields and types are a newer engine's, which the app ignores.
    assert event_problems({"type": "step", "step": 1, "loss": 1.0, "grad_norm": "x"}) == []
    assert event_problems({"type": "histogram", "bins": "x"}) == []


def test_replay_skips_truncated_lines_and_marks_interrupted_runs(tmp_path):
    events = tmp_path / "events.jsonl"
    lines = [json.dumps({"type": "run_start", "total_steps": 4}), json.dumps(step(1, 3.0)),
             "{not json", json.dumps(step(2, 2.5))[:20]]
    events.write_text("\n".join(lines))
    h = RunHistory.replay(events)
    assert h.steps == [1] and h.status == "interrupted"


def test_runs_list_reads_every_run_and_reports_damage(tmp_path):
    good = tmp_path / "20261124-100000-simclr-birds"
    good.mkdir()
    (good / "config.json").write_text(json.dumps({"method": "simclr", "data": "/x/birds"}))
    (good / "events.jsonl").write_text(json.dumps(step(5, 1.5)) + "\n" + json.dumps(
        {"type": "run_end", "status": "finished", "reason": ""}) + "\n")
    bad = tmp_path / "20261124-110000-moco-cats"
    bad.mkdir()
    (bad / "config.json").write_text("{truncated")
    (tmp_path / "not-a-run").mkdir()
    runs = list_runs(tmp_path)
    assert [r.name for r in runs] == [bad.name, good.name]
    assert runs[0].status == "unreadable" and "config.json" in runs[0].problem
    assert (runs[1].method, runs[1].dataset, runs[1].status, runs[1].steps) == (
        "simclr", "birds", "finished", 5)
    assert list_runs(tmp_path / "missing") == []


def test_a_run_stopped_between_logged_steps_is_where_its_checkpoint_is(tmp_path):
    from app.model.run_model import window_words

    h = RunHistory()
    h.add({"type": "run_start", "total_steps": 82, "config": {"batch_size": 8}})
    h.add(step(50, 1.5))
    assert h.position == 50
    h.add({"type": "checkpoint", "path": "checkpoints/last.pt", "epoch": 1, "step": 57})
    assert h.position == 57 and h.progress == pytest.approx(57 / 82)
    reason = "stop requested; checkpoint saved, --resume to go on"
    assert window_words(reason) == "stop requested; checkpoint saved, press Resume to go on"
    assert window_words("lower --batch-size to at most 24") == "lower batch size to at most 24"
    run = tmp_path / "20261124-100000-simclr-birds"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"x")
    (run / "config.json").write_text(json.dumps({"method": "simclr", "data": "/x/birds"}))
    events = [{"type": "run_start", "total_steps": 82}, step(50, 1.5),
              {"type": "checkpoint", "path": str(run / "checkpoints" / "last.pt"), "epoch": 1,
               "step": 57}, {"type": "run_end", "status": "stopped", "reason": reason}]
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    (summary,) = list_runs(tmp_path)
    assert (summary.steps, summary.total_steps, summary.checkpoint) == (57, 82,
                                                                        "checkpoint saved")
    # A crash after steps past the checkpoint: resuming goes back to it, so it is said.
    events.insert(3, step(60, 1.4))
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    (summary,) = list_runs(tmp_path)
    assert (summary.steps, summary.checkpoint) == (
        60, "resumes from step 57 (the last checkpoint)")
