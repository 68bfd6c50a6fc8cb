"""`contrastive-engine plan`: the cache, decoding, epoch and budget arithmetic of a plan,
against the figures it reports (its timed speed) and the folder itself."""

import json
import math
import subprocess
import sys

import pytest

from engine.config.train_config import ConfigError, TrainConfig
from engine.training import plan as plan_mod
from engine.training.plan import candidates, parse_duration, plan_run, plan_text
from tests.helpers.folders import make_folder
from tests.helpers.settings import TINY


@pytest.mark.parametrize("text,seconds", [("1h", 3600), ("90m", 5400), ("1h30m", 5400),
                                          ("45s", 45), ("2.5h", 9000), ("10", 600),
                                          ("20 min", 1200)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "1x", "0m", "1h soon"])
def test_bad_durations_say_how_to_write_one(text):
    with pytest.raises(ConfigError, match="1h, 90m|positive"):
        parse_duration(text)


def test_candidates_keep_what_was_given():
    cfg = TrainConfig.from_dict({"data": "."})
    assert candidates(cfg, "cpu", ("resnet18", 32), 40)[:2] == [("resnet18", 32),
                                                                ("resnet50", 32)] or \
        candidates(cfg, "cpu", ("resnet18", 32), 40)[0] == ("resnet18", 32)
    # images of 40 px: no 64 or 96 px candidates
    assert all(s <= 40 for _, s in candidates(cfg, "cpu", ("resnet18", 32), 40))
    fixed = TrainConfig.from_dict({"data": ".", "image_size": 24})
    assert {s for _, s in candidates(fixed, "cpu", ("resnet18", 24), 200)} == {24}
    both = TrainConfig.from_dict({"data": ".", "image_size": 24, "backbone": "resnet18"})
    assert candidates(both, "cpu", ("resnet18", 24), 200) == [("resnet18", 24)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("plan") / "shapes", per_class=12)


def test_plan_figures_follow_from_what_it_measured(folder, tmp_path, monkeypatch):
    monkeypatch.setattr(plan_mod, "CANDIDATES", {"cpu": [("resnet18", 16), ("resnet18", 24)],
                                                 "cuda": [("resnet18", 16)]})
    values = {**TINY, "data": str(folder), "epochs": 3}
    values.pop("image_size")
    values.pop("cache_size")
    cfg = TrainConfig.from_dict(values)
    budget = 3600.0
    r = plan_run(cfg, cache_dir=tmp_path / "cache", budget_s=budget, seconds=3)
    n, batch = r["images"], r["settings"]["batch_size"]
    assert n == 24 and r["classes"] == 2
    side = r["cache"]["size"]
    assert r["cache"]["bytes"] == n * side * side * 3 and r["cache"]["fits"]
    assert not r["cache"]["reuse"] and r["cache"]["free"] > 0
    assert r["epoch_seconds"] == pytest.approx((n // batch) * batch / r["speed"]["pairs_per_s"],
                                               rel=1e-3, abs=0.1)
    assert r["run_seconds"] == pytest.approx(
        r["cache"]["decode_seconds"] + 3 * r["epoch_seconds"], rel=1e-3, abs=0.2)
    assert r["memory"]["peak_rss_gb"] > 0.05

    b = r["budget"]
    assert [(o["backbone"], o["image_size"]) for o in b["options"]][0] == (
        r["settings"]["backbone"], r["settings"]["image_size"])
    for o in b["options"]:  # the epochs that fit, from each option's own figures
        assert o["epochs"] == int((budget - o["decode_seconds"]) // o["epoch_seconds"])
    enough = [o for o in b["options"] if o["epochs"] >= plan_mod.ENOUGH_EPOCHS]
    pick = b["choice"]
    if enough:
        best = max(enough, key=lambda o: (o["gflops_per_pair"], o["image_size"]))
        assert (pick["backbone"], pick["image_size"]) == (best["backbone"], best["image_size"])
    assert set(b["reasons"]) == {"method", "backbone", "image_size", "batch_size", "epochs"}
    text = plan_text(r)
    assert "24 images in 2 classes" in text and "--epochs" in text


def test_a_budget_too_short_for_an_epoch_says_what_to_do(folder, tmp_path, monkeypatch):
    monkeypatch.setattr(plan_mod, "CANDIDATES", {"cpu": [("resnet18", 16)],
                                                 "cuda": [("resnet18", 16)]})
    cfg = TrainConfig.from_dict({**TINY, "data": str(folder)})
    r = plan_run(cfg, cache_dir=tmp_path / "cache", budget_s=0.001, seconds=1)
    assert r["budget"]["choice"]["epochs"] == 0
    assert "does not fit" in r["budget"]["reasons"]["epochs"]
    assert "subset" in r["budget"]["reasons"]["epochs"]
    assert math.isfinite(r["epoch_seconds"])


def test_plan_verb_json(folder, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "engine", "plan", "--data", str(folder), "--backbone",
         "resnet18", "--image-size", "16", "--batch-size", "8", "--seconds", "1",
         "--num-threads", "2", "--cache-dir", str(tmp_path / "cache"), "--json"],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["type"] == "result" and result["images"] == 24
    assert result["settings"]["image_size"] == 16 and result["speed"]["pairs_per_s"] > 0
    missing = subprocess.run([sys.executable, "-m", "engine", "plan", "--data",
                              str(tmp_path / "nowhere")], capture_output=True, text=True,
                             timeout=120)
    assert missing.returncode == 2 and "nowhere" in missing.stderr
