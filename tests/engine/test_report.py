"""What the training loop reports per step: which steps are logged and the pairs/s rate."""

import time

import torch

from engine.training import report
from engine.training.report import StepMeter, log_due


def test_the_first_steps_are_logged_then_every_log_every():
    logged = [s for s in range(1, 41) if log_due(s, 0, 10)]
    assert logged == [1, 2, 5, 10, 20, 30, 40]
    # after a resume at step 57 the curve gets points soon too
    assert [s for s in range(58, 81) if log_due(s, 57, 10)] == [58, 59, 60, 62, 70, 80]
    assert [s for s in range(1, 5) if log_due(s, 0, 1)] == [1, 2, 3, 4]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_paused_time_is_left_out_of_the_rate(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(report.time, "perf_counter", clock)
    meter = StepMeter(torch.device("cpu"), batch_size=20)
    out = type("Out", (), {"loss": torch.tensor(1.0)})()
    for _ in range(5):  # 5 steps of 1 s: 100 pairs in 5 s
        clock.now += 1.0
        meter.add(out)
    with meter.paused():  # a checkpoint and the kNN evaluation: 30 s
        clock.now += 30.0
    assert meter.pairs_per_s() == 20.0  # not 100 / 35
    clock.now += 2.0
    meter.add(out)
    assert meter.pairs_per_s() == 10.0  # the window restarts at the last reading
    with meter.paused():
        raise_inside = False
        try:
            clock.now += 5.0
            raise RuntimeError("disk full")
        except RuntimeError:
            raise_inside = True
    assert raise_inside
    clock.now += 1.0
    meter.add(out)
    assert meter.pairs_per_s() == 20.0


def test_the_real_clock_still_measures(monkeypatch):
    meter = StepMeter(torch.device("cpu"), batch_size=4)
    meter.add(type("Out", (), {"loss": torch.tensor(1.0)})())
    time.sleep(0.01)
    assert 0 < meter.pairs_per_s() < 4 / 0.01


def test_a_run_logs_its_first_steps_and_its_rate_leaves_out_evaluation(tmp_path, monkeypatch):
    from engine.evaluate.monitor import KnnMonitor
    from tests.helpers.folders import make_folder
    from tests.helpers.training import events_of, run

    embed = KnnMonitor.embed
    skipped = [0.0]  # seconds the meter's clock jumps at each evaluation

    class Clock:
        @staticmethod
        def perf_counter():
            return time.perf_counter() + skipped[0]

    def slow_embed(self, encoder):  # an evaluation that takes 1000 s on the meter's clock
        skipped[0] += 1000.0
        return embed(self, encoder)

    monkeypatch.setattr(report, "time", Clock)
    monkeypatch.setattr(KnnMonitor, "embed", slow_embed)
    folder = make_folder(tmp_path / "shapes")
    result = run({"data": str(folder), "epochs": 3, "log_every": 4, "knn_every": 1},
                 tmp_path)
    assert result.status == "finished", result.reason
    events = events_of(result.run_dir)
    steps = {e["step"]: e["pairs_per_s"] for e in events if e["type"] == "step"}
    # 3 steps an epoch: 1, 2 and 5 early, every 4th, and each epoch's last
    assert sorted(steps) == [1, 2, 3, 4, 5, 6, 8, 9]
    assert sum(1 for e in events if e["type"] == "eval") == 3
    # Step 4 comes right after epoch 1's checkpoint and its 1000 s evaluation: its rate
    # is that of training (8 pairs in well under 100 s), not 8 pairs / 1000 s.
    assert skipped[0] == 3000.0
    assert all(rate > 8 / 100 for rate in steps.values()), steps
