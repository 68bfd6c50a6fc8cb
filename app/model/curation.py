"""What the curation views show, read from a run folder: no Qt, safe in worker threads.

The engine's curation verbs (engine.evaluate.explore ``duplicates``, ``outliers``,
``mistakes``) save their answers under the run's curation/ folder; these classes hold them
as numpy arrays over the run's images, so that 100,000 images cost no Python loop in the
GUI thread. :func:`regroup` joins a duplicates result's pair list into groups at any
threshold from the one the pairs were found at (connected components, as the engine does).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from engine.evaluate.embed import checkpoint_name
from engine.run.layout import RunDir

KINDS = ("duplicates", "outliers", "mistakes")


@dataclass
class CurationImages:
    """The run's images as the embeddings list them: ``paths`` relative to ``root``,
    ``labels`` (int64, -1 = none) and the class names."""

    paths: list[str]
    labels: np.ndarray
    classes: list[str]
    root: str

    def __len__(self) -> int:
        return len(self.paths)

    def absolute_path(self, i: int) -> str:
        return str(Path(self.root) / self.paths[i])

    def class_name(self, i: int) -> str | None:
        label = int(self.labels[i])
        return self.classes[label] if label >= 0 and self.classes else None

    @classmethod
    def load(cls, run_dir: Path, checkpoint: str) -> CurationImages | None:
        """From the embeddings' index.json of ``checkpoint`` (a name or "last"), or None
        when the checkpoint has not been embedded."""
        name = checkpoint_name(Path(run_dir), checkpoint)
        try:
            index = json.loads(RunDir(run_dir).embedding(name).index.read_text("utf-8"))
            return cls(list(index["paths"]), np.asarray(index["labels"], np.int64),
                       list(index["classes"] or []), str(index["root"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None


def saved_result(run_dir: Path, checkpoint: str, space: str, kind: str
                 ) -> dict[str, Any] | None:
    """The saved answer of curation verb ``kind`` for this checkpoint and space, or None."""
    name = checkpoint_name(Path(run_dir), checkpoint)
    path = RunDir(run_dir).curation_result(kind, name, space)
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) and result.get("kind") == kind else None


def read_result(path: str | Path) -> dict[str, Any]:
    """A curation verb's saved answer (the whole of it: a child's result keeps only the
    first ``--top`` of its rankings)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


# --- duplicates ----------------------------------------------------------------------------


@dataclass
class DuplicateGroups:
    """Groups of near-duplicates at one threshold: the members of group g are
    ``members[starts[g]:starts[g + 1]]`` (sorted; the first is the one kept), with the
    highest and lowest similarity of the pairs above the threshold within it, how many
    such pairs, and whether its members come from several classes."""

    threshold: float
    members: np.ndarray  # int64, group after group
    starts: np.ndarray  # int64 (G + 1,)
    max_similarity: np.ndarray  # float32 (G,)
    min_similarity: np.ndarray  # float32 (G,)
    pairs: np.ndarray  # int64 (G,)
    cross_class: np.ndarray  # bool (G,)

    def __len__(self) -> int:
        return len(self.starts) - 1

    def group(self, g: int) -> np.ndarray:
        return self.members[self.starts[g]:self.starts[g + 1]]

    def sizes(self) -> np.ndarray:
        return np.diff(self.starts)

    def redundant(self) -> np.ndarray:
        """Every member but the kept (first) one of each group, sorted."""
        mask = np.ones(len(self.members), bool)
        mask[self.starts[:-1]] = False
        return np.sort(self.members[mask])

    def as_lists(self) -> list[list[int]]:
        return [self.group(g).tolist() for g in range(len(self))]


