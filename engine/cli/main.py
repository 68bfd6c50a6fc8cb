"""``contrastive-engine``: the headless command line of Contrastive Explorer.

``train`` and ``demo`` write their events as JSON lines on stdout (see engine.run.events;
the app reads them) when stdout is not a terminal or with ``--json``; in a terminal they
draw them for people instead (engine.cli.terminal: a progress bar, a line per epoch, a
closing summary). The run's events.jsonl is written either way. Other messages for people
go to stderr. Exit status: 0 finished or stopped, 1 the run failed, 2 bad settings or data.

Parsing and checking the settings imports no torch (a test keeps it so), so that a mistake
is refused at once rather than after seconds of imports.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from engine.cli.args import add_settings, given
from engine.cli.terminal import TerminalReport
from engine.config.settings import ConfigError
from engine.config.train_config import AugmentConfig, TrainConfig, load_config_file
from engine.data.scan import DataError, check_data
from engine.methods import DEFAULT_METHOD, METHODS

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Preset of the method, then the config file, then the flags given on the command line."""
    values: dict[str, Any] = {}
    if args.config:
        values = load_config_file(Path(args.config))
    flags = given(args, TrainConfig)
    augment = dict(values.pop("augment", {}) or {})
    augment.update(given(args, AugmentConfig))
    values.update(flags)
    if getattr(args, "data", None):
        values["data"] = str(args.data)
    if not values.get("data"):
        raise ConfigError("no image folder given: pass --data DIR (or use `contrastive-engine "
                          "demo` for the built-in demo dataset)")
    values["augment"] = augment
    return TrainConfig.from_dict(values, where=args.config or "command line")


def env_rank() -> int:
    """This process's rank under torchrun (0 alone), read without importing torch."""
    return int(os.environ.get("RANK", "0") or 0)


def terminal_mode(args: argparse.Namespace) -> bool:
    """Whether events are drawn for a person (stdout is a terminal and no --json) rather
    than written as JSON lines; only rank 0 writes either."""
    if getattr(args, "json", False) or env_rank() != 0:
        return False
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError, OSError):
        return False


class StopSignal:
    """Set by `stop` on stdin, SIGINT or SIGTERM; the trainer checks it between steps."""

    def __init__(self, on_stop: Callable[[], None] | None = None) -> None:
        self.event = threading.Event()
        self.on_stop = on_stop  # told when a stop is asked for (must be signal-safe)

    def __call__(self) -> bool:
        return self.event.is_set()

    def set(self) -> None:
        self.event.set()
        if self.on_stop is not None:
            self.on_stop()

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.set())
        threading.Thread(target=self._read_stdin, name="stdin-stop", daemon=True).start()

    def _read_stdin(self) -> None:
        try:
            for line in sys.stdin:
                if line.strip().lower() == "stop":
                    self.set()
                    return
        except (OSError, ValueError):
            pass  # no usable stdin (e.g. closed): signals still work


def _interrupting(stop: StopSignal) -> Callable[[dict[str, Any]], None]:
    """An event subscriber that ends the scan or the cache build at its next progress event
    once a stop is asked for (KeyboardInterrupt: the cache keeps what it decoded, for the
    next run to resume); the training loop itself stops between steps with a checkpoint."""
    def check(event: dict[str, Any]) -> None:
        if stop() and event.get("type") == "progress" and event.get("phase") in (
                "scan", "decode") and event.get("done") != event.get("total"):
            raise KeyboardInterrupt
    return check


def _run_training(cfg: TrainConfig | None, args: argparse.Namespace) -> int:
    report = TerminalReport(sys.stdout) if terminal_mode(args) else None
    if report is not None:
        report.status("Loading PyTorch...")
    with contextlib.ExitStack() as stack:
        if report is not None:
            stack.callback(report.close)
            stack.enter_context(report.routing_warnings())
        return _train(cfg, args, report)


def _train(cfg: TrainConfig | None, args: argparse.Namespace,
           report: TerminalReport | None) -> int:
    from engine.run.events import EventWriter
    from engine.training import distributed
    from engine.training.loop import TrainingError, train
    from engine.training.setup import log_to

    # Under torchrun every process runs this; only rank 0's stdout carries events (as JSON
    # lines, or drawn by the terminal report).
    events = EventWriter(sys.stdout if env_rank() == 0 and report is None else None)
    if report is not None:
        events.subscribe(report)
    stop = StopSignal(report.stopping if report is not None else None)
    stop.install()
    events.subscribe(_interrupting(stop))
    try:
        with log_to(report.log) if report is not None else contextlib.nullcontext():
            result = train(
                cfg if cfg is not None else TrainConfig(),
                runs_root=Path(args.runs_root) if args.runs_root else None,
                run_dir=Path(args.run_dir) if getattr(args, "run_dir", None) else None,
                resume=Path(args.resume) if getattr(args, "resume", None) else None,
                cache_dir=Path(args.cache_dir) if args.cache_dir else None,
                events=events, should_stop=stop,
                resume_overrides=(given(args, TrainConfig) if getattr(args, "resume", None)
                                  else None))
    except KeyboardInterrupt:  # a stop asked for while scanning or decoding (_interrupting)
        if report is not None:
            report.end_line()
        reason = ("stopped before training began, while scanning or decoding the images; "
                  "the images decoded so far are kept and the next run resumes there")
        events.emit("run_end", status="stopped", reason=reason, step=0, epoch=0)
        if env_rank() == 0:
            print(f"stopped: {reason}", file=sys.stderr)
        return EXIT_OK
    except (ConfigError, DataError, TrainingError) as exc:
        events.emit("run_end", status="failed", reason=str(exc), step=0, epoch=0)
        if report is not None:
            report.close()
        if env_rank() == 0:  # every process fails alike: one message is enough
            print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # a bug or an unforeseen failure: say so, keep the traceback
        import traceback

        if report is not None:
            report.close()
        traceback.print_exc(file=sys.stderr)
        events.emit("run_end", status="failed", reason=f"internal error: {type(exc).__name__}: "
                    f"{exc}. The last checkpoint, if any, is kept; the log above has details")
        return EXIT_FAILED
    finally:
        events.close()
        distributed.shutdown()
    return EXIT_OK if result.status in ("finished", "stopped") else EXIT_FAILED


