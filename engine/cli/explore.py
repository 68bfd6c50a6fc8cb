"""The exploring verbs of ``contrastive-engine``: embed, map, neighbours, knn, probe, export.

Each takes ``--run RUN_DIR`` and a checkpoint. With ``--json`` stdout carries JSON lines:
progress events, then one ``result`` event (engine.run.schema); without it, the result is
printed for people on stdout, and the progress on stderr (a progress bar in a terminal,
engine.cli.terminal; a line per finished phase otherwise).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.cli.args import add_settings, given
from engine.cli.terminal import TerminalReport
from engine.run.events import EventWriter
from engine.run.layout import LAST, RANDOM_INIT, RunDir

VERBS = ("embed", "map", "neighbours", "knn", "probe", "export")
HELP = {
    "embed": "embed every image with a checkpoint's encoder (h and z)",
    "map": "2-D map of the embeddings (UMAP or PCA)",
    "neighbours": "nearest neighbours of an image",
    "knn": "weighted kNN accuracy against the folder's labels",
    "probe": "linear probe (frozen encoder, one linear layer)",
    "export": "export the encoder or the embeddings",
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
    cache_dir = Path(args.cache_dir) if args.cache_dir else None
    events = EventWriter(sys.stdout if args.json else None)
    report = None if args.json else TerminalReport(sys.stderr)
    if report is not None:
        events.subscribe(report)
    try:
        return _run(args, run_dir, cache_dir, events, report)
    finally:
        if report is not None:
            report.close()


def _run(args: argparse.Namespace, run_dir: Path, cache_dir: Path | None,
         events: EventWriter, report: TerminalReport | None) -> int:
    from engine.evaluate import explore

    def progress(phase: str, done: int, total: int) -> None:
        events.emit("progress", phase=phase, done=done, total=total)

    def message(text: str) -> None:
        events.emit("progress", phase="map", message=text)
        if report is None:  # (the report shows it)
            print(text, file=sys.stderr, flush=True)

    common = {"device": args.device, "cache_dir": cache_dir}
    if args.command == "embed":
        emb = explore.embeddings(run_dir, args.checkpoint, data=Path(args.data) if args.data
                                 else None, force=args.force, progress=progress, **common)
        _print_result(args, events, report, explore.embed_summary(emb), lambda r: (
            f"{r['images']:,} images embedded with {r['checkpoint']}: h {r['h_dim']}-d, "
            f"z {r['z_dim']}-d\n  saved in {r['folder']}"))
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
            result = explore.probe(run_dir, ckpt, space=args.space, params=params, **common)
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
