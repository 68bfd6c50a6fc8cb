"""The exploring verbs of ``contrastive-engine``: embed, map, neighbours, knn, probe, export,
compare, and the curating ones: duplicates, outliers, mistakes, tag, subset.

Each takes ``--run RUN_DIR`` and (except tag and subset) a checkpoint; compare also takes
``--other RUN_DIR`` and its checkpoint. With ``--json``
stdout carries JSON lines: progress events, then one ``result`` event (engine.run.schema);
without it, the result is printed for people on stdout, and the progress on stderr (a
progress bar in a terminal, engine.cli.terminal; a line per finished phase otherwise).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.cli.args import add_settings, given
from engine.cli.terminal import TerminalReport
from engine.run import progress as counts
from engine.run.events import EventWriter
from engine.run.layout import LAST, RANDOM_INIT, RunDir

#: The exit status of a verb cancelled with Ctrl+C or SIGINT (128 + SIGINT, as shells use).
EXIT_CANCELLED = 130

VERBS = ("embed", "map", "neighbours", "knn", "probe", "export", "compare", "duplicates",
         "outliers", "mistakes", "tag", "subset")
HELP = {
    "embed": "embed every image with a checkpoint's encoder (h and z)",
    "map": "2-D map of the embeddings (UMAP or PCA)",
    "neighbours": "nearest neighbours of an image",
    "knn": "weighted kNN accuracy against the folder's labels",
    "probe": "linear probe (frozen encoder, one linear layer)",
    "export": "export the encoder or the embeddings",
    "compare": "how each image's neighbours differ between two checkpoints or runs",
    "duplicates": "groups of near-duplicate images",
    "outliers": "the most unusual (or typical) images, and a diverse subset",
    "mistakes": "images whose neighbours say they are in the wrong class folder",
    "tag": "named tags on images, kept in the run folder",
    "subset": "copy, link or list a chosen part of the images (to train on)",
}


def add_verb_names(sub: argparse._SubParsersAction) -> None:
    """The verbs by name and help only (for the listing in ``--help``), without the flags
    whose settings classes import torch: enough when another verb runs."""
    for verb in VERBS:
        sub.add_parser(verb, help=HELP[verb])


def _common(p: argparse.ArgumentParser, *, space: bool = True) -> None:
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="A run folder made by "
                   "`contrastive-engine train`.")
    p.add_argument("--checkpoint", default=LAST, help="last (default), epoch-NNNN, a .pt "
                   "file, or random (the untrained encoder, a baseline).")
    if space:
        p.add_argument("--space", default="h", choices=("h", "z"), help="h: the encoder's "
                       "representation (default, what transfers); z: the projection head's "
                       "output (what the loss saw).")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N.")
    p.add_argument("--cache-dir", metavar="DIR", help="Decoded-image cache folder.")
    p.add_argument("--json", action="store_true", help="Machine-readable JSON lines on stdout.")


def _block(p: argparse.ArgumentParser) -> None:
    p.add_argument("--block", type=int, metavar="ROWS", help="Rows of the similarity matrix "
                   "computed at once (default: as many as fit in 256 MB of scores, at most "
                   "4096).")


def _top(p: argparse.ArgumentParser, default: int) -> None:
    p.add_argument("--top", type=int, default=default, metavar="N", help=f"How many to put "
                   f"in the result (default {default}; the saved file holds all).")


def add_curation_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("duplicates", help=HELP["duplicates"],
                       description="Groups of near-duplicate images: every pair whose cosine "
                       "similarity is at least --threshold, found exactly (the similarity "
                       "matrix in blocks of rows, never whole), joined into connected groups. "
                       "Groups spanning several class folders are flagged. Saved under "
                       "curation/.")
    _common(p)
    p.add_argument("--threshold", type=float, help="Cosine similarity from which two images "
                   "count as near-duplicates (default: relative to the folder, a cosine "
                   "distance under 0.2 x the median distance of an image to its nearest "
                   "neighbour; give one for a folder of mostly copies).")
    p.add_argument("--min-threshold", type=float, metavar="S", help="Also list every pair "
                   "from this lower similarity in the result (\"pairs_list\", the most "
                   "similar 200,000 at most), so that a viewer can regroup at any threshold "
                   "from S up without searching again.")
    _block(p)

    p = sub.add_parser("outliers", help=HELP["outliers"],
                       description="Each image's score is its mean cosine similarity to its "
                       "k nearest other images: the lowest are the most unusual. Saved under "
                       "curation/.")
    _common(p)
    p.add_argument("-k", type=int, default=10, help="Neighbours averaged (default 10).")
    p.add_argument("--typical", action="store_true", help="Most typical first instead.")
    p.add_argument("--diverse", type=int, metavar="N", help="Also choose N diverse images "
                   "(greedy farthest-point selection on cosine distance).")
    p.add_argument("--seed", type=int, default=0, help="The first image of --diverse is drawn "
                   "with this seed (default 0).")
    _top(p, 100)
    _block(p)

    p = sub.add_parser("mistakes", help=HELP["mistakes"],
                       description="For each labelled image, its k nearest labelled "
                       "neighbours vote for their classes (weights exp(s/T)); images whose "
                       "vote names another class than their folder are listed, the most "
                       "confident first. Saved under curation/.")
    _common(p)
    p.add_argument("-k", type=int, default=10, help="Neighbours that vote (default 10).")
    p.add_argument("--temperature", type=float, default=0.07, help="Vote temperature "
                   "(default 0.07).")
    _top(p, 100)
    _block(p)

    p = sub.add_parser("tag", help=HELP["tag"],
                       description="Named tags on images, saved in the run's tags.json by "
                       "path and content hash, so they still find an image after its folder "
                       "is renamed or moved.")
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="A run folder.")
    action = p.add_mutually_exclusive_group(required=True)
    action.add_argument("--add", metavar="NAME", help="Tag the images given with NAME.")
    action.add_argument("--remove", metavar="NAME", help="Take NAME off the images given "
                        "(off every image when none is given).")
    action.add_argument("--list", nargs="?", const="", metavar="NAME", help="The tags and "
                        "how many images each has; with NAME, that tag's images.")
    p.add_argument("--paths", metavar="FILE", help="A .txt (one path a line) or .csv ('path' "
                   "column) list of the images: absolute, or relative to the list's folder.")
    p.add_argument("--index", type=int, nargs="+", metavar="I", help="Image indices in the "
                   "run (as the explore verbs show them).")
    p.add_argument("--data", metavar="DIR|LIST", help="With --list NAME: find the tagged "
                   "images in this folder (the run's folder renamed or moved).")
    p.add_argument("--json", action="store_true", help="Machine-readable JSON lines on stdout.")

    p = sub.add_parser("subset", help=HELP["subset"],
                       description="Choose images by class, tag or list (every image when "
                       "none is given; several kinds narrow together, excluded tags are "
                       "dropped last) and write them as a folder of copies or links with the "
                       "same class sub-folders, or as a list that `train --data` reads.")
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="A run folder.")
    p.add_argument("--data", metavar="DIR|LIST", help="Choose from this folder instead of "
                   "the images the run trained on (its folder renamed or moved).")
    p.add_argument("--class", dest="classes", action="append", metavar="C",
                   help="Images of class C (repeatable).")
    p.add_argument("--tag", dest="tags", action="append", metavar="T",
                   help="Images tagged T (repeatable).")
    p.add_argument("--exclude-tag", dest="exclude_tags", action="append", metavar="T",
                   help="Leave out the images tagged T (repeatable): retrain without them.")
    p.add_argument("--paths", metavar="FILE", help="Images named in a .txt/.csv list.")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--copy", metavar="DIR", help="Copy them into DIR (new or empty), in "
                     "their class sub-folders.")
    out.add_argument("--link", metavar="DIR", help="Symbolic links in DIR, same layout.")
    out.add_argument("--list", metavar="FILE", help="FILE.txt: one absolute path a line; "
                     "FILE.csv: path,class.")
    p.add_argument("--json", action="store_true", help="Machine-readable JSON lines on stdout.")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from engine.evaluate.maps import MapParams
    from engine.evaluate.probe import ProbeParams

    p = sub.add_parser("embed", help=HELP["embed"],
                       description="Embed every image of the run's folder (or --data) with a "
                       "checkpoint's frozen encoder; saved under embeddings/<checkpoint>/.")
    _common(p, space=False)
    p.add_argument("--data", metavar="DIR", help="Embed another folder instead.")
    p.add_argument("--force", action="store_true", help="Compute again even if saved.")

    p = sub.add_parser("map", help=HELP["map"],
                       description="A 2-D map of the embeddings, saved under maps/ and reused "
                       "for the same checkpoint and parameters.")
    _common(p)
    add_settings(p, MapParams, "map settings")
    p.add_argument("--csv", metavar="FILE", help="Also write the coordinates as CSV.")

    p = sub.add_parser("neighbours", help=HELP["neighbours"],
                       description="The K most similar images by cosine similarity. Exact "
                       "search with one matrix product: fast up to hundreds of thousands of "
                       "images (100k x 2048 floats take 0.8 GB).")
    _common(p)
    p.add_argument("--query", required=True, help="An image index in the run's folder, or the "
                   "path of any image file.")
    p.add_argument("-k", type=int, default=10, help="How many neighbours (default 10).")

    p = sub.add_parser("knn", help=HELP["knn"],
                       description="Weighted kNN (cosine similarity, weights exp(s/T)) on a "
                       "stratified held-out split; saved under probes/.")
    _common(p)
    p.add_argument("-k", type=int, default=20, help="Neighbours that vote (default 20).")
    p.add_argument("--temperature", type=float, default=0.07, help="Vote temperature "
                   "(default 0.07).")
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--baseline", action="store_true", help="Also evaluate the random-init "
                   "encoder, to see what training bought.")

    p = sub.add_parser("probe", help=HELP["probe"],
                       description="The linear evaluation protocol on frozen features; "
                       "saved under probes/.")
    _common(p)
    add_settings(p, ProbeParams, "probe settings")
    p.add_argument("--baseline", action="store_true", help="Also probe the random-init "
                   "encoder, to see what training bought.")

    p = sub.add_parser("export", help=HELP["export"],
                       description="Export the encoder (torchvision state_dict, TorchScript, "
                       "ONNX, safetensors; verified after writing, metadata JSON beside it) "
                       "or the embeddings (npy, csv).")
    _common(p)
    p.add_argument("--format", required=True, choices=("torchvision", "torchscript", "onnx",
                                                       "safetensors", "npy", "csv"))
    p.add_argument("--out", metavar="PATH", help="Output file (default: the run's exports/).")
    p.add_argument("--include-head", action="store_true", help="Also export the projection "
                   "head (encoder formats).")
    add_compare_parser(sub)
    add_curation_parsers(sub)


def add_compare_parser(sub: argparse._SubParsersAction) -> None:
    from engine.evaluate.compare import DEFAULT_TOP

    p = sub.add_parser("compare", help=HELP["compare"],
                       description="Two embeddings of the same images: --run at --checkpoint "
                       "(A) and --other at --other-checkpoint (B; by default the same run, "
                       "so `--other-checkpoint random` shows what training changed). Images "
                       "are matched by their path relative to the folder; for each, its k "
                       "nearest neighbours (exact, cosine) in A and in B, and the share they "
                       "have in common. Saved under A's curation/.")
    _common(p)
    p.add_argument("--other", metavar="RUN_DIR", help="The run of B (default: --run).")
    p.add_argument("--other-checkpoint", default=LAST, help="B's checkpoint: last "
                   "(default), epoch-NNNN, a .pt file, or random.")
    p.add_argument("--other-space", choices=("h", "z"), help="B's space (default: --space).")
    p.add_argument("-k", type=int, default=10, help="Neighbours compared (default 10).")
    _top(p, DEFAULT_TOP)
    _block(p)


def _settings_from(args: argparse.Namespace, cls: type) -> Any:
    from engine.config.settings import update

    return update(cls(), given(args, cls), where="command line")


def _print_result(args: argparse.Namespace, events: EventWriter,
                  report: TerminalReport | None, result: dict[str, Any],
                  text: Callable[[dict[str, Any]], str]) -> None:
    if args.json:
        events.emit("result", **result)
    else:
        if report is not None:
            report.end_line()
        print(text(result), flush=True)


def _pct(x: Any) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def run(args: argparse.Namespace) -> int:
    run_dir = Path(args.run)
    cache_dir = Path(args.cache_dir) if getattr(args, "cache_dir", None) else None
    events = EventWriter(sys.stdout if args.json else None)
    report = None if args.json else TerminalReport(sys.stderr)
    if report is not None:
        events.subscribe(report)
    listener = counts.throttled(lambda phase, done, total, unit: events.emit(
        "progress", phase=phase, done=done, total=total, unit=unit))
    try:
        with counts.reporting(listener):
            return _run(args, run_dir, cache_dir, events, report)
    except KeyboardInterrupt:  # Ctrl+C (or SIGINT from the app's Cancel)
        if report is not None:
            report.end_line()
        print(f"cancelled: {args.command} stopped before it finished. Nothing half-made "
              "was saved: results saved before stay, and the decoded images of a cache "
              "being built are kept (the next start resumes there).", file=sys.stderr,
              flush=True)
        return EXIT_CANCELLED
    finally:
        if report is not None:
            report.close()


def _run(args: argparse.Namespace, run_dir: Path, cache_dir: Path | None,
         events: EventWriter, report: TerminalReport | None) -> int:
    from engine.evaluate import explore

    def progress(phase: str, done: int, total: int) -> None:
        # scan, decode and embed before a verb: at most 2 events a second (run's listener)
        counts.report(phase, done, total, counts.PHASES.get(phase, ("", "", "items"))[2])

    def message(text: str, phase: str = "map") -> None:
        events.emit("progress", phase=phase, message=text)
        if report is None:  # (the report shows it)
            print(text, file=sys.stderr, flush=True)

    if args.command in ("tag", "subset"):
        result, text = (_tag if args.command == "tag" else _subset)(args, run_dir)
        _print_result(args, events, report, result, text)
        return 0
    common = {"device": args.device, "cache_dir": cache_dir}
    if args.command in ("duplicates", "outliers", "mistakes"):
        explore.embeddings(run_dir, args.checkpoint, progress=progress, **common)
        if args.command == "duplicates":
            result = explore.duplicates(run_dir, args.checkpoint, space=args.space,
                                        threshold=args.threshold,
                                        min_threshold=args.min_threshold, block=args.block,
                                        **common)
            _print_result(args, events, report, result, _duplicates_text)
        elif args.command == "outliers":
            result = explore.outliers(run_dir, args.checkpoint, space=args.space, k=args.k,
                                      typical=args.typical, top=args.top,
                                      diverse=args.diverse, seed=args.seed, block=args.block,
                                      **common)
            _print_result(args, events, report, result, _outliers_text)
        else:
            result = explore.mistakes(run_dir, args.checkpoint, space=args.space, k=args.k,
                                      temperature=args.temperature, top=args.top,
                                      block=args.block, **common)
            _print_result(args, events, report, result, _mistakes_text)
        return 0
    if args.command == "compare":
        from engine.evaluate.compare import compare

        other = Path(args.other) if args.other else run_dir
        explore.embeddings(run_dir, args.checkpoint, progress=progress, **common)
        explore.embeddings(other, args.other_checkpoint, progress=progress, **common)
        result = compare(run_dir, args.checkpoint, other, args.other_checkpoint,
                         space=args.space, other_space=args.other_space, k=args.k,
                         top=args.top, block=args.block, **common)
        _print_result(args, events, report, result, _compare_text)
        return 0
    if args.command == "embed":
        from engine.evaluate.embed import format_bytes
        from engine.training import distributed

        ctx = distributed.from_env()  # under torchrun: one shard a process, one result
        try:
            emb = explore.embeddings(run_dir, args.checkpoint, data=Path(args.data)
                                     if args.data else None, force=args.force,
                                     progress=progress, ctx=ctx,
                                     message=lambda text: message(text, "embed"), **common)
        finally:
            distributed.shutdown()
        if not ctx.is_main:
            return 0
        _print_result(args, events, report, explore.embed_summary(emb), lambda r: (
            f"{r['images']:,} images embedded with {r['checkpoint']}: h {r['h_dim']}-d, "
            f"z {r['z_dim']}-d\n  saved in {r['folder']} ({format_bytes(r['bytes'])})"))
    elif args.command == "map":
        from engine.evaluate.maps import MapParams

        params = _settings_from(args, MapParams)
        explore.embeddings(run_dir, args.checkpoint, progress=progress, **common)
        result = explore.make_map(run_dir, args.checkpoint, space=args.space, params=params,
                                  progress=message, **common)
        if args.csv:
            write_map_csv(Path(args.csv), result)
        _print_result(args, events, report, result, lambda r: (
            f"{r['params']['method']} map of {len(r['paths']):,} images ({r['checkpoint']}, "
            f"{r['space']}) in {r['seconds']:.1f} s\n  saved under {RunDir(run_dir).maps}"
            + (f"\n  coordinates in {args.csv}" if args.csv else "")))
    elif args.command == "neighbours":
        explore.embeddings(run_dir, args.checkpoint, progress=progress, **common)
        result = explore.neighbours(run_dir, args.query, args.k, checkpoint=args.checkpoint,
                                    space=args.space, **common)
        _print_result(args, events, report, result, _neighbours_text)
    elif args.command == "knn":
        checkpoints = [args.checkpoint] + ([RANDOM_INIT] if args.baseline else [])
        results = []
        for ckpt in checkpoints:
            explore.embeddings(run_dir, ckpt, progress=progress, **common)
            result = explore.knn(run_dir, ckpt, space=args.space, k=args.k,
                                 temperature=args.temperature,
                                 test_fraction=args.test_fraction, seed=args.seed, **common)
            results.append(result)
            _print_result(args, events, report, result, lambda r: (
                f"kNN top-1 {_pct(r['top1'])}"
                + (f", top-5 {_pct(r.get('top5'))}" if r.get("top5") is not None else "")
                + f" ({r['checkpoint']}, {r['space']}, k={r['k']}) on {r['test']} held-out "
                f"images\n  saved {r['path']}"))
        _print_comparison(args, results)
    elif args.command == "probe":
        from engine.evaluate.probe import ProbeParams

        params = _settings_from(args, ProbeParams)
        checkpoints = [args.checkpoint] + ([RANDOM_INIT] if args.baseline else [])
        results = []
        for ckpt in checkpoints:
            explore.embeddings(run_dir, ckpt, progress=progress, **common)
            result = explore.probe(run_dir, ckpt, space=args.space, params=params,
                                   progress=lambda done, total: counts.report(
                                       "probe", done, total, "epochs"), **common)
            results.append(result)
            _print_result(args, events, report, result, lambda r: (
                f"linear probe top-1 {_pct(r['top1'])}"
                + (f", top-5 {_pct(r.get('top5'))}" if r.get("top5") is not None else "")
                + f" ({r['checkpoint']}, {r['space']}, {_pct(r['label_fraction'])} of "
                f"labels) on {r['test']} held-out images\n  saved {r['path']}"))
        _print_comparison(args, results)
    elif args.command == "export":
        if args.format in ("npy", "csv"):
            out = Path(args.out) if args.out else explore.default_export_path(
                run_dir, args.checkpoint, args.format, args.space)
            out.parent.mkdir(parents=True, exist_ok=True)
            result = explore.export_embeddings(run_dir, out, checkpoint=args.checkpoint,
                                               space=args.space, **common)
            _print_result(args, events, report, result, lambda r: (
                f"{r['images']:,} {r['dim']}-d embeddings written to {r['path']}"))
        else:
            result = explore.export_encoder_of_run(
                run_dir, args.format, Path(args.out) if args.out else None,
                checkpoint=args.checkpoint, include_head=args.include_head)
            _print_result(args, events, report, result, lambda r: (
                f"{r['format']} export written to {r['path']}\n  metadata {r['metadata']}\n"
                f"  verified: max abs difference {r['max_abs_diff']:.2e} "
                f"(tolerance {r['tolerance']:.0e})"))
    return 0


def _print_comparison(args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    """With --baseline, for people: what training bought over the untrained encoder."""
    if args.json or len(results) != 2 or None in (results[0]["top1"], results[1]["top1"]):
        return
    trained, baseline = results
    gain = 100 * (trained["top1"] - baseline["top1"])
    print(f"{trained['checkpoint']} vs random init: {_pct(trained['top1'])} vs "
          f"{_pct(baseline['top1'])} ({gain:+.1f} points"
          + (")" if gain > 0 else ": the untrained encoder's features do as well here; "
             "train longer, or try the linear probe)"), flush=True)


def _where(item: dict[str, Any]) -> str:
    return f"#{item['index']} {item['path']}" + (f" [{item['class']}]" if item.get("class")
                                                else "")


SHOWN = 10  # rows of a ranked result printed for people


def _duplicates_text(r: dict[str, Any]) -> str:
    lines = [f"{r['group_count']:,} groups of near-duplicates among {r['images']:,} images "
             f"({r['checkpoint']}, {r['space']}, similarity >= {r['threshold']:g}): "
             f"{len(r['redundant']):,} redundant, {r['cross_class_groups']:,} across classes"
             + (f", {r['cross_split_groups']:,} across the splits {'/'.join(r['splits'])}"
                if r.get("splits") else "")]
    for n, g in enumerate(r["groups"][:SHOWN], 1):
        flag = ("  CROSS-CLASS" if g["cross_class"] else "") + (
            "  CROSS-SPLIT " + "/".join(g["splits"]) if g.get("cross_split") else "")
        lines.append(f"{n:>3}. {g['size']} images, similarity {g['min_similarity']:.4f}-"
                     f"{g['max_similarity']:.4f}{flag}: "
                     + ", ".join(_where(m) for m in g["members"][:4])
                     + (" ..." if g["size"] > 4 else ""))
    if r["group_count"] > SHOWN:
        lines.append(f"  ... {r['group_count'] - SHOWN:,} more groups")
    listed = r.get("pairs_list") or {}
    if listed.get("message"):
        lines.append(f"  {listed['message']}")
    lines.append(f"  saved {r['path']} (\"redundant\": every member but the first of each "
                 "group)")
    return "\n".join(lines)


def _outliers_text(r: dict[str, Any]) -> str:
    lines = [f"{r['order']} of {r['images']:,} images ({r['checkpoint']}, {r['space']}; "
             f"score: mean similarity to the {r['k']} nearest):"]
    lines += [f"{n:>3}. {item['score']:.4f}  {_where(item)}"
              for n, item in enumerate(r["ranked"][:SHOWN], 1)]
    if "diverse" in r:
        lines.append(f"{len(r['diverse'])} diverse images (farthest-point, seed {r['seed']}): "
                     + ", ".join(f"#{d['index']}" for d in r["diverse"][:50])
                     + (" ..." if len(r["diverse"]) > 50 else ""))
    lines.append(f"  saved {r['path']}")
    return "\n".join(lines)


def _mistakes_text(r: dict[str, Any]) -> str:
    lines = [f"{r['suspect_count']:,} of {r['images']:,} labelled images look filed in the "
             f"wrong class ({r['checkpoint']}, {r['space']}, k={r['k']}):"]
    lines += [f"{n:>3}. {100 * s['confidence']:.0f}% say {s['suggested']}: {_where(s)}"
              for n, s in enumerate(r["suspects"][:SHOWN], 1)]
    lines.append(f"  saved {r['path']}")
    return "\n".join(lines)


def _compare_text(r: dict[str, Any]) -> str:
    a, b = r["a"], r["b"]
    same = a["run"] == b["run"]
    name_b = b["checkpoint"] if same else f"{b['name']} {b['checkpoint']}"
    lines = [f"{a['checkpoint']} ({a['space']}) vs {name_b} ({b['space']}) of {a['name']}: "
             f"{r['images']:,} images in both"
             + (f" ({r['only_a']:,} only in A, {r['only_b']:,} only in B)"
                if r["only_a"] or r["only_b"] else "")
             + (f", {r['different_content']:,} left out (same path, other content)"
                if r["different_content"] else ""),
             f"mean overlap of the {r['k']} nearest neighbours: {r['mean_overlap']:.3f}; "
             + ", ".join(f"{name} {_pct(r['shares'][key])}" for key, name in (
                 ("0", "none shared"), ("<0.5", "under half"), (">=0.5", "half or more"),
                 ("1", "all shared"))),
             "most changed neighbourhoods:"]
    lines += [f"{n:>3}. {item['overlap']:.2f}  {_where(item)}"
              for n, item in enumerate(r["changed"][:SHOWN], 1)]
    lines.append(f"  saved {r['path']}")
    return "\n".join(lines)


def _tag(args: argparse.Namespace, run_dir: Path) -> tuple[dict[str, Any],
                                                           Callable[[dict[str, Any]], str]]:
    from engine.data.scan import DataError, read_image_list, scan_data
    from engine.evaluate import tags

    manifest = tags.run_manifest(run_dir)

    def refs() -> list[tags.ImageRef] | None:
        if args.paths and args.index:
            raise DataError("give the images either with --paths or with --index, not both")
        if args.paths:
            return tags.refs_for_paths(manifest, read_image_list(Path(args.paths)))
        if args.index:
            return tags.refs_for_indices(manifest, args.index)
        return None

    if args.add is not None:
        chosen = refs()
        if not chosen:
            raise DataError("--add needs the images: --paths FILE or --index I ...")
        added = tags.add_tag(run_dir, args.add, chosen)
        counts = tags.tag_counts(run_dir)
        name = tags.check_tag_name(args.add)
        return ({"action": "add", "tag": name, "given": len(chosen), "added": added,
                 "tags": counts, "path": str(RunDir(run_dir).tags)},
                lambda r: f"tagged {r['given']:,} images {r['tag']!r} ({r['added']:,} new); "
                f"{r['tags'][r['tag']]:,} images have that tag\n  saved {r['path']}")
    if args.remove is not None:
        removed = tags.remove_tag(run_dir, args.remove, refs())
        return ({"action": "remove", "tag": tags.check_tag_name(args.remove),
                 "removed": removed, "tags": tags.tag_counts(run_dir),
                 "path": str(RunDir(run_dir).tags)},
                lambda r: f"took {r['tag']!r} off {r['removed']:,} images")
    if args.list:
        where = scan_data(args.data, verify=False) if args.data else manifest
        found = tags.images_with(run_dir, args.list, where)
        images = [{"index": i, "path": where.images[i].path,
                   "class": where.classes[where.images[i].label]
                   if where.images[i].label is not None else None} for i in found]
        return ({"action": "list", "tag": tags.check_tag_name(args.list), "root": where.root,
                 "images": images},
                lambda r: f"{len(r['images']):,} images tagged {r['tag']!r} in {r['root']}:\n"
                + "\n".join(f"  {_where(i)}" for i in r["images"]))
    counts = tags.tag_counts(run_dir)
    return ({"action": "list", "tags": counts},
            lambda r: "tags: " + (", ".join(f"{k} ({v:,})" for k, v in r["tags"].items())
                                  or "none yet"))


def _subset(args: argparse.Namespace, run_dir: Path) -> tuple[dict[str, Any],
                                                              Callable[[dict[str, Any]], str]]:
    from engine.data.scan import read_image_list, scan_data
    from engine.evaluate import subset, tags

    manifest = scan_data(args.data, verify=False) if args.data else tags.run_manifest(run_dir)
    paths = read_image_list(Path(args.paths)) if args.paths else None
    chosen = subset.select(manifest, classes=args.classes, tags=args.tags,
                           exclude_tags=args.exclude_tags, paths=paths, run_dir=run_dir)
    mode, dest = next((m, getattr(args, m)) for m in subset.WRITE_MODES if getattr(args, m))
    result = subset.write_subset(manifest, chosen, Path(dest), mode)
    result["of"] = len(manifest.images)
    verb = {"copy": "copied", "link": "linked", "list": "listed"}[mode]
    return result, lambda r: (
        f"{verb} {r['images']:,} of {r['of']:,} images"
        + (" (" + ", ".join(f"{k}: {v:,}" for k, v in r["class_counts"].items() if k) + ")"
           if any(r["class_counts"]) else "") + f" to {r['path']}"
        + (f"\n  train on them: contrastive-engine train --data {r['path']}"))


def _neighbours_text(r: dict[str, Any]) -> str:
    q = r["query"]
    lines = [f"nearest neighbours of {q.get('path') or q.get('file')} ({r['checkpoint']}, "
             f"{r['space']}):"]
    for i, n in enumerate(r["neighbours"], 1):
        label = f"  [{n['class']}]" if n["class"] is not None else ""
        lines.append(f"{i:>3}. {n['score']:.4f}  #{n['index']}  {n['path']}{label}")
    return "\n".join(lines)


def write_map_csv(path: Path, result: dict[str, Any]) -> None:
    """The coordinates of a map as CSV: path, label, class, x, y (one row per image)."""
    import csv
    import io

    from engine.run.io import write_atomic

    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["path", "label", "class", "x", "y"])
    for p, label, (x, y) in zip(result["paths"], result["labels"], result["coords"].tolist()):
        name = result["classes"][label] if label >= 0 and result["classes"] else ""
        writer.writerow([p, label if label >= 0 else "", name, f"{x:.6g}", f"{y:.6g}"])
    data = text.getvalue().encode("utf-8")
    write_atomic(path, lambda f: f.write(data))
