"""Exploring a trained run: embeddings, maps, neighbours, kNN, linear probe and export, and
curating its folder: near-duplicates, outliers and a diverse subset, likely label mistakes
(the algorithms in engine.evaluate.curate; tags and subsets in engine.evaluate.tags and
engine.evaluate.subset).

Each function works from a run folder and a checkpoint name ("last", "epoch-0010",
"random" for the untrained baseline), saves its result in the run folder as DESIGN.md lays
out, and returns a plain dict (JSON-ready). The CLI verbs and the app call these.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from engine.config.resolve import resolve_device
from engine.data.scan import DataError
from engine.evaluate.embed import (
    Embeddings,
    RunError,
    checkpoint_path,
    embed_file,
    embed_run,
    load_encoder,
    load_run_config,
)
from engine.evaluate.knn import knn_accuracy, save_result
from engine.evaluate.maps import MapParams, load_or_compute_map
from engine.evaluate.neighbours import NeighbourIndex
from engine.evaluate.probe import ProbeParams, linear_probe
from engine.run.layout import RunDir

SPACES = ("h", "z")
Progress = Callable[[str, int, int], None]


def _vectors(emb: Embeddings, space: str) -> np.ndarray:
    if space not in SPACES:
        raise ValueError(f"space must be h (the representation) or z (the projection); "
                         f"got {space!r}")
    return emb.features if space == "h" else emb.projections


def embeddings(run_dir: Path, checkpoint: str = "last", *, data: Path | None = None,
               device: str = "auto", force: bool = False, cache_dir: Path | None = None,
               progress: Progress | None = None, message: Callable[[str], None] | None = None,
               ctx: Any = None) -> Embeddings:
    """The embeddings of a checkpoint, computed once and reused (``ctx``: the processes
    of a torchrun launch, each embedding a shard; ``message``: told the files' size before
    they are computed; engine.evaluate.embed.embed_run)."""
    return embed_run(Path(run_dir), checkpoint, data=data, device=device, force=force,
                     cache_dir=cache_dir, progress=progress, message=message, ctx=ctx)


def embed_summary(emb: Embeddings) -> dict[str, Any]:
    return {"folder": str(emb.folder), "checkpoint": emb.checkpoint, "images": len(emb.paths),
            "h_dim": int(emb.features.shape[1]), "z_dim": int(emb.projections.shape[1]),
            "bytes": emb.nbytes, "classes": emb.classes, "root": emb.root}


def make_map(run_dir: Path, checkpoint: str = "last", *, space: str = "h",
             params: MapParams | None = None, device: str = "auto",
             cache_dir: Path | None = None,
             progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """A 2-D map (UMAP or PCA) of the embeddings, cached under maps/."""
    params = params or MapParams()
    emb = embeddings(run_dir, checkpoint, device=device, cache_dir=cache_dir)
    started = time.perf_counter()
    coords = load_or_compute_map(_vectors(emb, space), params, RunDir(run_dir).maps,
                                 f"{emb.checkpoint}-{space}", progress=progress)
    return {"coords": coords, "paths": emb.paths, "labels": emb.labels.tolist(),
            "classes": emb.classes, "root": emb.root, "checkpoint": emb.checkpoint,
            "space": space, "params": params.to_dict(),
            "seconds": round(time.perf_counter() - started, 3)}


def neighbours(run_dir: Path, query: int | str | Path, k: int = 10, *,
               checkpoint: str = "last", space: str = "h", device: str = "auto",
               cache_dir: Path | None = None) -> dict[str, Any]:
    """The ``k`` most similar images (cosine similarity) to an image of the run's folder
    (by index) or to an image file from anywhere."""
    emb = embeddings(run_dir, checkpoint, device=device, cache_dir=cache_dir)
    # Exact: one query per call, and the exact index needs only the inverse norms (the fast
    # one's float16 copy takes longer to make than a few exact queries).
    index = NeighbourIndex(_vectors(emb, space), search="exact")
    query_info: dict[str, Any]
    if isinstance(query, (int, np.integer)) or (isinstance(query, str) and query.isdigit()):
        i = int(query)
        idx, scores = index.query_index(i, k)
        query_info = {"index": i, "path": emb.paths[i] if 0 <= i < len(emb.paths) else None}
    else:
        path = Path(query)
        if not path.is_file():
            raise DataError(f"query {query!r} is neither an image index (0-"
                            f"{len(emb.paths) - 1}) nor an existing image file")
        torch_device, _ = resolve_device(device)
        encoder, cfg, _ = load_encoder(Path(run_dir), checkpoint, torch_device)
        h, z = embed_file(encoder, cfg, path)
        idx, scores = index.query(h if space == "h" else z, k)
        query_info = {"file": str(path)}
    results = []
    for j, score in zip(idx[0].tolist(), scores[0].tolist()):
        label = int(emb.labels[j])
        results.append({"index": j, "path": emb.paths[j], "score": round(float(score), 6),
                        "label": label if label >= 0 else None,
                        "class": emb.classes[label] if label >= 0 and emb.classes else None})
    return {"query": query_info, "k": len(results), "space": space,
            "checkpoint": emb.checkpoint, "root": emb.root, "neighbours": results}


def knn(run_dir: Path, checkpoint: str = "last", *, space: str = "h", k: int = 20,
        temperature: float = 0.07, test_fraction: float = 0.2, seed: int = 0,
        device: str = "auto", cache_dir: Path | None = None) -> dict[str, Any]:
    """Weighted kNN top-1 accuracy on a stratified held-out split; saved under probes/."""
    emb = embeddings(run_dir, checkpoint, device=device, cache_dir=cache_dir)
    result = knn_accuracy(_vectors(emb, space), emb.labels, k=k, temperature=temperature,
                          test_fraction=test_fraction, seed=seed)
    result.update(kind="knn", checkpoint=emb.checkpoint, space=space, class_names=emb.classes)
    name = f"knn-{emb.checkpoint}-{space}"
    result["path"] = str(save_result(result, RunDir(run_dir).probes, name))
    return result


def probe(run_dir: Path, checkpoint: str = "last", *, space: str = "h",
          params: ProbeParams | None = None, device: str = "auto",
          cache_dir: Path | None = None,
          progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """The linear evaluation protocol on frozen features; saved under probes/."""
    params = params or ProbeParams()
    emb = embeddings(run_dir, checkpoint, device=device, cache_dir=cache_dir)
    result = linear_probe(_vectors(emb, space), emb.labels, emb.classes, params,
                          progress=progress)
    result.update(kind="linear-probe", checkpoint=emb.checkpoint, space=space)
    fraction = f"{params.label_fraction:g}".replace(".", "p")
    name = f"probe-{emb.checkpoint}-{space}-labels{fraction}"
    result["path"] = str(save_result(result, RunDir(run_dir).probes, name))
    return result


EMBEDDING_FORMATS = ("npy", "csv")


def default_export_path(run_dir: Path, checkpoint: str, fmt: str, space: str = "h") -> Path:
    """Where an export goes when no file is named: the run's exports/ folder."""
    from engine.export import SUFFIXES

    exports = RunDir(run_dir).exports
    if fmt in EMBEDDING_FORMATS:
        return exports / f"embeddings-{checkpoint}-{space}.{fmt}"
    return exports / f"encoder-{checkpoint}{SUFFIXES[fmt]}"


