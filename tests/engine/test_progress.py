"""Progress: the smoothed rate and time left, throttling, and every source of counts (kNN
blocks, curation blocks, UMAP epochs and placing, the probe's epochs) reporting done of
total, increasing to the end, and the terminal drawing them."""

import io
import json
import subprocess
import sys

import numpy as np
import pytest

from engine.cli.terminal import TerminalReport
from engine.evaluate import curate, knn
from engine.evaluate.maps import MapParams, umap_map
from engine.run import progress
from engine.run.progress import RateEstimate, about, rate_text, throttled


def recorded(fn, *args, **kwargs):
    """fn's result and the (phase, done, total, unit) it reported."""
    seen = []
    with progress.reporting(lambda *a: seen.append(a)):
        out = fn(*args, **kwargs)
    return out, seen


def counts_of(seen, phase):
    return [(d, t) for p, d, t, _ in seen if p == phase]


def assert_counts_up_to_the_total(pairs, total):
    assert pairs, "no progress reported"
    done = [d for d, _ in pairs]
    assert all(t == total for _, t in pairs)
    assert done == sorted(done) and done[-1] == total and len(set(done)) > 1


# --- the arithmetic -----------------------------------------------------------------------

def test_a_steady_rate_gives_the_exact_time_left_after_the_warm_up():
    est = RateEstimate(smoothing=10.0, warmup=3.0)
    for t in range(3):  # 0, 1, 2 s: under the warm-up, nothing is claimed
        est.update(100.0 + t, 50 * t, 1000)
        assert est.rate is None and est.left() is None
    est.update(103.0, 150, 1000)
    assert est.rate == pytest.approx(50.0)
    assert est.left() == pytest.approx((1000 - 150) / 50.0)
    assert est.left(now=105.0) == pytest.approx((1000 - 150) / 50.0 - 2.0)  # counts down
    assert est.left(now=1e9) == 0.0  # never negative


def test_the_rate_follows_the_recent_speed_not_the_average_since_the_start():
    est = RateEstimate(smoothing=5.0, warmup=3.0)
    done, t = 0, 0.0
    for _ in range(60):  # 60 s at 10 a second, then 30 s at 100 a second
        est.update(t, done, 100_000)
        t, done = t + 1.0, done + 10
    for _ in range(30):
        est.update(t, done, 100_000)
        t, done = t + 1.0, done + 100
    est.update(t, done, 100_000)
    average = done / t  # what "done / elapsed" would say: 40 a second
    assert est.rate == pytest.approx(100.0, rel=0.01)
    assert abs(est.rate - 100.0) < abs(average - 100.0) / 50
    assert est.left() == pytest.approx((100_000 - done) / est.rate)


def test_uneven_intervals_weigh_by_their_length():
    est = RateEstimate(smoothing=10.0, warmup=0.0)
    est.update(0.0, 0, 100)
    est.update(10.0, 100, 1000)  # 10 a second for 10 s
    est.update(10.1, 110, 1000)  # 100 a second for 0.1 s: a blip, weighed 1%
    assert 10.0 < est.rate < 11.0


def test_a_lower_count_starts_afresh():
    est = RateEstimate(warmup=1.0)
    est.update(0.0, 0, 10)
    est.update(5.0, 10, 10)
    assert est.rate == pytest.approx(2.0)
    est.update(6.0, 0, 10)  # a second pass of the same phase
    assert est.rate is None and est.elapsed(6.5) == pytest.approx(0.5)


def test_throttled_passes_firsts_and_lasts_and_limits_the_rest():
    now = [0.0]
    seen = []
    listen = throttled(lambda *a: seen.append(a), every=0.5, clock=lambda: now[0])
    for i in range(1, 11):  # ten reports 0.1 s apart
        listen("knn", i, 10, "images")
        now[0] += 0.1
    listen("probe", 1, 5, "epochs")  # a new phase always passes
    assert [s[1] for s in seen if s[0] == "knn"] == [1, 6, 10]
    assert seen[-1] == ("probe", 1, 5, "epochs")


def test_words_for_people():
    assert about(12) == "about 10 s" and about(2) == "about 5 s"
    assert about(130) == "about 2 min" and about(3 * 3600 + 600) == "about 3 h 10 min"
    assert rate_text(1234.4, "images") == "1,234 images/s"
    assert rate_text(3.25, "epochs") == "3.2 epochs/s"
    assert rate_text(0.25, "epochs") == "4.0 s/epoch"


def test_without_a_listener_reports_cost_nothing():
    progress.report("knn", 1, 2)  # no listener: no error, nothing kept


# --- the sources ----------------------------------------------------------------------------

