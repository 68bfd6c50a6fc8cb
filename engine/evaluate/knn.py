"""Weighted k-nearest-neighbour accuracy, the stratified split it (and the probe) use, and
saving evaluation results.

The kNN classifier is the one of Wu et al., 2018 ("Unsupervised Feature Learning via
Non-Parametric Instance Discrimination", InstDisc, section 3.4), as used by DINO
(``eval_knn.py``) and solo-learn: cosine similarity between L2-normalised features, the k
most similar training images each vote for their class with weight exp(s / T), and the
class with the largest sum wins. It needs no training, so it is a quick check of a
representation while or after it trains (k = 20, T = 0.07 are InstDisc's and DINO's
defaults; DINO reports k = 20 as the best of 10, 20, 100, 200).
"""

from __future__ import annotations

import operator
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from engine.data.scan import DataError
from engine.evaluate.neighbours import NeighbourIndex, check_finite
from engine.run import progress
from engine.run.io import to_jsonable, write_json_atomic

NO_LABELS_MESSAGE = (
    "the folder has no class sub-folders, so there are no labels to evaluate against: "
    "put each class's images in its own sub-folder")

# exp(s / T) with |s| <= 1 must stay finite in float64 (exp overflows above ~709).
MIN_TEMPERATURE = 0.005
MAX_TEMPERATURE = 10.0
#: Test images queried at once (each block reports progress: "knn", images done).
QUERY_BLOCK = 4096


class NoLabels(DataError):
    """The images have no labels (a flat folder), so accuracy cannot be measured.

    A :class:`~engine.data.scan.DataError`: str() is a complete message for a person.
    """

    def __init__(self, message: str = NO_LABELS_MESSAGE) -> None:
        super().__init__(message)


def check_labels(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``features`` as a finite 2-D array and ``labels`` as int64, checked against each
    other. Raises :class:`NoLabels` when no image has a label (every label is -1)."""
    features = np.asarray(features)
    labels = np.asarray(labels)
    if features.ndim != 2:
        raise ValueError(
            f"features must be a 2-D array (images x dimensions); got shape {features.shape}")
    if labels.ndim != 1 or labels.shape[0] != features.shape[0]:
        raise ValueError(
            f"labels must be a 1-D array with one label per image; got shape {labels.shape} "
            f"for {features.shape[0]} images")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers (-1 for no label); got {labels.dtype}")
    labels = labels.astype(np.int64, copy=False)
    if labels.size and labels.min() < -1:
        raise ValueError(f"labels must be class indices >= 0, or -1 for no label; got "
                         f"{labels.min()}")
    if not (labels >= 0).any():
        raise NoLabels()
    check_finite(features, "features")
    return features, labels


def stratified_split(labels: np.ndarray, test_fraction: float = 0.2,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split the labelled images into train and test index arrays, class by class.

    Each class with n >= 2 images puts round(n x test_fraction) of them, but at least 1
    and at most n - 1, in the test split, so every such class is in both splits; a class
    with one image goes to train. Images labelled -1 are in neither. The split depends only
    on ``labels``, ``test_fraction`` and ``seed``. Both arrays are sorted.

    Raises ValueError with fewer than two labelled classes, or when no class has two images
    (nothing could be held out).
    """
    labels = np.asarray(labels).astype(np.int64, copy=False)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1 (exclusive); got "
                         f"{test_fraction}")
    classes = np.unique(labels[labels >= 0])
    if len(classes) < 2:
        raise ValueError(
            f"accuracy needs at least two classes with images; the labels hold "
            f"{len(classes)}: add another class sub-folder")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in classes:  # sorted order, so the random stream is consumed reproducibly
        members = rng.permutation(np.flatnonzero(labels == c))
        n = len(members)
        n_test = 0 if n < 2 else min(max(round(n * test_fraction), 1), n - 1)
        test.append(members[:n_test])
        train.append(members[n_test:])
    test_idx = np.sort(np.concatenate(test))
    if len(test_idx) == 0:
        raise ValueError("no class has two or more images, so none can be held out for "
                         "testing: add more images to each class")
    return np.sort(np.concatenate(train)), test_idx


