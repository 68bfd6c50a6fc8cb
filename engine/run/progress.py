"""Progress of long work: who hears of it, and how fast it goes.

The algorithms (kNN, the probe, the curation's blocked similarity loops, UMAP) call
:func:`report` with a phase and a count; it does nothing unless a caller has set a listener
with :func:`reporting` (the CLI turns each report into a ``progress`` event). So their
signatures stay free of callbacks, and work run from the app's worker threads, which sets no
listener, costs a function call per block.

:class:`RateEstimate` turns a phase's counts into a rate and a time left for the terminal's
progress line (engine.cli.terminal) and the app's job row (app.widgets.job_status). The rate
is the recent one, smoothed, not the average since the start (a phase that speeds up once its
caches are warm, or slows down on larger files, soon shows its present speed), and it stays
unknown until a few seconds of counts exist.

Imports nothing heavy: the app and the CLI import it before torch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

#: The phases of ``progress`` events, for people: (title while it runs, when done, what it
#: counts unless the event says). The terminal and the app name them so.
PHASES = {"scan": ("Scanning", "Scanned", "files"), "decode": ("Decoding", "Decoded", "images"),
          "embed": ("Embedding", "Embedded", "images"),
          "probe": ("Probe", "Probe trained", "epochs"),
          "map": ("UMAP layout", "UMAP layout done:", "epochs"),
          "place": ("Placing", "Placed", "points"),
          "knn": ("kNN", "kNN queried", "images"),
          "neighbours": ("Neighbours", "Found the neighbours of", "images"),
          "duplicates": ("Duplicates", "Compared", "images"),
          "diverse": ("Diverse subset", "Chose", "images"),
          "subset": ("Writing the subset", "Wrote", "images")}

#: A listener: (phase, done, total, unit), e.g. ("knn", 4096, 20000, "images").
Listener = Callable[[str, int, int, str], None]

_listener: ContextVar[Listener | None] = ContextVar("progress_listener", default=None)


@contextmanager
def reporting(listener: Listener) -> Iterator[None]:
    """Send the :func:`report` calls made inside the block (in this thread) to
    ``listener``."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)


def report(phase: str, done: int, total: int, unit: str = "items") -> None:
    """``done`` of ``total`` ``unit`` of ``phase`` are done (nothing without a listener)."""
    listener = _listener.get()
    if listener is not None:
        listener(phase, int(done), int(total), unit)


def throttled(listener: Listener, every: float = 0.5,
              clock: Callable[[], float] = time.monotonic) -> Listener:
    """``listener`` told at most once per ``every`` seconds, except that a phase's first
    report, a new phase and the last report (done == total) always pass."""
    last_time, last_phase = -math.inf, ""

    def listen(phase: str, done: int, total: int, unit: str) -> None:
        nonlocal last_time, last_phase
        now = clock()
        if done >= total or phase != last_phase or now - last_time >= every:
            last_time, last_phase = now, phase
            listener(phase, done, total, unit)
    return listen


class RateEstimate:
    """A phase's rate (items per second) and time left from its counts over time.

    :meth:`update` takes each (time, done); the rate is an exponentially weighted mean of
    the rates between updates, each weighted by how long it lasted, with a time constant
    of ``smoothing`` seconds (so the last ~``smoothing`` seconds count most). Before
    ``warmup`` seconds of counts exist, :attr:`rate` and :meth:`left` are None. A count
    lower than the last one starts afresh (a new pass of the same phase).
    """

    def __init__(self, *, smoothing: float = 10.0, warmup: float = 3.0) -> None:
        if smoothing <= 0 or warmup < 0:
            raise ValueError("smoothing must be positive and warmup at least 0")
        self.smoothing = smoothing
        self.warmup = warmup
        self.reset()

    def reset(self) -> None:
        self._first: float | None = None  # when counting began
        self._time: float | None = None  # the last update's time
        self._done = 0
        self._total = 0
        self._rate: float | None = None  # smoothed, before the warm-up has passed too

    def update(self, when: float, done: int, total: int) -> None:
        if self._time is not None and (done < self._done or when < self._time):
            self.reset()
        if self._time is None:
            self._first, self._time, self._done, self._total = when, when, done, total
            return
        dt = when - self._time
        self._total = total
        if dt <= 0:
            self._done = max(self._done, done)
            return
        step = (done - self._done) / dt
        if self._rate is None:
            self._rate = step
        else:
            # Weight by the interval's length: a 0.5 s gap moves the mean less than 5 s.
            weight = 1.0 - math.exp(-dt / self.smoothing)
            self._rate += weight * (step - self._rate)
        self._time, self._done = when, done

    @property
    def rate(self) -> float | None:
        """Items per second lately; None until ``warmup`` seconds of counts exist."""
        if self._rate is None or self._first is None or self._time is None:
            return None
        if self._time - self._first < self.warmup:
            return None
        return self._rate

    def left(self, now: float | None = None) -> float | None:
        """Seconds left at ``now`` (default: the last update), counting down since the last
        update; None while the rate is unknown or zero."""
        rate = self.rate
        if not rate or rate <= 0 or self._time is None:
            return None
        since = 0.0 if now is None else max(0.0, now - self._time)
        return max(0.0, (self._total - self._done) / rate - since)

    def elapsed(self, now: float) -> float:
        """Seconds since counting began (0 before the first update)."""
        return 0.0 if self._first is None else max(0.0, now - self._first)


def about(seconds: float) -> str:
    """A time left as people say it: "about 40 s", "about 2 min", "about 1 h 10 min"."""
    seconds = max(0.0, seconds)
    if seconds < 55:
        return f"about {max(5, int(round(seconds / 5.0)) * 5)} s"
    minutes = int(round(seconds / 60.0))
    if minutes < 60:
        return f"about {minutes} min"
    hours, m = divmod(minutes, 60)
    return f"about {hours} h" + (f" {m:02d} min" if m else "")


def rate_text(rate: float, unit: str) -> str:
    """'1,234 images/s', '3.2 epochs/s', or for less than one a second '4.0 s/epoch'."""
    if rate >= 10:
        return f"{rate:,.0f} {unit}/s"
    if rate >= 1:
        return f"{rate:.1f} {unit}/s"
    one = unit[:-1] if unit.endswith("s") else unit
    return f"{1 / rate:.1f} s/{one}"
