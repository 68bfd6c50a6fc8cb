"""Two embeddings of the same images side by side: how much each image's neighbourhood
changed between two checkpoints of a run (random init against trained: what training
changed) or between two runs (MoCo's space against SimCLR's on the same folder).

The runs may have trained on different folders or subsets: images are matched by their
path relative to the data root, and where both runs' manifests record a file's content
hash, a path whose content differs is not matched. For each matched image, its ``k``
nearest neighbours among the matched images are found exactly in A and in B
(engine.evaluate.curate.knn_blocked: cosine similarity, itself left out) and the overlap is
|N_A ∩ N_B| / k: 1 when the neighbourhood is the same set, 0 when no neighbour stayed.
"""

from __future__ import annotations

import json
import operator
import time
from pathlib import Path
from typing import Any

import numpy as np

from engine.data.scan import DataError
from engine.evaluate.curate import knn_blocked
from engine.evaluate.embed import Embeddings
from engine.evaluate.explore import SPACES, embeddings
from engine.run.io import to_jsonable, write_json_atomic
from engine.run.layout import RunDir

#: The kind of the saved result: curation/compare-<A's checkpoint>-vs-<B>-<space>.json.
KIND = "compare"
#: How many of the most changed images the CLI puts in its result by default (the saved
#: file holds all).
DEFAULT_TOP = 100