def regroup(n: int, i: np.ndarray, j: np.ndarray, s: np.ndarray, threshold: float,
            labels: np.ndarray | None = None) -> DuplicateGroups:
    """The connected components of the pairs (i, j) with similarity ``s`` >= ``threshold``
    among ``n`` images: groups of two or more, each sorted, ordered by their first member
    (as engine.evaluate.curate.connected_components orders them). ``labels`` (-1 = none)
    marks the groups spanning several classes."""
    i, j = np.asarray(i, np.int64), np.asarray(j, np.int64)
    s = np.asarray(s, np.float32)
    keep = s >= threshold
    a, b, w = i[keep], j[keep], s[keep]
    if len(a) == 0:
        empty = np.zeros(0, np.int64)
        return DuplicateGroups(float(threshold), empty, np.zeros(1, np.int64),
                               np.zeros(0, np.float32), np.zeros(0, np.float32), empty,
                               np.zeros(0, bool))
    graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n, n)).tocsr()
    _, component = connected_components(graph, directed=False)
    sizes = np.bincount(component)
    nodes = np.flatnonzero(sizes[component] >= 2)  # ascending
    # each group's first member: where its component first appears among the nodes
    present, first_at = np.unique(component[nodes], return_index=True)
    first = np.zeros(len(sizes), np.int64)
    first[present] = nodes[first_at]
    members = nodes[np.argsort(first[component[nodes]], kind="stable")]  # stable: sorted
    key = first[component[members]]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    groups = len(starts)
    group_of_component = np.zeros(len(sizes), np.int64)
    group_of_component[component[members[starts]]] = np.arange(groups)
    group_of_edge = group_of_component[component[a]]
    by_group = np.argsort(group_of_edge, kind="stable")
    edge_starts = np.searchsorted(group_of_edge[by_group], np.arange(groups))
    hi = np.maximum.reduceat(w[by_group], edge_starts)
    lo = np.minimum.reduceat(w[by_group], edge_starts)
    pairs = np.bincount(group_of_edge, minlength=groups).astype(np.int64)
    cross = np.zeros(groups, bool)
    if labels is not None:
        lab = np.asarray(labels, np.int64)[members]
        top = np.maximum.reduceat(np.where(lab >= 0, lab, -1), starts)
        bottom = np.minimum.reduceat(np.where(lab >= 0, lab, np.iinfo(np.int64).max), starts)
        cross = (top >= 0) & (bottom < top)
    return DuplicateGroups(float(threshold), members,
                           np.r_[starts, len(members)].astype(np.int64), hi, lo, pairs, cross)


@dataclass
class DuplicatePairs:
    """A duplicates result's pair list ("pairs_list"): every pair with similarity from
    ``start`` up, the threshold the engine grouped them at, and its own groups there
    (``own``: shown at that threshold when the list, capped, starts above it)."""

    n: int
    i: np.ndarray
    j: np.ndarray
    similarity: np.ndarray
    start: float
    threshold: float
    message: str = ""
    own: DuplicateGroups | None = None

    @classmethod
    def from_result(cls, result: dict[str, Any]) -> DuplicatePairs:
        """From a duplicates result (one saved without a pair list shows its own groups at
        its own threshold only)."""
        threshold = float(result["threshold"])
        own = _own_groups(result, threshold)
        listed = result.get("pairs_list")
        if not listed:
            empty = np.zeros(0, np.int64)
            return cls(int(result["images"]), empty, empty, np.zeros(0, np.float32),
                       float("inf"), threshold, "this result holds no pair list: find the "
                       "duplicates again to move the threshold", own)
        return cls(int(result["images"]), np.asarray(listed["i"], np.int64),
                   np.asarray(listed["j"], np.int64),
                   np.asarray(listed["similarity"], np.float32),
                   float(listed["from"]), threshold, str(listed.get("message") or ""), own)

    def can_regroup(self, threshold: float) -> bool:
        """Whether the groups at ``threshold`` are known: the list holds every pair there
        (from its start up), or it is the engine's own threshold."""
        return threshold >= self.start or (self.own is not None and threshold == self.threshold)

    def groups(self, threshold: float, labels: np.ndarray | None = None) -> DuplicateGroups:
        if threshold < self.start and self.own is not None and threshold == self.threshold:
            return self.own
        return regroup(self.n, self.i, self.j, self.similarity, threshold, labels)


