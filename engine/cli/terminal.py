"""The command line's output for people: training and exploring as a terminal shows them.

:class:`TerminalReport` subscribes to an :class:`~engine.run.events.EventWriter` and draws
each event: a progress line redrawn in place (count, rate, percentage, time left) for the
scan, the decoding, the embedding, the training steps and the exploring verbs' phases (UMAP
epochs, kNN and curation blocks, probe epochs); the rate and the time left are the recent,
smoothed ones (engine.run.progress.RateEstimate), shown once a few seconds of counts exist.
A line per epoch with its loss and
kNN accuracy; warnings; and, when the run ends, a summary of what was trained, where, how
long it took, the best kNN accuracy and the commands that explore it. Rates and durations
come from the events' own times, so the same events always read the same. On a stream that
is no terminal (``live=False``) nothing is redrawn: only the lasting lines are written.

Imports no torch: the CLI builds it before anything heavy loads.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from engine.cli.text import clock, duration, next_commands, percent
from engine.run.progress import PHASES, RateEstimate, rate_text


class TerminalReport:
    """Draws events on ``stream`` for a person (see the module's docstring).

    Call it with each event (``writer.subscribe(report)``); :meth:`note` writes a line
    above the progress line; :meth:`close` ends the progress line. ``tick`` (seconds)
    redraws the progress line that often from a background thread, so its time left counts
    down between events; None draws only on events (the tests).
    """

    def __init__(self, stream: IO[str], *, live: bool | None = None, color: bool | None = None,
                 width: int | None = None, tick: float | None = 1.0) -> None:
        self.stream = stream
        self.live = _isatty(stream) if live is None else live
        if color is None:
            color = self.live and not os.environ.get("NO_COLOR") and \
                os.environ.get("TERM") != "dumb"
        self.color = color
        self._width = width
        encoding = (getattr(stream, "encoding", None) or "").lower()
        unicode = "utf" in encoding
        self._blocks = ("█", "░") if unicode else ("#", "-")
        self._sep = " · " if unicode else " | "
        self._lock = threading.RLock()
        self._line = ""  # the progress line on screen ("" when none)
        self._bar: Callable[[float], str] | None = None  # redraws it at a wall time
        self._phase: dict[str, Any] = {}  # the progress phase being drawn
        self._run: dict[str, Any] = {}  # run_start's fields
        self._first_time: float | None = None  # the time of the first event
        self._train_start: tuple[float, int] | None = None  # (time, step) of the first step
        self._steps = RateEstimate()  # the training steps' recent rate
        self._last_step: dict[str, Any] = {}
        self._epoch: dict[str, Any] | None = None  # epoch_end waiting for its eval
        self._evals: list[dict[str, Any]] = []
        self._losses: list[float] = []
        self._checkpoints = 0
        self._stopping = False
        self.ended: dict[str, Any] | None = None  # the run_end event, once seen
        self._ticker: threading.Thread | None = None
        self._closed = threading.Event()
        if tick and self.live:
            self._ticker = threading.Thread(target=self._tick, args=(tick,),
                                            name="terminal-report", daemon=True)
            self._ticker.start()

    # --- what the CLI calls

    def __call__(self, event: dict[str, Any]) -> None:
        with self._lock:
            when = event.get("time")
            if not isinstance(when, (int, float)):
                when = time.time()
            if self._first_time is None:
                self._first_time = when
            handler = getattr(self, "_on_" + str(event.get("type")), None)
            if handler is not None:
                handler(event, when)

    def note(self, message: str) -> None:
        """A lasting line above the progress line."""
        with self._lock:
            self._print(message)

    def log(self, message: str, notice: bool) -> None:
        """A line of the training log (engine.training.setup.log_to): only notices show;
        the other lines repeat events, which this report draws itself."""
        if notice:
            self.note(message)

    def status(self, text: str) -> None:
        """A passing line (e.g. "Loading PyTorch"): the next progress line replaces it."""
        with self._lock:
            self._bar = lambda now: text
            self._draw()

    @contextmanager
    def routing_warnings(self) -> Iterator[None]:
        """Python warnings (torch's, for instance) as lines above the progress line."""
        shown = warnings.showwarning

        def show(message: Warning | str, category: type[Warning], filename: str,
                 lineno: int, file: IO[str] | None = None, line: str | None = None) -> None:
            self.note(self._style(f"warning: {message} ({category.__name__}, "
                                  f"{Path(filename).name}:{lineno})", "33"))
        warnings.showwarning = show
        try:
            yield
        finally:
            warnings.showwarning = shown

    def stopping(self) -> None:
        """Say on the progress line that a stop was asked for (safe in a signal handler:
        it only sets a flag; the next redraw shows it)."""
        self._stopping = True

    def end_line(self) -> None:
        """Take the progress line off the screen (before other output on the stream)."""
        with self._lock:
            self._clear_line()
            self._bar = None

    def close(self) -> None:
        """End the progress line (it stays on screen as it was) and stop redrawing."""
        self._closed.set()
        with self._lock:
            self._flush_epoch()
            self._end_line()

    # --- events

    def _on_progress(self, e: dict[str, Any], when: float) -> None:
        phase = str(e.get("phase") or "")
        done, total = e.get("done"), e.get("total")
        if not isinstance(done, int) or not isinstance(total, int):
            if e.get("message"):
                self._print(str(e["message"]))
            return
        if self._phase.get("phase") != phase or done < self._phase.get("done", 0):
            self._clear_line()  # a passing status, or a phase that ended without saying
            self._phase = {"phase": phase, "start": when, "rate": RateEstimate()}
        p = self._phase
        p.update(done=done, total=total, time=when, message=e.get("message"))
        p["rate"].update(when, done, total)
        name = phase.capitalize() or "Working"
        title, past, unit = PHASES.get(phase, (name, name, "items"))
        unit = str(e.get("unit") or unit)
        if total and done >= total:
            seconds = when - p["start"]
            self._clear_line()
            self._bar = None
            said = f"{past} {done:,} {unit}"
            if phase == "decode" and e.get("message"):  # e.g. "reusing the decoded cache..."
                said = str(e["message"])[0].upper() + str(e["message"])[1:]
            self._print(said + (f" in {duration(seconds)}" if seconds >= 1 else ""))
            self._phase = {}
            return
        estimate: RateEstimate = p["rate"]

        def bar(now: float) -> str:
            rate = estimate.rate
            return self._progress(title, done, total, unit,
                                  rate_text(rate, unit) if rate else "", estimate.left(now),
                                  now - p["start"])
        self._bar = bar
        self._draw()

    def _on_cache_plan(self, e: dict[str, Any], when: float) -> None:
        if not e.get("reuse"):
            self._print(str(e.get("message", "")))

    def _on_warning(self, e: dict[str, Any], when: float) -> None:
        self._print(self._style(f"warning: {e.get('message', '')}", "33"))

    def _on_run_start(self, e: dict[str, Any], when: float) -> None:
        self._run = dict(e)
        cfg, data = e.get("config") or {}, e.get("dataset") or {}
        device = (e.get("device") or {}).get("name") or cfg.get("device") or "?"
        verb = "Resuming" if e.get("resumed") else "Training"
        classes = data.get("classes") or []
        images = f"{data.get('images', 0):,} images" + (
            f" in {len(classes)} classes" if classes else " (no classes: no kNN accuracy)")
        total, start = int(e.get("total_steps") or 0), int(e.get("start_step") or 0)
        per_epoch = int(e.get("steps_per_epoch") or 1)
        self._print(self._style(f"{verb} {self._what()}", "1"))
        self._print(f"  data    {data.get('root', cfg.get('data', '?'))}: {images}"
                    + (f", {data['skipped']} file(s) skipped" if data.get("skipped") else ""))
        epochs = cfg.get("epochs")
        plan = f"{epochs} epoch{'s' if epochs != 1 else ''} of {per_epoch:,} steps"
        if total != (epochs or 0) * per_epoch:
            plan += f", {total:,} steps in all"
        if start:
            plan += f", from step {start:,}"
        self._print(f"  device  {device}, batch {cfg.get('batch_size')}: {plan}")
        if e.get("init") and not start:  # (a resumed run goes on from its checkpoint)
            digest = e.get("init_sha256")
            self._print(f"  init    {e['init']}" + (f" (sha256 {digest[:12]})"
                                                    if isinstance(digest, str) else ""))
        self._print(f"  run     {e.get('run_dir')}")
        self._train_start = (when, start)
        self._steps = RateEstimate()
        self._steps.update(when, start, total)
        self._last_step = {"step": start, "epoch": start // per_epoch, "time": when}
        self._bar = self._training_bar
        self._draw()

    def _on_step(self, e: dict[str, Any], when: float) -> None:
        self._flush_epoch()
        self._last_step = {**e, "time": when}
        if isinstance(e.get("step"), int):
            self._steps.update(when, e["step"], int(self._run.get("total_steps") or 0))
        self._bar = self._training_bar
        self._draw()

    def _on_epoch_end(self, e: dict[str, Any], when: float) -> None:
        self._flush_epoch()
        self._epoch = dict(e)
        if isinstance(e.get("loss"), (int, float)):
            self._losses.append(float(e["loss"]))

    def _on_eval(self, e: dict[str, Any], when: float) -> None:
        best = max((x["knn_top1"] for x in self._evals), default=None)
        self._evals.append(dict(e))
        knn = f"kNN {percent(e.get('knn_top1'))}"
        if best is not None and e.get("knn_top1", 0) > best:
            knn += " (best so far)"
        if self._epoch is not None:
            self._flush_epoch(knn)
        else:
            self._print(f"epoch {e.get('epoch')}: {knn}")

    def _on_checkpoint(self, e: dict[str, Any], when: float) -> None:
        self._checkpoints += 1

    def _on_run_end(self, e: dict[str, Any], when: float) -> None:
        self._flush_epoch()
        self._clear_line()
        self._bar = None
        self.ended = dict(e)
        if not self._run:  # refused before it started: the CLI prints the error
            return
        status, step = e.get("status"), int(e.get("step") or 0)
        total = int(self._run.get("total_steps") or 0)
        took = duration(when - (self._first_time or when))
        run_dir = str(e.get("run_dir") or self._run.get("run_dir") or "")
        if status == "finished":
            head = self._style(f"Finished in {took}: {self._what()}", "1;32")
        elif status == "stopped":
            head = self._style(f"Stopped at step {step:,} of {total:,} after {took} "
                               "(checkpoint saved)", "1;33")
        else:
            head = self._style(f"Failed after {took}: {e.get('reason', '')}", "1;31")
        self._print("")
        self._print(head)
        epochs = (self._run.get("config") or {}).get("epochs")
        self._print(f"  trained  {step:,} steps, {e.get('epoch', 0)} of {epochs} epochs"
                    + (f", loss {self._losses[0]:.4f} -> {self._losses[-1]:.4f}"
                       if len(self._losses) > 1 else
                       f", loss {self._losses[0]:.4f}" if self._losses else ""))
        if self._evals:
            best = max(self._evals, key=lambda x: x.get("knn_top1", 0))
            first = self._evals[0]
            line = f"  best kNN {percent(best.get('knn_top1'))} at epoch {best.get('epoch')}"
            if len(self._evals) > 1:
                line += f" (epoch {first.get('epoch')}: {percent(first.get('knn_top1'))})"
            self._print(line)
        self._print(f"  run      {run_dir}")
        if status != "failed" or self._checkpoints:
            self._print("Next (--baseline compares with the untrained encoder; the app "
                        "lists the run under Runs):")
            for what, command in next_commands(run_dir, finished=status == "finished"):
                self._print(f"  {what:<8} {command}")

    # --- drawing

    def _what(self) -> str:
        cfg, data = self._run.get("config") or {}, self._run.get("dataset") or {}
        from engine.methods import METHODS

        method = cfg.get("method", "?")
        title = METHODS[method].title if method in METHODS else method
        return (f"{title}, {cfg.get('backbone')}, {cfg.get('image_size')} px, "
                f"{data.get('images', 0):,} images")

    def _training_bar(self, now: float) -> str:
        r, s = self._run, self._last_step
        total, per_epoch = int(r.get("total_steps") or 0), int(r.get("steps_per_epoch") or 1)
        epochs = (r.get("config") or {}).get("epochs")
        step = int(s.get("step") or 0)
        extra = []
        if isinstance(s.get("pairs_per_s"), (int, float)):
            extra.append(f"{s['pairs_per_s']:.1f} pairs/s")
        if isinstance(s.get("loss"), (int, float)):
            extra.append(f"loss {s['loss']:.4f}")
        assert self._train_start is not None
        t0, _ = self._train_start
        left = self._steps.left(now)
        epoch = min(step // per_epoch + 1, epochs or 1) if step < total else epochs
        title = f"epoch {epoch}/{epochs}"
        if self._stopping:
            extra.append("stopping: saving a checkpoint")
        return self._progress(title, step, total, "steps", self._sep.join(extra), left, now - t0)

    def _progress(self, title: str, done: int, total: int, unit: str, extra: str,
                  left: float | None, elapsed: float) -> str:
        fraction = min(max(done / total, 0.0), 1.0) if total > 0 else 0.0
        tail = f"{done:,}/{total:,} {unit} {100 * fraction:3.0f}%"
        if extra:
            tail += self._sep + extra
        tail += self._sep + (f"{clock(left)} left" if left is not None else clock(elapsed))
        width = self._columns()
        cells = max(10, min(30, width - len(title) - len(tail) - 4))
        full = round(fraction * cells)
        bar = self._blocks[0] * full + self._blocks[1] * (cells - full)
        return f"{title} {bar} {tail}"

    def _columns(self) -> int:
        if self._width:
            return self._width
        return shutil.get_terminal_size((100, 24)).columns

    def _draw(self, now: float | None = None) -> None:
        if not self.live or self._bar is None:
            return
        if now is None:
            now = self._last_time()
        line = self._bar(now)[: self._columns() - 1]  # never wrap: \r redraws one row
        self._write("\r" + line + ("\x1b[K" if self.color else " " * max(0, len(self._line)
                                                                         - len(line))))
        self._line = line

    def _last_time(self) -> float:
        times = [self._phase.get("time"), self._last_step.get("time")]
        return max((t for t in times if t is not None), default=time.time())

    def _tick(self, every: float) -> None:
        while not self._closed.wait(every):
            with self._lock:
                if self._line and self._bar is not None:
                    self._draw(time.time())

    def _flush_epoch(self, knn: str = "") -> None:
        e, self._epoch = self._epoch, None
        if e is None:
            return
        epochs = (self._run.get("config") or {}).get("epochs")
        parts = [f"epoch {int(e.get('epoch', 0)) + 1}/{epochs}"]
        if isinstance(e.get("loss"), (int, float)):
            parts.append(f"loss {e['loss']:.4f}")
        if knn:
            parts.append(knn)
        if isinstance(e.get("seconds"), (int, float)):
            parts.append(duration(e["seconds"]))
        self._print("  ".join(parts))

    def _style(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text

    def _clear_line(self) -> None:
        if self._line:
            self._write("\r\x1b[K" if self.color else "\r" + " " * len(self._line) + "\r")
            self._line = ""

    def _end_line(self) -> None:
        if self._line:
            self._write("\n")
            self._line = ""
        self._bar = None

    def _print(self, text: str) -> None:
        """A lasting line; the progress line is drawn again below it."""
        self._clear_line()
        self._write(text + "\n")
        self._draw()

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass  # the terminal went away: the run goes on (events.jsonl has everything)


def _isatty(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False