def _common_paths(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs-root", metavar="DIR", help="Folder holding one sub-folder per run "
                   "(default: $CONTRASTIVE_EXPLORER_RUNS or ~/.local/share/"
                   "contrastive-explorer/runs).")
    p.add_argument("--cache-dir", metavar="DIR", help="Where decoded images are cached "
                   "(default: $CONTRASTIVE_EXPLORER_CACHE or ~/.cache/contrastive-explorer).")


def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="Write the events as JSON lines on "
                   "stdout even in a terminal (they are whenever stdout is not a terminal).")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every verb. The exploring verbs' own flags come from settings classes
    that import torch, so they are added only when ``command`` is one of them or None (an
    unknown first word); for the others those verbs are listed by name and help alone."""
    titles = [spec.title for spec in METHODS.values()]
    parser = argparse.ArgumentParser(
        prog="contrastive-engine",
        description=f"Train and evaluate contrastive image representations ({', '.join(titles)}) "
        "on a local image folder. In a terminal, training shows a progress bar, a line per "
        "epoch and a summary; otherwise (or with --json) its events are written to stdout as "
        "JSON lines.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = sub.add_parser(
        "train", help=f"train {' or '.join(titles)} on an image folder",
        description="Train on an image folder. Settings come from the method's preset, then "
        "--config, then the flags below. Write `stop` on stdin (or send SIGINT/SIGTERM) to "
        "checkpoint and stop; --resume RUN_DIR goes on from there.")
    train.add_argument("--data", metavar="DIR|LIST", help="Image folder (class sub-folders "
                       "give labels; a flat folder has none), or a .txt/.csv list of images "
                       "(labels from their class folders under the listed files' common "
                       "folder; the run keeps a copy of the list).")
    train.add_argument("--config", metavar="FILE", help="JSON file of settings, e.g. a run's "
                       "config.json.")
    train.add_argument("--run-dir", metavar="DIR", help="Write the run into this folder "
                       "instead of a new one under --runs-root.")
    train.add_argument("--resume", metavar="RUN_DIR", help="Continue the run in RUN_DIR from "
                       "its last checkpoint with its saved settings; --epochs, --max-steps, "
                       "--log-every, --keep-every, --device, --num-threads and --compile may "
                       "be changed.")
    _common_paths(train)
    _json_flag(train)
    add_settings(train, TrainConfig, "training settings")
    add_settings(train, AugmentConfig, "augmentation settings")

    demo = sub.add_parser(
        "demo", help="a short training run on the built-in demo dataset (handwritten digits)",
        description="Materialise the demo dataset (scikit-learn's 1,797 handwritten digits, "
        "offline, 10 labelled classes) and train on it briefly.")
    demo.add_argument("--method", default=DEFAULT_METHOD, choices=tuple(METHODS))
    demo.add_argument("--epochs", type=int, default=10)
    demo.add_argument("--max-steps", type=int, default=None)
    demo.add_argument("--device", default="auto")
    _common_paths(demo)
    _json_flag(demo)

    data = sub.add_parser("data", help="print the demo dataset's folder, creating it if needed")
    data.add_argument("which", choices=("demo",))

    bench = sub.add_parser(
        "bench", help="this machine's training speed for a few configurations (~1 minute)",
        description="Time training steps (SimCLR's, or --method's) on random images for a "
        "few backbones, image "
        "sizes and batches that suit the device, and print pairs per second, FLOPs per pair "
        "and (GPU) peak memory, with the time an epoch of 10,000 images would take.")
    bench.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N.")
    bench.add_argument("--seconds", type=float, default=50.0, help="Time budget for all "
                       "configurations together (default 50; each gets at least one step).")
    bench.add_argument("--method", default=DEFAULT_METHOD, choices=tuple(METHODS),
                       help=f"The method whose steps are timed (default {DEFAULT_METHOD}).")
    bench.add_argument("--json", action="store_true", help="One JSON result on stdout.")
    plan = sub.add_parser(
        "plan", help="what a run on a folder will take here, and the settings that fit a time",
        description="Scan the folder, resolve the settings as train does, and report the "
        "decoded cache's size and the free space, the decoding time, the time per epoch "
        "(training steps timed here on random images), the peak memory and the whole run's "
        "time. With --time, time a few backbones and image sizes and choose the settings "
        "that fit, with the reason for each.")
    plan.add_argument("--data", metavar="DIR|LIST", required=True, help="Image folder or "
                      ".txt/.csv list, as for train.")
    plan.add_argument("--config", metavar="FILE", help="JSON file of settings.")
    plan.add_argument("--time", metavar="DURATION", help="The time you have for the run: "
                      "1h, 90m, 1h30m, 45s (a plain number is minutes).")
    plan.add_argument("--seconds", type=float, default=20.0, help="Seconds of timed training "
                      "steps in all (default 20; shared by the candidates with --time).")
    plan.add_argument("--cache-dir", metavar="DIR", help="Where decoded images are cached "
                      "(default: $CONTRASTIVE_EXPLORER_CACHE or ~/.cache/contrastive-explorer).")
    plan.add_argument("--json", action="store_true", help="One JSON result on stdout.")
    add_settings(plan, TrainConfig, "training settings")
    add_settings(plan, AugmentConfig, "augmentation settings")
    from engine.cli.explore import VERBS, add_parsers, add_verb_names

    if command is None or command in VERBS:
        add_parsers(sub)
    else:
        add_verb_names(sub)
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The verb in ``argv`` (its first word that is no option), or None."""
    return next((a for a in argv if not a.startswith("-")), None)