def _own_groups(result: dict[str, Any], threshold: float) -> DuplicateGroups | None:
    """The groups a duplicates result lists, as DuplicateGroups (their similarities over
    all pairs within, as the engine reports them)."""
    groups = result.get("groups")
    if groups is None:
        return None
    members = [[m["index"] for m in g["members"]] for g in groups]
    sizes = np.fromiter((len(m) for m in members), np.int64, len(members))
    return DuplicateGroups(
        threshold, np.asarray([i for m in members for i in m], np.int64),
        np.r_[0, np.cumsum(sizes)].astype(np.int64),
        np.asarray([g["max_similarity"] for g in groups], np.float32),
        np.asarray([g["min_similarity"] for g in groups], np.float32),
        np.asarray([g["pairs"] for g in groups], np.int64),
        np.asarray([bool(g["cross_class"]) for g in groups], bool))


# --- outliers and mistakes -----------------------------------------------------------------


@dataclass
class OutlierScores:
    """An outliers result: ``scores`` (float32, one per image: the mean similarity to its k
    nearest others; low = unusual), k, and the diverse picks if asked for."""

    scores: np.ndarray
    k: int
    diverse: np.ndarray  # int64 image indices, in the order picked; empty when not asked
    seed: int | None

    @classmethod
    def from_result(cls, result: dict[str, Any]) -> OutlierScores:
        ranked = result["ranked"]
        index = np.fromiter((r["index"] for r in ranked), np.int64, len(ranked))
        score = np.fromiter((r["score"] for r in ranked), np.float32, len(ranked))
        scores = np.full(int(result["images"]), np.nan, np.float32)
        scores[index] = score
        diverse = np.asarray([d["index"] for d in result.get("diverse", [])], np.int64)
        return cls(scores, int(result["k"]), diverse, result.get("seed"))

    def ranking(self, typical: bool = False) -> np.ndarray:
        """Image indices, most unusual first (lowest score), or most typical first; images
        without a score last."""
        known = np.flatnonzero(~np.isnan(self.scores))
        key = self.scores[known]
        order = known[np.argsort(-key if typical else key, kind="stable")]
        return order


@dataclass
class LabelSuspects:
    """A mistakes result: the suspects (image index, the class the neighbours suggest, the
    share of the vote for it), most confident first, over ``n`` images."""

    n: int
    index: np.ndarray  # int64
    suggested: list[str]
    confidence: np.ndarray  # float32
    k: int

    @classmethod
    def from_result(cls, result: dict[str, Any], n: int) -> LabelSuspects:
        suspects = result["suspects"]
        return cls(n, np.asarray([s["index"] for s in suspects], np.int64),
                   [str(s["suggested"]) for s in suspects],
                   np.asarray([s["confidence"] for s in suspects], np.float32),
                   int(result["k"]))

    def confidence_per_image(self) -> np.ndarray:
        """The confidence of each of the ``n`` images (0 for those not suspected)."""
        out = np.zeros(self.n, np.float32)
        out[self.index] = self.confidence
        return out


def load_curation(run_dir: Path, checkpoint: str, space: str,
                  kinds: tuple[str, ...] = KINDS,
                  results: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """What the views need for this context, read in a worker thread: {"images":
    CurationImages or None, "kinds": the kinds asked, and per kind found, its model
    (DuplicatePairs, OutlierScores, LabelSuspects) under the kind and its result under
    "<kind>-result"}. ``results`` gives results at hand (a child's), read whole from their
    saved file."""
    out: dict[str, Any] = {"images": CurationImages.load(run_dir, checkpoint), "kinds": kinds}
    for kind in kinds:
        result = (results or {}).get(kind)
        if result is not None and result.get("path"):
            result = read_result(result["path"])
        elif result is None:
            result = saved_result(run_dir, checkpoint, space, kind)
        if result is None:
            continue
        out[f"{kind}-result"] = result
        if kind == "duplicates":
            out[kind] = DuplicatePairs.from_result(result)
        elif kind == "outliers":
            out[kind] = OutlierScores.from_result(result)
        else:
            images = out["images"]
            out[kind] = LabelSuspects.from_result(
                result, len(images) if images is not None else int(result["images"]))
    return out
