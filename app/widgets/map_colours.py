"""What the map's points are coloured by: a :class:`Colouring` is either categorical (a code
per image: its class, tag or sub-folder) or a continuous score (a value per image, shown
with a perceptual colormap), and knows its palette and legend.

The map draws a colouring as a small palette of colours and one palette index per point,
so 100,000 points are recoloured with numpy, never one brush per point in Python.
:class:`ColourByBox` is the combo box a page fills with the colourings it offers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QComboBox, QWidget

from app.model.explore_data import MapData

#: Class colours (a qualitative palette that stays readable on light and dark backgrounds);
#: beyond ten classes the hues are spread evenly.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#7f7f7f")
UNLABELLED = "#9a9a9a"
#: A score is shown in this many steps of its colormap (perceptually uniform, so the
#: steps read as equal differences of the score).
SCORE_BINS = 64
SCORE_COLORMAP = "viridis"
#: The legend names at most this many categories (then says how many more there are).
LEGEND_ENTRIES = 20


def class_colour(label: int, n_classes: int) -> QColor:
    """The colour of category ``label`` of ``n_classes`` (grey for -1, none)."""
    if label < 0:
        return QColor(UNLABELLED)
    if n_classes <= len(PALETTE):
        return QColor(PALETTE[label])
    return pg.intColor(label, hues=n_classes)


def score_colours(bins: int = SCORE_BINS) -> list[QColor]:
    """``bins`` colours of the score colormap, from the lowest score to the highest."""
    cmap = pg.colormap.get(SCORE_COLORMAP)
    return list(cmap.map(np.linspace(0.0, 1.0, bins), mode="qcolor"))


@dataclass
class Colouring:
    """How to colour the map's points: ``codes`` (an int per image, -1 = none, naming
    ``names[code]``) for a categorical colouring, or ``values`` (a float per image, NaN =
    none) for a continuous score; ``name`` says what it is ("class", "tag", a score's
    name) and ``none_name`` what grey points mean in the legend."""

    name: str
    codes: np.ndarray | None = None
    names: list[str] = field(default_factory=list)
    values: np.ndarray | None = None
    none_name: str = "none"

    def __post_init__(self) -> None:
        if (self.codes is None) == (self.values is None):
            raise ValueError(f"colouring {self.name!r} needs either codes (categories) or "
                             "values (a score), not both or neither")
        if self.codes is not None:
            self.codes = np.asarray(self.codes, dtype=np.int64).ravel()
            if len(self.codes) and (self.codes.max() >= len(self.names)
                                    or self.codes.min() < -1):
                raise ValueError(f"colouring {self.name!r} has codes outside -1.."
                                 f"{len(self.names) - 1} (one name per code)")
        else:
            self.values = np.asarray(self.values, dtype=np.float64).ravel()

    def __len__(self) -> int:
        return len(self.codes if self.codes is not None else self.values)

    @property
    def continuous(self) -> bool:
        return self.values is not None

    def value_range(self) -> tuple[float, float] | None:
        """(lowest, highest) finite score, or None (categorical, or no finite score)."""
        if self.values is None:
            return None
        finite = self.values[np.isfinite(self.values)]
        return (float(finite.min()), float(finite.max())) if len(finite) else None

    def colours(self) -> tuple[list[QColor], np.ndarray]:
        """The palette (its last colour is the grey of "none") and each point's index into
        it (intp, one per image)."""
        grey = QColor(UNLABELLED)
        if self.codes is not None:
            n = len(self.names)
            palette = [class_colour(k, n) for k in range(n)] + [grey]
            return palette, np.where(self.codes >= 0, self.codes, n).astype(np.intp)
        palette = score_colours() + [grey]
        index = np.full(len(self.values), SCORE_BINS, np.intp)
        span = self.value_range()
        if span is not None:
            finite = np.isfinite(self.values)
            low, high = span
            scaled = (self.values[finite] - low) / (high - low) if high > low else 0.5
            index[finite] = np.clip(np.floor(np.asarray(scaled) * SCORE_BINS), 0,
                                    SCORE_BINS - 1).astype(np.intp)
        return palette, index

    def legend(self) -> list[tuple[QColor | None, str]]:
        """The legend's entries, (colour, text); a colour of None is a line of text only."""
        grey = QColor(UNLABELLED)
        if self.codes is not None:
            if not self.names:
                return []  # nothing to tell apart: all grey, no legend
            n = len(self.names)
            entries: list[tuple[QColor | None, str]] = [
                (class_colour(k, n), name) for k, name in enumerate(self.names[:LEGEND_ENTRIES])]
            if n > LEGEND_ENTRIES:
                entries.append((None, f"… and {n - LEGEND_ENTRIES:,} more"))
            if (self.codes < 0).any():
                entries.append((grey, self.none_name))
            return entries
        span = self.value_range()
        if span is None:
            return [(grey, f"{self.name}: {self.none_name}")]
        colours = score_colours()
        entries = [(colours[-1], f"{self.name}: high {span[1]:.3g}"),
                   (colours[SCORE_BINS // 2], "middle"),
                   (colours[0], f"low {span[0]:.3g}")]
        if np.isnan(self.values).any():
            entries.append((grey, self.none_name))
        return entries


def by_class(data: MapData) -> Colouring:
    """Each image's class (grey without a label; all grey when the run has no labels)."""
    if not data.has_labels:
        return Colouring("class", codes=np.full(len(data), -1, np.int64), none_name="no label")
    return Colouring("class", codes=data.labels, names=list(data.classes), none_name="no label")


def by_subfolder(data: MapData) -> Colouring:
    """The first folder of each image's path under the root ("train", "test", or the class
    folder); images at the root itself are grey."""
    seen: dict[str, int] = {"": -1}  # "": an image at the root itself
    first_seen = np.fromiter(
        (seen.setdefault(p.replace("\\", "/").partition("/")[0] if "/" in p
                         or "\\" in p else "", len(seen) - 1) for p in data.paths),
        np.int64, len(data))
    names = sorted(name for name in seen if name)
    rank = np.full(len(seen), -1, np.int64)  # order seen -> order of the names
    for code, name in enumerate(names):
        rank[seen[name]] = code
    codes = np.where(first_seen >= 0, rank[first_seen], -1)
    return Colouring("sub-folder", codes=codes, names=[f"{n}/" for n in names],
                     none_name="(top folder)")


def by_tags(data: MapData, tags: Mapping[str, np.ndarray]) -> Colouring:
    """Each image's tag (``tags``: name -> image indices); an image with several tags shows
    the first in name order, an untagged one is grey."""
    names = sorted(tags)
    codes = np.full(len(data), -1, np.int64)
    for code in range(len(names) - 1, -1, -1):  # the first name is written last: it wins
        indices = np.asarray(tags[names[code]], dtype=np.int64).ravel()
        if len(indices) and (indices.min() < 0 or indices.max() >= len(data)):
            raise ValueError(f"tag {names[code]!r} names images outside this map (it has "
                             f"{len(data):,}); it was made for another run or folder")
        codes[indices] = code
    return Colouring("tag", codes=codes, names=names, none_name="untagged")


def by_score(name: str, values: np.ndarray) -> Colouring:
    """A score per image (``values``; NaN where it has none), coloured low to high."""
    return Colouring(name, values=np.asarray(values, dtype=np.float64), none_name="no score")


class ColourByBox(QComboBox):
    """Chooses what the map is coloured by among the entries a page gives it: a name and a
    function making that :class:`Colouring` (called when chosen, so it is always current).

    Signals:
        colouring_chosen(object): the Colouring of the entry chosen.
        failed(str): the chosen entry could not be made; the message says why.
    """

    colouring_chosen = Signal(object)
    failed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._makers: dict[str, Callable[[], Colouring]] = {}
        self.setToolTip("What the map's points are coloured by.")
        self.currentIndexChanged.connect(lambda _: self._emit())

    def set_entries(self, entries: Mapping[str, Callable[[], Colouring]]) -> None:
        """List ``entries`` (name -> maker, in order), keeping the current choice when it is
        still listed (without emitting); otherwise the first entry is chosen and emitted."""
        current = self.currentText()
        self._makers = dict(entries)
        self.blockSignals(True)
        try:
            self.clear()
            self.addItems(list(self._makers))
            keep = self.findText(current)
            self.setCurrentIndex(keep if keep >= 0 else 0 if self._makers else -1)
        finally:
            self.blockSignals(False)
        if self._makers and self.findText(current) < 0:
            self._emit()

    def choose(self, name: str) -> None:
        """Choose the entry ``name`` (and emit its colouring)."""
        index = self.findText(name)
        if index < 0:
            raise ValueError(f"no colouring {name!r}; there are: {', '.join(self._makers)}")
        if index == self.currentIndex():
            self._emit()
        else:
            self.setCurrentIndex(index)

    def _emit(self) -> None:
        maker = self._makers.get(self.currentText())
        if maker is None:
            return
        try:
            colouring = maker()
        except (ValueError, OSError) as exc:
            self.failed.emit(f"The map cannot be coloured by {self.currentText()}: {exc}")
        else:
            self.colouring_chosen.emit(colouring)
