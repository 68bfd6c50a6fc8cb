"""The linear evaluation protocol: one linear layer trained on frozen features.

SimCLR (Chen et al., 2020) and MoCo (He et al., 2020) judge a representation by the
accuracy of a linear classifier trained on top of the frozen encoder. Here the features are
already computed, so the classifier is an L2-regularised multinomial logistic regression:

    minimise  mean cross-entropy(W x + b, y)  +  weight_decay / 2 * ||W||^2

on the features standardised with the training split's mean and standard deviation.

Solver: full-batch L-BFGS by default, as SimCLR does for its linear transfer evaluation on
frozen features (appendix B.8: "L2-regularized multinomial logistic regression ... optimized
with L-BFGS", following Kornblith et al., 2019). For the sizes a folder gives (up to ~100k
images) it converges in tens of iterations, it has no learning rate or batch size to tune
and it is deterministic, so two probes of the same features agree exactly. ``solver="sgd"``
is mini-batch SGD with Nesterov momentum and a cosine schedule, closer to SimCLR's ImageNet
protocol (which also trains with augmentation; frozen, pre-computed features cannot).

``label_fraction`` keeps that fraction of each class's training images (at least one), as
in SimCLR's semi-supervised table (1% and 10% of the labels); the test split is the same
whatever the fraction, so the numbers are comparable.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from engine.config.settings import setting, validate
from engine.evaluate.knn import check_labels, majority_share, stratified_split, topk_accuracy

SOLVERS = ("lbfgs", "sgd")


@dataclass
class ProbeParams:
    """Settings of a linear probe; validated on construction (ConfigError, a ValueError)."""

    solver: str = setting(
        "lbfgs", "Optimiser: full-batch L-BFGS (deterministic, no tuning) or mini-batch SGD.",
        choices=SOLVERS)
    epochs: int = setting(
        100, "L-BFGS: most iterations (each a pass over the training split, plus line "
        "search); SGD: passes over the training split.", min=1, max=100000)
    lr: float | None = setting(
        None, "Learning rate.", min=0.0, max=100.0, min_exclusive=True,
        auto="1 for L-BFGS (its line search scales each step), 0.1 for SGD")
    weight_decay: float = setting(
        1e-4, "L2 penalty on the weights (weight_decay / 2 x ||W||^2 is added to the loss).",
        min=0.0, max=10.0)
    batch_size: int = setting(256, "SGD: images per step.", min=1, max=10**7)
    label_fraction: float = setting(
        1.0, "Fraction of each class's training images whose labels are used (at least one "
        "per class), e.g. 0.01 or 0.1 as in SimCLR's semi-supervised results.",
        min=0.0, max=1.0, min_exclusive=True)
    test_fraction: float = setting(
        0.2, "Fraction of each class's images held out for testing.", min=0.0, max=0.9,
        min_exclusive=True)
    seed: int = setting(0, "Random seed of the split, the label subset and SGD's order.",
                        min=0, max=2**63 - 1)

    def __post_init__(self) -> None:
        validate(self)

    def resolved_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        return 1.0 if self.solver == "lbfgs" else 0.1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def subsample_labels(train: np.ndarray, labels: np.ndarray, fraction: float,
                     seed: int) -> np.ndarray:
    """The training indices whose labels are used: round(n_c x fraction) of each class c,
    but at least one, drawn at random (seeded). Sorted."""
    if fraction >= 1.0:
        return train
    # A stream separate from the split's, so the split is the same for every fraction.
    rng = np.random.default_rng([seed, 1])
    kept = []
    for c in np.unique(labels[train]):
        members = train[labels[train] == c]
        n_keep = max(1, round(len(members) * fraction))
        kept.append(rng.choice(members, size=n_keep, replace=False))
    return np.sort(np.concatenate(kept))


def standardise(reference: np.ndarray, *arrays: np.ndarray) -> list[np.ndarray]:
    """``arrays`` standardised (float32) with the per-feature mean and standard deviation of
    ``reference``. Constant features are only centred."""
    mean = reference.mean(axis=0, dtype=np.float64)
    std = reference.std(axis=0, dtype=np.float64)
    std[std < 1e-8] = 1.0
    return [((x - mean) / std).astype(np.float32) for x in arrays]


def _penalised_loss(model: torch.nn.Linear, x: torch.Tensor, y: torch.Tensor,
                    weight_decay: float) -> torch.Tensor:
    loss = F.cross_entropy(model(x), y)
    # The bias is not penalised, as usual for logistic regression.
    return loss + 0.5 * weight_decay * model.weight.pow(2).sum()


def _fit_lbfgs(model: torch.nn.Linear, x: torch.Tensor, y: torch.Tensor,
               params: ProbeParams, progress: Callable[[int, int], None] | None) -> float:
    opt = torch.optim.LBFGS(model.parameters(), lr=params.resolved_lr(),
                            max_iter=params.epochs, history_size=20,
                            tolerance_grad=1e-6, tolerance_change=1e-9,
                            line_search_fn="strong_wolfe")
    state = opt.state[model.weight]
    reported = 0

    def closure() -> torch.Tensor:
        nonlocal reported
        opt.zero_grad()
        loss = _penalised_loss(model, x, y, params.weight_decay)
        loss.backward()
        done = state.get("n_iter", 0)
        if progress is not None and done > reported:
            reported = done
            progress(min(done, params.epochs), params.epochs)
        return loss

    # One call runs up to ``epochs`` iterations and stops early once converged.
    opt.step(closure)
    if progress is not None and reported < params.epochs:
        progress(params.epochs, params.epochs)  # converged early: the work is done
    with torch.no_grad():
        return float(_penalised_loss(model, x, y, params.weight_decay))


def _fit_sgd(model: torch.nn.Linear, x: torch.Tensor, y: torch.Tensor,
             params: ProbeParams, progress: Callable[[int, int], None] | None) -> float:
    lr = params.resolved_lr()
    opt = torch.optim.SGD(
        [{"params": [model.weight], "weight_decay": params.weight_decay},
         {"params": [model.bias], "weight_decay": 0.0}],
        lr=lr, momentum=0.9, nesterov=True)
    n = x.shape[0]
    batch = min(params.batch_size, n)
    steps_per_epoch = math.ceil(n / batch)
    total = params.epochs * steps_per_epoch
    # A CPU generator: the same order on every device, so a seed means the same run.
    generator = torch.Generator().manual_seed(params.seed)
    step = 0
    for epoch in range(params.epochs):
        order = torch.randperm(n, generator=generator).to(x.device)
        for start in range(0, n, batch):
            for group in opt.param_groups:  # cosine decay to zero, per step
                group["lr"] = 0.5 * lr * (1 + math.cos(math.pi * step / total))
            idx = order[start:start + batch]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
        if progress is not None:
            progress(epoch + 1, params.epochs)
    with torch.no_grad():
        return float(_penalised_loss(model, x, y, params.weight_decay))


def linear_probe(features: np.ndarray, labels: np.ndarray, class_names: list[str],
                 params: ProbeParams | None = None, *, device: str | torch.device = "cpu",
                 progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Train a linear classifier on frozen ``features`` and measure it on a held-out split.

    ``labels`` are indices into ``class_names`` (-1: no label, left out). ``progress`` is
    called with (iterations or epochs done, total). Deterministic for a seed on the CPU.

    Returns {"top1", "top5" (5 or more classes), "per_class" {name: accuracy, or None for a
    class with no test image}, "confusion" (C x C counts, rows true, columns predicted),
    "majority" (the share of the test split's largest class: always answering it scores
    that), "train_top1", "loss" (final training objective), "train" (labelled images used),
    "test", "label_fraction", "seed", "params", "classes" (names), "solver", "device",
    "seconds"}. Accuracies are fractions in [0, 1].

    Raises :class:`~engine.evaluate.knn.NoLabels` for a folder without labels.
    """
    start = time.perf_counter()
    params = params or ProbeParams()
    features, labels = check_labels(features, labels)
    num_classes = len(class_names)
    if labels.max() >= num_classes:
        raise ValueError(f"label {labels.max()} has no class name: {num_classes} names given")
    train, test = stratified_split(labels, params.test_fraction, params.seed)
    used = subsample_labels(train, labels, params.label_fraction, params.seed)
    # Standardise with statistics of the whole training split: they need no labels, and
    # with 1% of the labels they are far steadier than those of the labelled few.
    train_x, test_x = standardise(features[train], features[used], features[test])

    device = torch.device(device)
    x = torch.from_numpy(train_x).to(device)
    y = torch.from_numpy(labels[used]).to(device)
    model = torch.nn.Linear(x.shape[1], num_classes).to(device)
    torch.nn.init.zeros_(model.weight)  # the problem is convex: start at zero, no seed needed
    torch.nn.init.zeros_(model.bias)
    fit = _fit_lbfgs if params.solver == "lbfgs" else _fit_sgd
    loss = fit(model, x, y, params, progress)

    with torch.no_grad():
        train_scores = model(x).cpu().numpy()
        test_scores = model(torch.from_numpy(test_x).to(device)).cpu().numpy()
    true = labels[test]
    predicted = test_scores.argmax(axis=1)
    confusion = np.bincount(true * num_classes + predicted,
                            minlength=num_classes * num_classes).reshape(num_classes,
                                                                        num_classes)
    result: dict[str, Any] = {"top1": topk_accuracy(test_scores, true, 1)}
    if num_classes >= 5:
        result["top5"] = topk_accuracy(test_scores, true, 5)
    per_class = {}
    for c, name in enumerate(class_names):
        n = int(confusion[c].sum())
        per_class[str(name)] = float(confusion[c, c] / n) if n else None
    result.update(
        per_class=per_class, confusion=confusion.tolist(), majority=majority_share(true),
        train_top1=topk_accuracy(train_scores, labels[used], 1), loss=loss,
        train=len(used), test=len(test), label_fraction=params.label_fraction,
        seed=params.seed, params={**params.to_dict(), "lr": params.resolved_lr()},
        classes=[str(n) for n in class_names], solver=params.solver, device=str(device),
        seconds=round(time.perf_counter() - start, 3))
    return result