def _init_of_run(run_dir: Path, init: str) -> dict[str, Any]:
    """What the run's backbone started from, with the weights file's sha256 from the run's
    first run_start event (a resumed run's later ones do not read the file again)."""
    from engine.export.metadata import init_record
    from engine.run.events import read_events

    sha = None
    if init:
        try:
            for event in read_events(RunDir(run_dir).events):
                if event["type"] == "run_start":
                    sha = event.get("init_sha256")
                    break
        except OSError:
            pass
    return init_record(init, sha)


def export_encoder_of_run(run_dir: Path, fmt: str, out: Path | None = None, *,
                          checkpoint: str = "last",
                          include_head: bool = False) -> dict[str, Any]:
    """Export a checkpoint's encoder (see engine.export), verified on real images of the
    run's folder when its cache is at hand. Default destination: the run's exports/."""
    from engine.export import export_encoder

    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    encoder, cfg, info = load_encoder(run_dir, checkpoint, "cpu")
    if out is None:
        out = default_export_path(run_dir, info["checkpoint"], fmt)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    manifest_path = RunDir(run_dir).manifest
    summary = None
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            summary = {"root": manifest.get("root"), "images": len(manifest.get("images", [])),
                       "classes": manifest.get("classes", [])}
        except (OSError, ValueError):
            summary = None
    result = export_encoder(encoder, cfg, fmt, Path(out), include_head=include_head,
                            checkpoint_path=checkpoint_path(run_dir, checkpoint),
                            dataset_summary=summary, epochs_trained=info.get("epoch"),
                            init=_init_of_run(run_dir, cfg.init))
    return {"path": str(result.path), "metadata": str(result.metadata_path),
            "format": result.format, "verified": result.verified,
            "max_abs_diff": result.max_abs_diff, "tolerance": result.tolerance,
            "load_snippet": result.load_snippet}