def match_images(paths_a: list[str], paths_b: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(index in A, index in B) of the paths both lists hold, in A's index order (int64)."""
    a, b = np.asarray(paths_a, dtype=str), np.asarray(paths_b, dtype=str)
    if len(a) == 0 or len(b) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    _, ia, ib = np.intersect1d(a, b, assume_unique=True, return_indices=True)
    order = np.argsort(ia, kind="stable")
    return ia[order].astype(np.int64), ib[order].astype(np.int64)


def neighbour_overlap(neighbours_a: np.ndarray, neighbours_b: np.ndarray) -> np.ndarray:
    """|N_A ∩ N_B| / k per row of two (M, k) neighbour index arrays (each row's indices
    distinct): float64 (M,)."""
    if neighbours_a.shape != neighbours_b.shape:
        raise ValueError(f"neighbour arrays differ in shape: {neighbours_a.shape} and "
                         f"{neighbours_b.shape}")
    m, k = neighbours_a.shape
    if k == 0:
        return np.ones(m, np.float64)
    both = np.sort(np.concatenate([neighbours_a, neighbours_b], axis=1), axis=1)  # (M, 2k)
    shared = (both[:, 1:] == both[:, :-1]).sum(axis=1)  # a value twice: in both rows
    return shared / k


def _manifest_hashes(run_dir: Path) -> dict[str, str]:
    """Path -> content hash of the images in a run's manifest.json ({} without one)."""
    try:
        manifest = json.loads(RunDir(run_dir).manifest.read_text(encoding="utf-8"))
        return {str(r["path"]): str(r["sha"]) for r in manifest.get("images", [])
                if isinstance(r, dict) and r.get("sha")}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _same_content(run_a: Path, run_b: Path, paths: list[str]) -> np.ndarray:
    """Per path, False where both runs' manifests hold a hash for it and they differ."""
    if Path(run_a).resolve() == Path(run_b).resolve():
        return np.ones(len(paths), bool)
    ha, hb = _manifest_hashes(run_a), _manifest_hashes(run_b)
    return np.fromiter((not (p in ha and p in hb and ha[p] != hb[p]) for p in paths),
                       dtype=bool, count=len(paths))


def _vectors(emb: Embeddings, space: str) -> np.ndarray:
    return emb.features if space == "h" else emb.projections


def _side(run_dir: Path, emb: Embeddings, space: str) -> dict[str, Any]:
    return {"run": str(run_dir), "name": Path(run_dir).name, "checkpoint": emb.checkpoint,
            "space": space, "root": emb.root, "images": len(emb.paths)}


def result_path(run_a: Path, checkpoint_a: str, run_b: Path, checkpoint_b: str, space: str,
                other_space: str) -> Path:
    """Where a comparison is saved: curation/compare-<A>-vs-<B>-<space>.json under run A,
    B named by its checkpoint (and its run's folder name when it is another run)."""
    same_run = Path(run_a).resolve() == Path(run_b).resolve()
    other = checkpoint_b if same_run else f"{Path(run_b).name}-{checkpoint_b}"
    spaces = space if other_space == space else f"{space}-{other_space}"
    return RunDir(run_a).curation_result(KIND, f"{checkpoint_a}-vs-{other}", spaces)


def compare(run_a: Path, checkpoint_a: str, run_b: Path, checkpoint_b: str, *,
            space: str = "h", other_space: str | None = None, k: int = 10,
            top: int | None = None, block: int | None = None, device: str = "auto",
            cache_dir: Path | None = None) -> dict[str, Any]:
    """How each image's ``k`` nearest neighbours differ between embedding A (``run_a`` at
    ``checkpoint_a``, in ``space``) and B (``run_b`` at ``checkpoint_b``, in
    ``other_space``, by default ``space``), over the images both hold.

    Returns (and saves under run A's curation/, see :func:`result_path`) "images" (how many
    matched), "only_a", "only_b", "different_content" (paths in both whose manifests record
    different content: left out), "k", "mean_overlap", per matched image in A's index
    order "overlap" with "index_a" and "index_b", "histogram" (how many images share
    0..k neighbours), "shares" (the fraction with overlap 0, < 0.5, >= 0.5 and 1),
    "changed" (every matched image, lowest overlap first, ties by A's index; ``top`` keeps
    the first so many in the returned result), "a" and "b" (run, checkpoint, space, root,
    images) and "seconds". Raises DataError when fewer than k + 1 images match.
    """
    k = operator.index(k)
    if k < 1:
        raise ValueError(f"k (the number of neighbours) must be at least 1; got {k}")
    other_space = space if other_space is None else other_space
    for s in (space, other_space):
        if s not in SPACES:
            raise ValueError(f"space must be h (the representation) or z (the projection); "
                             f"got {s!r}")
    run_a, run_b = Path(run_a), Path(run_b)
    emb_a = embeddings(run_a, checkpoint_a, device=device, cache_dir=cache_dir)
    emb_b = embeddings(run_b, checkpoint_b, device=device, cache_dir=cache_dir)
    xa, xb = _vectors(emb_a, space), _vectors(emb_b, other_space)
    started = time.perf_counter()
    ia, ib = match_images(emb_a.paths, emb_b.paths)
    same = _same_content(run_a, run_b, [emb_a.paths[i] for i in ia.tolist()])
    different = int((~same).sum())
    ia, ib = ia[same], ib[same]
    n = len(ia)
    if n < k + 1:
        differ = (f"; {different:,} more share a path but not their content (by the "
                  "manifests)" if different else "")
        raise DataError(
            f"only {n:,} images are in both runs (matched by their path relative to the "
            f"folder: {emb_a.root} has {len(emb_a.paths):,}, {emb_b.root} has "
            f"{len(emb_b.paths):,}{differ}); comparing {k} neighbours needs at least {k + 1}. "
            "Compare runs trained on the same images (or on folders with the same layout), "
            "or ask for fewer neighbours (-k).")
    neighbours_a, _ = knn_blocked(xa[ia], k, block=block)  # positions among the matched
    neighbours_b, _ = knn_blocked(xb[ib], k, block=block)
    overlap = neighbour_overlap(neighbours_a, neighbours_b)
    shared = np.rint(overlap * k).astype(np.int64)
    order = np.lexsort((ia, overlap))  # lowest overlap first, ties by A's index
    changed = []
    for p in order.tolist():
        i = int(ia[p])
        label = int(emb_a.labels[i])
        changed.append({"index": i, "index_b": int(ib[p]), "path": emb_a.paths[i],
                        "class": emb_a.classes[label] if label >= 0 and emb_a.classes
                        else None, "overlap": round(float(overlap[p]), 6)})
    result: dict[str, Any] = {
        "kind": KIND, "a": _side(run_a, emb_a, space), "b": _side(run_b, emb_b, other_space),
        "k": k, "images": n, "only_a": len(emb_a.paths) - n - different,
        "only_b": len(emb_b.paths) - n - different, "different_content": different,
        "mean_overlap": round(float(overlap.mean()), 6),
        "histogram": np.bincount(shared, minlength=k + 1).tolist(),
        "shares": {"0": float((shared == 0).mean()), "<0.5": float((overlap < 0.5).mean()),
                   ">=0.5": float((overlap >= 0.5).mean()), "1": float((shared == k).mean())},
        "overlap": np.round(overlap, 6).tolist(), "index_a": ia.tolist(),
        "index_b": ib.tolist(), "changed": changed,
        "seconds": round(time.perf_counter() - started, 3)}
    path = result_path(run_a, emb_a.checkpoint, run_b, emb_b.checkpoint, space, other_space)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, to_jsonable(result))
    result["path"] = str(path)
    if top is not None:
        result["changed"] = changed[:top]
    return result


__all__ = ["compare", "match_images", "neighbour_overlap", "result_path", "KIND",
           "DEFAULT_TOP"]
