"""What a person should conclude from a run's evaluations, in plain words (no Qt, no I/O).

The inputs are the saved results of the Probe page (the linear probe and kNN of a trained
checkpoint and of random init, each with its test-split size and majority-class share) and
the kNN accuracies the engine measured during training (the run's ``eval`` events). Two
accuracies count as different only when they differ by more than the noise of a test
split of that size: twice the binomial standard error of the difference of two accuracies
measured on the same n images, sqrt(2 p (1 - p) / n), with p their mean; a test split of
500 images at 95% gives about 2.8 points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

#: Standard errors two accuracies must differ by to count as different (about 95%).
Z = 2.0
#: The held-out share of the engine's kNN evaluations during training
#: (engine.evaluate.monitor.TEST_FRACTION).
MONITOR_TEST_FRACTION = 0.2
#: The margin when the test split's size is not known (results saved by older versions).
UNKNOWN_MARGIN = 0.02


@dataclass(frozen=True)
class TrainingKnn:
    """The kNN accuracy measured during training: the first, best and last evaluations."""

    first: float
    first_epoch: int
    best: float
    best_epoch: int
    last: float
    last_epoch: int
    count: int  # how many evaluations
    test: int  # held-out images of each evaluation (0: unknown)


@dataclass
class Verdict:
    """``kind``: "better", "same", "worse", "below-majority", "no-baseline" or "none";
    ``lines``: sentences to show, most important first."""

    kind: str
    lines: list[str] = field(default_factory=list)

    def text(self) -> str:
        return " ".join(self.lines)


def noise_margin(a: float, b: float, n: int) -> float:
    """How far apart (as a fraction) two accuracies on the same ``n`` test images must be
    to count as different; at least one image's worth, UNKNOWN_MARGIN when ``n`` is not
    known (0)."""
    if n <= 0:
        return UNKNOWN_MARGIN
    p = min(max((a + b) / 2, 0.0), 1.0)
    return max(Z * math.sqrt(2 * p * (1 - p) / n), 1 / n)


def points(x: float) -> str:
    return f"{100 * x:.1f}"


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _majority(result: dict[str, Any]) -> float | None:
    value = result.get("majority")
    return float(value) if isinstance(value, (int, float)) else None


def _test(result: dict[str, Any]) -> int:
    value = result.get("test")
    return int(value) if isinstance(value, (int, float)) and value > 0 else 0


def interpret(probe: dict[str, Any] | None, probe_random: dict[str, Any] | None = None,
              knn: dict[str, Any] | None = None, knn_random: dict[str, Any] | None = None,
              training: TrainingKnn | None = None) -> Verdict:
    """The conclusion from a trained checkpoint's linear probe (``probe``) against random
    init's (``probe_random``), with the kNN results and the training curve's kNN as
    supporting evidence. Any input may be missing."""
    main, baseline, name = ((probe, probe_random, "linear probe") if probe is not None
                            else (knn, knn_random, "kNN"))
    if main is None:
        lines = [_training_line(training)] if training is not None else []
        return Verdict("none", [line for line in lines if line])
    top1 = float(main["top1"])
    n = _test(main)
    majority = _majority(main)
    lines: list[str] = []
    if majority is not None and n and top1 <= majority + noise_margin(top1, majority, n) / 2:
        kind = "below-majority"
        lines.append(
            f"The {name} ({pct(top1)}) does no better than always answering the largest "
            f"class ({pct(majority)} of the {n} test images): the features carry no useful "
            "class information yet. Check that the class sub-folders hold what you expect, "
            "then train longer or with a larger image size.")
    elif baseline is None:
        kind = "no-baseline"
        above = f", {points(top1 - majority)} points above the majority class " \
                f"({pct(majority)})" if majority is not None else ""
        lines.append(f"The {name} scores {pct(top1)}{above}. Evaluate random init too to "
                     "see what training bought.")
    else:
        random_top1 = float(baseline["top1"])
        margin = noise_margin(top1, random_top1, n or _test(baseline))
        gain = top1 - random_top1
        noise = (f"of about ±{points(margin)} points on {n} test images" if n else
                 f"of about ±{points(margin)} points")
        if gain > margin:
            kind = "better"
            lines.append(f"The trained encoder beats random init by {points(gain)} points on "
                         f"the {name} ({pct(top1)} vs {pct(random_top1)}): training learned "
                         "features that separate these classes.")
        elif gain < -margin:
            kind = "worse"
            lines.append(
                f"Random init beats the trained encoder by {points(-gain)} points on the "
                f"{name} ({pct(random_top1)} vs {pct(top1)}): training made these classes "
                "harder to separate. The augmentations may remove what tells them apart "
                "(e.g. colour jitter when colour matters); try other augmentations, or "
                "train longer.")
        else:
            kind = "same"
            headroom = majority is not None and random_top1 - majority > 0.5 * (1 - majority)
            if headroom:
                lines.append(
                    f"An untrained network's features already separate these classes "
                    f"linearly ({pct(random_top1)}, majority class {pct(majority)}), so the "
                    f"{name} shows little gain from training ({pct(top1)}, within the noise "
                    f"{noise}).")
            else:
                lines.append(f"The trained encoder and random init score the same on the "
                             f"{name} ({pct(top1)} vs {pct(random_top1)}, within the noise "
                             f"{noise}): training has not changed the features much yet.")
    if name == "linear probe" and knn is not None and knn_random is not None:
        line = _knn_line(knn, knn_random)
        if line:
            lines.append(line)
    if training is not None:
        line = _training_line(training)
        if line:
            lines.append(line)
    if kind in ("same", "worse") or (training is not None and training.count < 3):
        lines.append("To see more: train longer, or at a larger image size.")
    return Verdict(kind, lines)


def _knn_line(knn: dict[str, Any], knn_random: dict[str, Any]) -> str:
    top1, random_top1 = float(knn["top1"]), float(knn_random["top1"])
    margin = noise_margin(top1, random_top1, _test(knn) or _test(knn_random))
    if top1 - random_top1 > margin:
        return (f"kNN also gains: {pct(top1)} vs {pct(random_top1)} for random init, so "
                "similar images now lie closer together.")
    if random_top1 - top1 > margin:
        return f"kNN is lower than for random init ({pct(top1)} vs {pct(random_top1)})."
    return f"kNN is about the same as for random init ({pct(top1)} vs {pct(random_top1)})."


def _training_line(t: TrainingKnn) -> str:
    if t.count < 2:
        return (f"kNN during training: {pct(t.last)} after epoch {t.last_epoch} (one "
                "evaluation so far).")
    margin = noise_margin(t.first, t.best, t.test)
    best = f" (best {pct(t.best)} after epoch {t.best_epoch})" if t.best > t.last else ""
    if t.best - t.first > margin:
        return (f"kNN improved from {pct(t.first)} to {pct(t.last)}{best} during training "
                f"(epochs {t.first_epoch}-{t.last_epoch}), which shows the encoder learned.")
    if t.first - t.last > margin:
        return (f"kNN fell from {pct(t.first)} to {pct(t.last)} during training (epochs "
                f"{t.first_epoch}-{t.last_epoch}): check the learning rate and augmentations.")
    return (f"kNN stayed near {pct(t.last)} during training (epochs {t.first_epoch}-"
            f"{t.last_epoch}, from {pct(t.first)}).")


def training_knn(evals: list[dict[str, Any]]) -> TrainingKnn | None:
    """The first, best and last of a run's ``eval`` events (dicts with "epoch",
    "knn_top1" and optionally "images"), in the order written; None without any."""
    good = [e for e in evals if isinstance(e.get("knn_top1"), (int, float))
            and isinstance(e.get("epoch"), int) and math.isfinite(e["knn_top1"])]
    if not good:
        return None
    # A resumed run may evaluate an epoch again: the later measurement counts.
    by_epoch: dict[int, dict[str, Any]] = {}
    for e in good:
        by_epoch[e["epoch"]] = e
    ordered = [by_epoch[k] for k in sorted(by_epoch)]
    best = max(ordered, key=lambda e: e["knn_top1"])
    images = ordered[-1].get("images")
    test = int(round(MONITOR_TEST_FRACTION * images)) if isinstance(images, (int, float)) else 0
    return TrainingKnn(first=float(ordered[0]["knn_top1"]), first_epoch=ordered[0]["epoch"],
                       best=float(best["knn_top1"]), best_epoch=best["epoch"],
                       last=float(ordered[-1]["knn_top1"]), last_epoch=ordered[-1]["epoch"],
                       count=len(ordered), test=test)