def export_embeddings(run_dir: Path, out: Path, *, checkpoint: str = "last", space: str = "h",
                      device: str = "auto", cache_dir: Path | None = None) -> dict[str, Any]:
    """Write the embeddings to ``out``: .npy (the matrix) or .csv (path, label, vector), with
    a metadata JSON beside it whose ``load_snippet`` reads the file back."""
    from engine.export import embeddings_metadata, write_embeddings, write_metadata

    out = Path(out)
    emb = embeddings(run_dir, checkpoint, device=device, cache_dir=cache_dir)
    vectors = _vectors(emb, space)
    fmt = write_embeddings(out, vectors, emb.paths, emb.labels.tolist(), emb.classes, space)
    meta = embeddings_metadata(fmt, out, source_run=Path(run_dir), checkpoint=emb.checkpoint,
                               space=space, shape=(len(emb.paths), int(vectors.shape[1])),
                               root=emb.root, classes=emb.classes)
    meta_path = write_metadata(out, meta)
    return {"path": str(out), "metadata": str(meta_path), "format": fmt, **meta}


# --- curation: duplicates, outliers, a diverse subset, label mistakes -----------------------


def _image(emb: Embeddings, i: int) -> dict[str, Any]:
    label = int(emb.labels[i])
    return {"index": int(i), "path": emb.paths[i],
            "class": emb.classes[label] if label >= 0 and emb.classes else None}


def _save_curation(run_dir: Path, kind: str, emb: Embeddings, space: str,
                   result: dict[str, Any]) -> str:
    from engine.run.io import to_jsonable, write_json_atomic

    path = RunDir(run_dir).curation_result(kind, emb.checkpoint, space)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, to_jsonable(result))
    return str(path)