def _unit_rows(n, d, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_knn_reports_its_query_blocks_and_gives_the_unblocked_answer(monkeypatch):
    x = _unit_rows(230, 8)
    y = np.arange(230) % 3
    train, test = x[:150], x[150:]
    monkeypatch.setattr(knn, "QUERY_BLOCK", 32)
    scores, seen = recorded(knn.knn_predict, train, y[:150], test, k=5, num_classes=3)
    assert_counts_up_to_the_total(counts_of(seen, "knn"), 80)
    assert {u for *_, u in seen} == {"images"}
    # brute force: the 5 most similar training rows vote exp(s / 0.07) for their class
    sims = test @ train.T
    reference = np.zeros((80, 3))
    for row in range(80):
        for j in np.argsort(-sims[row])[:5]:
            reference[row, y[j]] += np.exp(sims[row, j] / 0.07)
    np.testing.assert_allclose(scores, reference, rtol=1e-4)


def test_curation_reports_its_blocks():
    x = _unit_rows(50, 6)
    (idx, _), seen = recorded(curate.knn_blocked, x, 3, block=8)
    assert_counts_up_to_the_total(counts_of(seen, "neighbours"), 50)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    np.testing.assert_array_equal(idx[:, 0], sims.argmax(axis=1))
    _, seen = recorded(curate.similar_pairs, x, 0.9, block=8)
    assert_counts_up_to_the_total(counts_of(seen, "duplicates"), 50)
    chosen, seen = recorded(curate.farthest_point, x, 7)
    assert len(chosen) == 7 and counts_of(seen, "diverse")[-1] == (7, 7)


def test_umap_reports_its_layout_epochs_then_the_points_it_places():
    x = _unit_rows(240, 10)
    out, seen = recorded(umap_map, x, MapParams(fit_sample=160))
    assert out.shape == (240, 2) and np.isfinite(out).all()
    epochs = counts_of(seen, "map")
    total = epochs[0][1]
    assert total > 0 and epochs[0][0] == 0
    assert_counts_up_to_the_total(epochs, total)
    assert_counts_up_to_the_total(counts_of(seen, "place"), 80)
    assert {u for p, _, _, u in seen if p == "map"} == {"epochs"}


# --- the terminal ---------------------------------------------------------------------------

class FakeTty(io.StringIO):
    encoding = "utf-8"

    def isatty(self):
        return True


def test_the_terminal_bar_shows_the_unit_the_rate_and_time_left_of_a_phase():
    screen = FakeTty()
    report = TerminalReport(screen, width=120, tick=None, color=False)
    for t, done in ((0.0, 0), (1.0, 20), (2.0, 40), (4.0, 80)):
        report({"v": 1, "type": "progress", "time": 100.0 + t, "phase": "map", "done": done,
                "total": 200, "unit": "epochs"})
    bar = screen.getvalue().rsplit("\r", 1)[-1]
    assert bar.startswith("UMAP layout") and "80/200 epochs" in bar
    assert "20 epochs/s" in bar and "0:06 left" in bar
    report({"v": 1, "type": "progress", "time": 110.0, "phase": "map", "done": 200,
            "total": 200, "unit": "epochs"})
    report.close()
    assert "UMAP layout done: 200 epochs in 10 s" in screen.getvalue()


def test_the_terminal_hides_the_time_left_for_the_first_seconds():
    screen = FakeTty()
    report = TerminalReport(screen, width=120, tick=None, color=False)
    for t, done in ((0.0, 0), (1.0, 500)):
        report({"v": 1, "type": "progress", "time": 100.0 + t, "phase": "knn", "done": done,
                "total": 5000, "unit": "images"})
    bar = screen.getvalue().rsplit("\r", 1)[-1]
    assert "500/5,000 images" in bar and "left" not in bar and "/s" not in bar


# --- the CLI ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from engine.config.train_config import TrainConfig
    from engine.run.events import EventWriter
    from engine.training.loop import train
    from tests.helpers.folders import make_folder
    from tests.helpers.settings import TINY

    tmp = tmp_path_factory.mktemp("progress")
    folder = make_folder(tmp / "shapes")
    cfg = TrainConfig.from_dict({**TINY, "data": str(folder), "epochs": 1})
    result = train(cfg, runs_root=tmp / "runs", cache_dir=tmp / "cache",
                   events=EventWriter(None))
    assert result.status == "finished"
    return result.run_dir, tmp / "cache"


def _events(*args):
    out = subprocess.run([sys.executable, "-m", "engine", *map(str, args), "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_the_verbs_send_progress_events_of_each_phase(trained):
    run_dir, cache = trained
    events = _events("probe", "--run", run_dir, "--cache-dir", cache, "--epochs", "12")
    embed = [(e["done"], e["total"]) for e in events if e.get("phase") == "embed"]
    assert embed and embed[-1] == (24, 24)
    probe = [(e["done"], e["total"]) for e in events if e.get("phase") == "probe"]
    assert probe and probe[-1][0] == probe[-1][1] == 12
    assert all(e["unit"] == "epochs" for e in events if e.get("phase") == "probe")
    events = _events("knn", "--run", run_dir, "--cache-dir", cache, "-k", "3")
    assert [(e["done"], e["unit"]) for e in events if e.get("phase") == "knn"][-1] == (
        events[-1]["test"], "images")
    events = _events("outliers", "--run", run_dir, "--cache-dir", cache, "--diverse", "5")
    assert [e["done"] for e in events if e.get("phase") == "neighbours"][-1] == 24
    assert [e["done"] for e in events if e.get("phase") == "diverse"][-1] == 5


def test_writing_a_subset_counts_its_images(tmp_path):
    from engine.data.scan import scan_data
    from engine.evaluate.subset import write_subset
    from tests.helpers.folders import make_folder

    manifest = scan_data(make_folder(tmp_path / "shapes", per_class=5), verify=False)
    result, seen = recorded(write_subset, manifest, [0, 2, 4, 6, 8, 9], tmp_path / "out",
                            "copy")
    assert result["images"] == 6
    assert_counts_up_to_the_total(counts_of(seen, "subset"), 6)
    assert len([p for p in (tmp_path / "out").rglob("*") if p.is_file()]) == 6
