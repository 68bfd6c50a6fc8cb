"""The plain-words conclusion of the Probe page, over its cases."""

import pytest

from app.model.probe_verdict import (
    MONITOR_TEST_FRACTION,
    UNKNOWN_MARGIN,
    interpret,
    noise_margin,
    training_knn,
)


def result(top1, test=525, majority=0.59):
    return {"top1": top1, "test": test, "majority": majority}


def evals(*accuracies, images=2624):
    return [{"type": "eval", "epoch": i + 1, "step": 41 * (i + 1), "knn_top1": a,
             "images": images} for i, a in enumerate(accuracies)]


def test_the_noise_margin_follows_the_test_split_size():
    # 525 images at 95%: 2 x sqrt(2 x 0.95 x 0.05 / 525) = 2.7 points
    assert noise_margin(0.947, 0.954, 525) == pytest.approx(0.027, abs=0.001)
    assert noise_margin(0.947, 0.954, 5250) < noise_margin(0.947, 0.954, 525)
    assert noise_margin(1.0, 1.0, 50) == pytest.approx(1 / 50)  # at least one image
    assert noise_margin(0.5, 0.5, 0) == UNKNOWN_MARGIN


def test_within_noise_with_a_strong_random_init_says_the_task_is_easy():
    verdict = interpret(result(0.947), result(0.954), result(0.872), result(0.80),
                        training_knn(evals(0.806, 0.85, 0.872)))
    assert verdict.kind == "same"
    text = verdict.text()
    assert "already separate these classes linearly (95.4%" in text
    assert "kNN improved from 80.6% to 87.2% during training" in text
    assert "kNN also gains: 87.2% vs 80.0%" in text
    assert "train longer, or at a larger image size" in text


def test_within_noise_without_headroom():
    verdict = interpret(result(0.65), result(0.66))
    assert verdict.kind == "same" and "has not changed the features much" in verdict.text()


def test_a_clear_gain_is_reported_in_points():
    verdict = interpret(result(0.90), result(0.75))
    assert verdict.kind == "better"
    assert verdict.lines[0].startswith("The trained encoder beats random init by 15.0 points")
    assert "train longer" not in verdict.text()


def test_a_clear_loss_is_reported_with_what_to_try():
    verdict = interpret(result(0.70), result(0.85))
    assert verdict.kind == "worse"
    assert "Random init beats the trained encoder by 15.0 points" in verdict.text()
    assert "augmentations" in verdict.text()


def test_at_or_below_the_majority_class_the_probe_learned_nothing():
    for top1 in (0.50, 0.59, 0.595):
        verdict = interpret(result(top1), result(0.58))
        assert verdict.kind == "below-majority", top1
        assert "always answering the largest class (59.0%" in verdict.text()
        assert "Check that the class sub-folders" in verdict.text()


def test_without_a_baseline_or_any_result():
    verdict = interpret(result(0.8))
    assert verdict.kind == "no-baseline" and "21.0 points above the majority" in verdict.text()
    knn_only = interpret(None, None, result(0.8), result(0.6))
    assert knn_only.kind == "better" and "on the kNN" in knn_only.text()
    assert interpret(None).kind == "none" and interpret(None).lines == []
    assert "80.0% after epoch 1" in interpret(None, training=training_knn(evals(0.8))).text()


def test_training_knn_reads_first_best_and_last():
    t = training_knn(evals(0.6, 0.9, 0.8) + [{"type": "eval", "epoch": 2, "knn_top1": None}])
    assert (t.first, t.best, t.best_epoch, t.last, t.count) == (0.6, 0.9, 2, 0.8, 3)
    assert t.test == round(MONITOR_TEST_FRACTION * 2624)
    resumed = training_knn(evals(0.6, 0.7) + [{"epoch": 2, "knn_top1": 0.75}])
    assert resumed.count == 2 and resumed.last == 0.75  # the later measurement counts
    assert training_knn([]) is None
    assert "fell from 90.0% to 70.0%" in interpret(result(0.9), training=training_knn(
        evals(0.9, 0.7))).text()
    assert "stayed near 80.5%" in interpret(result(0.9), training=training_knn(
        evals(0.80, 0.805))).text()
    assert "(best 90.0% after epoch 2)" in interpret(result(0.9), training=t).text()


def test_the_monitor_fraction_matches_the_engine():
    from engine.evaluate.monitor import TEST_FRACTION

    assert MONITOR_TEST_FRACTION == TEST_FRACTION