def duplicates(run_dir: Path, checkpoint: str = "last", *, space: str = "h",
               threshold: float | None = None, min_threshold: float | None = None,
               block: int | None = None, device: str = "auto",
               cache_dir: Path | None = None) -> dict[str, Any]:
    """Groups of near-duplicate images (cosine similarity >= ``threshold``; by default
    curate.auto_threshold: cosine distance below 0.2 x the median nearest-neighbour
    distance), found exactly (engine.evaluate.curate); saved as
    curation/duplicates-<checkpoint>-<space>.json.

    Each group lists its members (index, path, class), the highest and lowest similarity
    within it, whether it spans several classes ("cross_class": the same picture filed
    under two classes) or splits ("cross_split": in two of train/, val/, test/... folders,
    at any depth: a leak between the splits; "splits" names the folder's), and the member
    kept (the first in path order); "redundant" lists the paths of the others, the ones to
    tag or leave out.

    "pairs_list" (curate.listed_pairs) holds the pairs found, from ``min_threshold`` when it
    is below the threshold, so that a viewer can regroup at any threshold from its "from"
    up without searching again. When the lower threshold finds too many pairs to search
    (curate.MAX_PAIRS), the pairs at the threshold are listed and "message" says why.
    """
    from engine.evaluate.curate import (
        RELATIVE_DISTANCE,
        auto_threshold,
        duplicate_groups,
        listed_pairs,
        similar_pairs,
        split_of,
    )

    emb = embeddings(run_dir, checkpoint, device=device, cache_dir=cache_dir)
    started = time.perf_counter()
    rule: dict[str, Any] = {"threshold_rule": "given"}
    if threshold is None:
        threshold, nearest = auto_threshold(_vectors(emb, space))
        rule = {"threshold_rule": f"1 - {RELATIVE_DISTANCE:g} x (1 - median nearest-"
                "neighbour similarity)", "median_nearest_similarity": round(nearest, 6)}
    threshold = round(float(threshold), 6)  # grouped at the very threshold it reports
    vectors = _vectors(emb, space)
    floor, note = threshold, ""
    if min_threshold is not None and not -1.0 <= min_threshold <= 1.0:
        raise ValueError(f"min_threshold is a cosine similarity, from -1 to 1; got "
                         f"{min_threshold}")
    if min_threshold is not None and min_threshold < threshold:
        try:
            pairs = similar_pairs(vectors, min_threshold, block=block)
            floor = float(min_threshold)
        except ValueError as exc:  # too many pairs so low (a bad value raises again below)
            note = f"pairs listed from the threshold only: {exc}"
            pairs = similar_pairs(vectors, threshold, block=block)
    else:
        pairs = similar_pairs(vectors, threshold, block=block)
    found = duplicate_groups(vectors, threshold, pairs=pairs)
    listed = listed_pairs(*pairs, floor)
    if note:
        listed["message"] = "; ".join(filter(None, [note, listed["message"]]))
    groups, redundant = [], []
    for g in found:
        members = [_image(emb, i) for i in g["members"]]
        classes = {int(emb.labels[i]) for i in g["members"] if emb.labels[i] >= 0}
        keep = g["members"][0]
        redundant.extend(emb.paths[i] for i in g["members"][1:])
        splits = sorted({split_of(emb.paths[i]) for i in g["members"]} - {None})
        groups.append({"members": members, "size": len(members),
                       "max_similarity": g["max_similarity"],
                       "min_similarity": g["min_similarity"], "pairs": g["pairs"],
                       "cross_class": len(classes) > 1, "splits": splits,
                       "cross_split": len(splits) > 1, "keep": keep})
    result = {"kind": "duplicates", "checkpoint": emb.checkpoint, "space": space,
              "threshold": round(threshold, 6), **rule, "images": len(emb.paths),
              "root": emb.root, "groups": groups, "group_count": len(groups),
              "cross_class_groups": sum(g["cross_class"] for g in groups),
              "splits": sorted({split_of(p) for p in emb.paths} - {None}),
              "cross_split_groups": sum(g["cross_split"] for g in groups),
              "redundant": redundant, "pairs_list": listed,
              "seconds": round(time.perf_counter() - started, 3)}
    result["path"] = _save_curation(run_dir, "duplicates", emb, space, result)
    return result


