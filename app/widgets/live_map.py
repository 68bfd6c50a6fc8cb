"""The live map: how a fixed sample of a run's images moves on a 2-D map while it trains,
played epoch by epoch.

:class:`LiveMapView` reads a run's live_map/ folder (app.model.live_map) in a worker thread,
takes the engine's ``live_map`` events while the run trains, and shows one frame at a time:
a scatter coloured by class (the Explore map's colours), an epoch slider and Play/Pause.
Between two frames the points glide from one layout to the next.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QThreadPool, QTimer, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QSlider, QVBoxLayout, QWidget

from app.child.workers import Relay, Task
from app.model.live_map import (
    LiveMapFrames,
    frame_path,
    read_frame,
    read_live_map,
    why_no_live_map,
)
from app.widgets.map_view import POINT_SIZE, UNLABELLED, class_colour

NO_RUN = "No run yet: the live map shows while a run trains."
#: Milliseconds each frame shows while playing, and the glide between two frames.
PLAY_MS, TWEEN_MS, TWEEN_STEPS = 600, 240, 8


class LiveMapView(QWidget):
    """One run's live map: a frame per evaluation, the newest shown while the run trains
    unless the person chose another with the slider (moving it back to the end follows the
    newest again).

    Signals:
        frame_shown(int): the frame now shown (its position, oldest first).
        load_failed(str): the run's live map could not be read; the message says why.
    """

    frame_shown = Signal(int)
    load_failed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.data: LiveMapFrames | None = None
        self.run_dir: Path | None = None
        #: whether new frames are shown as they come (off once the slider is moved back)
        self.follow_newest = True
        self.current = -1  # the frame shown, -1 for none
        self._generation = 0
        self._loading = False
        self._reload = False  # a frame came while loading: read again when it ends
        self._setting_slider = False
        self._brushes: list = []
        self._range = (-1.0, 1.0, -1.0, 1.0)  # the fixed view: x_min, x_max, y_min, y_max
        self._tween_from: np.ndarray | None = None
        self._tween_step = 0
        self._pool = QThreadPool.globalInstance()
        self._relay = Relay(self)
        self._relay.done.connect(self._on_loaded)
        self._relay.failed.connect(self._on_load_failed)

        self.plot = pg.PlotWidget()
        self.plot.hideAxis("left")
        self.plot.hideAxis("bottom")
        self.plot.setAspectLocked(True)
        self.plot.setMouseEnabled(False, False)  # a fixed view: the points move, not it
        self.plot.setToolTip("A fixed sample of the images on a 2-D map (PCA of h, each "
                             "frame turned to fit the one before), one frame per kNN "
                             "evaluation.")
        self.legend = self.plot.addLegend(offset=(10, 10))
        self.scatter = pg.ScatterPlotItem(size=POINT_SIZE - 2, pen=None)
        self.plot.addItem(self.scatter)
        self.caption = QLabel(NO_RUN)
        self.caption.setWordWrap(True)
        self.play_button = QPushButton("Play")
        self.play_button.setCheckable(True)
        self.play_button.setToolTip("Play the frames from the first (or from the one shown)")
        self.play_button.toggled.connect(self._on_play)
        self.slider = QSlider(Qt.Horizontal)
        self.slider.setToolTip("The frame shown: drag to go back in training; at the right "
                               "end the newest frame is shown as it comes")
        self.slider.valueChanged.connect(self._on_slider)
        self.play_timer = QTimer(self)
        self.play_timer.setInterval(PLAY_MS)
        self.play_timer.timeout.connect(self._on_play_tick)
        self.tween_timer = QTimer(self)
        self.tween_timer.setInterval(max(1, TWEEN_MS // TWEEN_STEPS))
        self.tween_timer.timeout.connect(self._on_tween_tick)

        controls = QHBoxLayout()
        controls.addWidget(self.play_button)
        controls.addWidget(self.slider, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.caption)
        layout.addWidget(self.plot, 1)
        layout.addLayout(controls)
        self._update_controls()

    # --- what is shown -------------------------------------------------------------------

    def set_run(self, run_dir: Path | None) -> None:
        """Show the live map of ``run_dir`` (None: no run), read in a worker thread."""
        self.clear(NO_RUN if run_dir is None else "Reading the live map…")
        self.run_dir = Path(run_dir) if run_dir is not None else None
        if self.run_dir is not None:
            self._load()

    def clear(self, message: str = NO_RUN) -> None:
        """Show no run (a new run is starting); answers still on their way are dropped."""
        self._generation += 1
        self._loading = self._reload = False
        self.run_dir, self.data, self.current = None, None, -1
        self.follow_newest = True
        self.play_button.setChecked(False)
        self.tween_timer.stop()
        self.scatter.clear()
        self.legend.clear()
        self.caption.setText(message)
        self._update_controls()

    def on_event(self, event: dict) -> None:
        """An engine event of the run shown: a ``live_map`` event adds its frame (other
        types are ignored), shown at once while the slider is at the newest frame."""
        if event.get("type") != "live_map" or self.run_dir is None:
            return
        epoch, step, path = event.get("epoch"), event.get("step"), event.get("path")
        if not (isinstance(epoch, int) and isinstance(step, int) and isinstance(path, str)):
            return  # reported by the run's history; nothing to show
        if self.data is None or self._loading:  # the index is written before the first frame
            if self._loading:
                self._reload = True
            else:
                self._load()
            return
        coords = read_frame(frame_path(self.run_dir, path), self.data.n)  # 16 kB at most
        if coords is None:
            return
        at = self.data.add(epoch, step, coords)
        if len(self.data) == 1:
            self._fit(self.data)
        else:
            self._extend_range(coords)
        self._update_controls()
        if self.follow_newest and not self.play_button.isChecked():
            self.show_frame(len(self.data) - 1, glide=True)
        elif at <= self.current:
            self.show_frame(self.current + 1)  # the same frame, one position later

    def show_frame(self, i: int, *, glide: bool = False) -> None:
        """Show frame ``i`` (oldest first); ``glide`` moves the points there smoothly."""
        data = self.data
        if data is None or not 0 <= i < len(data):
            return
        previous = self.shown_coords() if glide and self.current >= 0 else None
        self.current = i
        self._setting_slider = True
        self.slider.setValue(i)
        self._setting_slider = False
        self.tween_timer.stop()
        if previous is not None and previous.shape == data.coords[i].shape:
            self._tween_from, self._tween_step = previous, 0
            self.tween_timer.start()
        else:
            self._draw(data.coords[i])
        self.caption.setText(self.describe())
        self.frame_shown.emit(i)

    def current_coords(self) -> np.ndarray | None:
        """The coordinates of the frame shown (its final place, even while gliding)."""
        if self.data is None or self.current < 0:
            return None
        return self.data.coords[self.current]

    def shown_coords(self) -> np.ndarray | None:
        """The points as drawn now ((n, 2); between two frames while gliding)."""
        x, y = self.scatter.getData()
        if x is None or len(x) == 0:
            return None
        return np.column_stack([x, y])

    def describe(self) -> str:
        """The caption: "epoch 3 of 10, 2,000 images"."""
        data = self.data
        if data is None or self.current < 0:
            return self.caption.text()
        epoch = data.epochs[self.current]
        total = max(data.total_epochs or 0, data.epochs[-1])  # (a resumed run may go on)
        text = f"epoch {epoch} of {total}, {data.n:,} images"
        if len(data) > 1:
            text += f" (frame {self.current + 1} of {len(data)})"
        return text + ("" if data.has_labels else "; no labels, so no colours")

    # --- reading the run -----------------------------------------------------------------

    def _load(self) -> None:
        self._generation += 1
        self._loading, self._reload = True, False
        run_dir = self.run_dir
        self._pool.start(Task(lambda: (read_live_map(run_dir), why_no_live_map(run_dir)),
                              self._generation, self._relay))

    def _on_loaded(self, generation: int, answer: tuple[LiveMapFrames | None, str]) -> None:
        if generation != self._generation:
            return  # another run, or a newer read
        self._loading = False
        if self._reload:
            self._load()
            return
        data, note = answer
        newest = self.follow_newest or self.current < 0
        keep = min(self.current, len(data) - 1) if data is not None else -1
        self.data = data
        self._update_controls()
        if data is None or not len(data):
            self.caption.setText(note)
            if data is not None:
                self._colour(data)
            return
        self._colour(data)
        self._fit(data)
        self.show_frame(len(data) - 1 if newest else keep)

    def _on_load_failed(self, generation: int, message: str) -> None:
        if generation != self._generation:
            return
        self._loading = False
        self.caption.setText(f"The live map cannot be shown: {message}")
        self.load_failed.emit(message)

    def _colour(self, data: LiveMapFrames) -> None:
        """One brush per point (made once per run: every frame has the same images)."""
        n_classes = len(data.classes)
        brushes = {int(label): pg.mkBrush(class_colour(int(label), n_classes))
                   for label in np.unique(data.labels)}
        self._brushes = [brushes[int(label)] for label in data.labels]
        self.legend.clear()
        if data.has_labels:
            for label, name in enumerate(data.classes):
                self.legend.addItem(pg.ScatterPlotItem(
                    size=10, pen=None, brush=pg.mkBrush(class_colour(label, n_classes))), name)
            if (data.labels < 0).any():
                self.legend.addItem(pg.ScatterPlotItem(
                    size=10, pen=None, brush=pg.mkBrush(UNLABELLED)), "no label")

    def _draw(self, coords: np.ndarray) -> None:
        self.scatter.setData(pos=coords, brush=self._brushes)

    def _fit(self, data: LiveMapFrames) -> None:
        """A fixed view holding every frame, so that the points move and the view does not."""
        self._range = data.bounds()
        self._set_range()

    def _extend_range(self, coords: np.ndarray) -> None:
        """Widen the fixed view when a new frame reaches outside it."""
        (x_low, y_low), (x_high, y_high) = coords.min(axis=0), coords.max(axis=0)
        x_min, x_max, y_min, y_max = self._range
        wider = (min(x_min, float(x_low)), max(x_max, float(x_high)),
                 min(y_min, float(y_low)), max(y_max, float(y_high)))
        if wider != self._range:
            self._range = wider
            self._set_range()

    def _set_range(self) -> None:
        x_min, x_max, y_min, y_max = self._range
        self.plot.setRange(xRange=(x_min, x_max), yRange=(y_min, y_max), padding=0.05)

    # --- controls ------------------------------------------------------------------------

    def _update_controls(self) -> None:
        frames = len(self.data) if self.data is not None else 0
        self._setting_slider = True
        self.slider.setRange(0, max(frames - 1, 0))
        self._setting_slider = False
        self.slider.setEnabled(frames > 1)
        self.play_button.setEnabled(frames > 1)

    def _on_slider(self, value: int) -> None:
        if self._setting_slider or self.data is None:
            return
        self.follow_newest = value == len(self.data) - 1
        self.show_frame(value)

    def _on_play(self, on: bool) -> None:
        self.play_button.setText("Pause" if on else "Play")
        if not on:
            self.play_timer.stop()
            return
        if self.data is None or len(self.data) < 2:
            self.play_button.setChecked(False)
            return
        if self.current >= len(self.data) - 1:
            self.show_frame(0)  # from the start again
        self.follow_newest = False
        self.play_timer.start()

    def _on_play_tick(self) -> None:
        if self.data is None or self.current >= len(self.data) - 1:
            self.play_button.setChecked(False)
            self.follow_newest = True  # played to the newest frame: keep showing new ones
            return
        self.show_frame(self.current + 1, glide=True)

    def _on_tween_tick(self) -> None:
        target = self.current_coords()
        start = self._tween_from
        if target is None or start is None:
            self.tween_timer.stop()
            return
        self._tween_step += 1
        t = self._tween_step / TWEEN_STEPS
        if t >= 1:
            self.tween_timer.stop()
            self._draw(target)
            return
        t = t * t * (3 - 2 * t)  # ease in and out
        self._draw((1 - t) * start + t * target)