def knn_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, *,
                k: int = 20, temperature: float = 0.07, num_classes: int,
                device: str = "cpu") -> np.ndarray:
    """Class scores (M x C, float64) of the weighted kNN classifier (InstDisc, eq. 8).

    For each test feature, the ``k`` training features with the highest cosine similarity
    s_i each add exp(s_i / temperature) to the score of their class. The prediction is the
    argmax. ``k`` larger than the training set is clipped to it.
    """
    k = operator.index(k)
    if k < 1:
        raise ValueError(f"k (the number of neighbours) must be at least 1; got {k}")
    if not MIN_TEMPERATURE <= temperature <= MAX_TEMPERATURE:
        raise ValueError(f"temperature must be from {MIN_TEMPERATURE} to {MAX_TEMPERATURE}; "
                         f"got {temperature}")
    train_y = np.asarray(train_y).astype(np.int64, copy=False)
    if len(train_y) != len(train_x):
        raise ValueError(f"train_y has {len(train_y)} labels for {len(train_x)} features")
    if len(train_y) and not (0 <= train_y.min() and train_y.max() < num_classes):
        raise ValueError(f"train labels must be in 0-{num_classes - 1}")
    # Exact: a batch of test queries is one float32 product anyway (the fast search is for
    # single queries), and no float16 copy of the training features is made.
    index = NeighbourIndex(train_x, device=device, search="exact")
    neighbours, similarity = _query_in_blocks(index, np.asarray(test_x), k)  # both (M, k)
    # float64: exp(1 / 0.07) = 1.6e6 is fine in float32, but smaller temperatures are not.
    weights = np.exp(similarity.astype(np.float64) / temperature)
    scores = np.zeros((neighbours.shape[0], num_classes), np.float64)
    rows = np.repeat(np.arange(neighbours.shape[0]), neighbours.shape[1])
    np.add.at(scores, (rows, train_y[neighbours].ravel()), weights.ravel())
    return scores


def _query_in_blocks(index: NeighbourIndex, x: np.ndarray,
                     k: int) -> tuple[np.ndarray, np.ndarray]:
    """``index.query`` in blocks of QUERY_BLOCK rows, reporting progress ("knn") after each."""
    m = len(x) if x.ndim == 2 else 1
    if m <= QUERY_BLOCK:
        out = index.query(x, k)
        progress.report("knn", m, m, "images")
        return out
    found, scores = [], []
    for a in range(0, m, QUERY_BLOCK):
        n, s = index.query(x[a:a + QUERY_BLOCK], k)
        found.append(n)
        scores.append(s)
        progress.report("knn", min(m, a + QUERY_BLOCK), m, "images")
    return np.concatenate(found), np.concatenate(scores)


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose true label is among the ``k`` highest scores."""
    if len(labels) == 0:
        return float("nan")
    # Stable sort of the negated scores: among tied classes the lower index ranks first,
    # as with argmax.
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float((top == np.asarray(labels)[:, None]).any(axis=1).mean())


def majority_share(test_labels: np.ndarray) -> float:
    """The accuracy of always answering the test split's largest class: the floor any
    useful classifier must beat (0.0 for an empty split)."""
    test_labels = np.asarray(test_labels)
    if test_labels.size == 0:
        return 0.0
    return float(np.bincount(test_labels).max() / test_labels.size)


def knn_accuracy(features: np.ndarray, labels: np.ndarray, *, k: int = 20,
                 temperature: float = 0.07, test_fraction: float = 0.2, seed: int = 0,
                 device: str = "cpu") -> dict[str, Any]:
    """Weighted kNN accuracy (InstDisc) on a stratified held-out split of the labelled images.

    Images labelled -1 are left out. Returns {"top1", "top5" (with 5 or more classes),
    "majority" (the share of the test split's largest class), "k" (as used, after clipping
    to the training set), "temperature", "train", "test",
    "seed", "classes", "test_fraction", "seconds"}; accuracies are fractions in [0, 1].
    Raises :class:`NoLabels` for a folder without labels.
    """
    start = time.perf_counter()
    features, labels = check_labels(features, labels)
    train, test = stratified_split(labels, test_fraction, seed)
    num_classes = int(labels.max()) + 1
    scores = knn_predict(features[train], labels[train], features[test], k=k,
                         temperature=temperature, num_classes=num_classes, device=device)
    result: dict[str, Any] = {"top1": topk_accuracy(scores, labels[test], 1)}
    if num_classes >= 5:
        result["top5"] = topk_accuracy(scores, labels[test], 5)
    result.update(majority=majority_share(labels[test]), k=min(k, len(train)),
                  temperature=float(temperature), train=len(train),
                  test=len(test), seed=seed, classes=num_classes,
                  test_fraction=float(test_fraction),
                  seconds=round(time.perf_counter() - start, 3))
    return result


def save_result(result: dict[str, Any], probes_dir: Path, name: str) -> Path:
    """Write an evaluation result as ``probes_dir/<name>.json`` (atomically) and return the
    path. ``name`` is a file name stem such as "knn-last-h" or "linear-last-h-10pct"."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ValueError(f"result name must be letters, digits, '.', '_' or '-' (no folders); "
                         f"got {name!r}")
    probes_dir = Path(probes_dir)
    probes_dir.mkdir(parents=True, exist_ok=True)
    path = probes_dir / f"{name}.json"
    write_json_atomic(path, to_jsonable(result))
    return path