def outliers(run_dir: Path, checkpoint: str = "last", *, space: str = "h", k: int = 10,
             typical: bool = False, top: int | None = None, diverse: int | None = None,
             seed: int = 0, block: int | None = None, device: str = "auto",
             cache_dir: Path | None = None) -> dict[str, Any]:
    """Every image ranked by how unusual it is: its score is the mean cosine similarity to
    its ``k`` nearest other images, lowest (most unusual) first, or highest first with
    ``typical``; ``top`` keeps the first so many in "ranked" (all are saved in
    curation/outliers-<checkpoint>-<space>.json). ``diverse`` = n adds "diverse": n images
    chosen by greedy farthest-point selection from a start drawn with ``seed``."""
    from engine.evaluate.curate import farthest_point, outlier_scores

    emb = embeddings(run_dir, checkpoint, device=device, cache_dir=cache_dir)
    vectors = _vectors(emb, space)
    started = time.perf_counter()
    scores = outlier_scores(vectors, k, block=block)
    order = np.argsort(-scores if typical else scores, kind="stable")
    ranked = [{**_image(emb, int(i)), "score": round(float(scores[i]), 6)} for i in order]
    result: dict[str, Any] = {
        "kind": "outliers", "checkpoint": emb.checkpoint, "space": space,
        "k": min(k, len(emb.paths) - 1), "order": "typical first" if typical else
        "most unusual first", "images": len(emb.paths), "root": emb.root, "ranked": ranked}
    if diverse is not None:
        picks = farthest_point(vectors, diverse, seed=seed)
        result.update(diverse=[_image(emb, i) for i in picks], seed=seed)
    result["seconds"] = round(time.perf_counter() - started, 3)
    result["path"] = _save_curation(run_dir, "outliers", emb, space, result)
    if top is not None:
        result["ranked"] = ranked[:top]
    return result


def mistakes(run_dir: Path, checkpoint: str = "last", *, space: str = "h", k: int = 10,
             temperature: float = 0.07, top: int | None = None, block: int | None = None,
             device: str = "auto", cache_dir: Path | None = None) -> dict[str, Any]:
    """Images whose ``k`` nearest labelled neighbours vote for another class than their
    folder's (vote weights exp(s / T)), most confident first: likely label mistakes (or
    images between classes). Saved as curation/mistakes-<checkpoint>-<space>.json; ``top``
    keeps the first so many in the returned "suspects". Raises NoLabels for a folder
    without class sub-folders."""
    from engine.evaluate.curate import label_mistakes
    from engine.evaluate.knn import MAX_TEMPERATURE, MIN_TEMPERATURE, NoLabels

    if not MIN_TEMPERATURE <= temperature <= MAX_TEMPERATURE:
        raise ValueError(f"temperature must be from {MIN_TEMPERATURE} to {MAX_TEMPERATURE}; "
                         f"got {temperature}")
    emb = embeddings(run_dir, checkpoint, device=device, cache_dir=cache_dir)
    if not emb.has_labels:
        raise NoLabels()
    started = time.perf_counter()
    found = label_mistakes(_vectors(emb, space), emb.labels, k, temperature=temperature,
                           block=block)
    suspects = []
    for i, s, c in zip(found["indices"].tolist(), found["suggested"].tolist(),
                       found["confidence"].tolist()):
        if s != int(emb.labels[i]):
            suspects.append({**_image(emb, i), "suggested": emb.classes[s],
                             "confidence": round(float(c), 6)})
    suspects.sort(key=lambda r: (-r["confidence"], r["index"]))
    result = {"kind": "mistakes", "checkpoint": emb.checkpoint, "space": space,
              "k": found["k"], "temperature": float(temperature),
              "images": len(found["indices"]), "root": emb.root,
              "suspect_count": len(suspects), "suspects": suspects,
              "seconds": round(time.perf_counter() - started, 3)}
    result["path"] = _save_curation(run_dir, "mistakes", emb, space, result)
    if top is not None:
        result["suspects"] = suspects[:top]
    return result


__all__ = ["embeddings", "make_map", "neighbours", "knn", "probe", "export_encoder_of_run",
           "export_embeddings", "default_export_path", "duplicates", "outliers", "mistakes",
           "RunError", "SPACES"]