def _run_explore(run: Any, args: argparse.Namespace) -> int:
    """Run an exploring verb; a problem the user can fix exits 2 with its message."""
    from engine.evaluate.embed import RunError
    from engine.export import ExportError

    try:
        return run(args)
    except ExportError as exc:
        failed_check = exc.result is not None
        _report_error(args, str(exc))
        return EXIT_FAILED if failed_check else EXIT_USAGE
    except (ConfigError, DataError, RunError, ValueError) as exc:
        _report_error(args, str(exc))
        return EXIT_USAGE


def _run_bench(args: argparse.Namespace) -> int:
    from engine.run.events import EventWriter
    from engine.training.bench import run_bench, summary

    if args.seconds <= 0:
        raise ConfigError(f"--seconds must be positive; got {args.seconds:g}")
    report = (lambda line: print(line, file=sys.stderr)) if args.json else print
    results = run_bench(args.device, args.seconds, report=report, method=args.method)
    if args.json:
        EventWriter(sys.stdout).emit("result", **summary(results))
    return EXIT_OK


def _run_plan(args: argparse.Namespace) -> int:
    from engine.config.locations import user_cache_dir
    from engine.run.events import EventWriter
    from engine.training.plan import parse_duration, plan_run, plan_text

    if args.seconds <= 0:
        raise ConfigError(f"--seconds must be positive; got {args.seconds:g}")
    budget = parse_duration(args.time) if args.time else None
    cfg = config_from_args(args)
    check_data(cfg.data)
    result = plan_run(cfg, cache_dir=Path(args.cache_dir) if args.cache_dir else
                      user_cache_dir(), budget_s=budget, seconds=args.seconds,
                      report=lambda line: print(line, file=sys.stderr))
    if args.json:
        EventWriter(sys.stdout).emit("result", **result)
    else:
        print(plan_text(result))
    return EXIT_OK


def _report_error(args: argparse.Namespace, message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        from engine.run.events import EventWriter

        EventWriter(sys.stdout).emit("error", message=message)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command_of(argv)
    parser = build_parser(command if command in ("train", "demo", "data", "bench", "plan")
                          else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        if args.command == "train":
            if args.resume:
                return _run_training(None, args)
            cfg = config_from_args(args)
            check_data(cfg.data)  # a missing folder is refused before torch loads
            return _run_training(cfg, args)
        if args.command == "demo":
            from engine.data.demo import DEMO_SETTINGS, demo_dataset

            folder = demo_dataset()
            print(f"demo dataset: {folder}", file=sys.stderr)
            cfg = TrainConfig.from_dict({
                **DEMO_SETTINGS, "data": str(folder), "method": args.method,
                "epochs": args.epochs, "max_steps": args.max_steps, "device": args.device,
                "log_every": 5})
            return _run_training(cfg, args)
        if args.command == "bench":
            return _run_bench(args)
        if args.command == "plan":
            return _run_plan(args)
        if args.command == "data":
            from engine.data.demo import demo_dataset

            print(demo_dataset())
            return EXIT_OK
        from engine.cli.explore import VERBS, run

        if args.command in VERBS:
            return _run_explore(run, args)
    except (ConfigError, DataError) as exc:
        if env_rank() != 0:  # under torchrun every process fails alike; rank 0 says why
            return EXIT_USAGE
        if args.command in ("train", "demo") and not terminal_mode(args):  # events on stdout
            from engine.run.events import EventWriter

            EventWriter(sys.stdout).emit("run_end", status="failed", reason=str(exc),
                                         step=0, epoch=0)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
