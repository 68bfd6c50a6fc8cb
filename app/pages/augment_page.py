"""The augmentation preview: the positive pairs the current settings make, refreshed as the
settings change.

Every view is made by exactly :func:`engine.data.augment.make_pairs` (``normalize=False``) from the
images decoded as the trainer's cache decodes them, with a CPU generator seeded with the
preview's seed, so what a person sees here is what the trainer gets for that seed.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PySide6.QtCore import QThreadPool, QTimer, Signal
from PySide6.QtGui import QImage
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.child.workers import Relay, Task
from app.widgets.pair_grid import PairGrid
from app.widgets.settings_form import SettingsForm
from engine.config.train_config import AugmentConfig, TrainConfig, augment_preset
from engine.data.augment import make_pairs, to_uint8_hwc
from engine.data.cache import BadImage, decode_image
from engine.data.scan import Manifest, scan_folder
from engine.methods import DEFAULT_METHOD, METHODS

#: Preset names shown, and the method whose augmentation preset each one is.
PRESETS = {spec.title: name for name, spec in METHODS.items()}


# --- plain work, run in a worker thread -------------------------------------------------------

def cache_size_for(image_size: int) -> int:
    """The decoded image side for views of ``image_size``: 8/7 of it, as the trainer's
    automatic cache_size (e.g. 256 for 224)."""
    return round(image_size * 8 / 7)


def spread(paths_by_class: Sequence[Sequence[str]], n: int) -> list[str]:
    """Up to ``n`` paths spread over the classes (taken in turn) and, within each class,
    evenly over its sorted list."""
    classes = [sorted(p) for p in paths_by_class if p]
    if not classes:
        return []
    counts = [0] * len(classes)
    total = min(n, sum(len(c) for c in classes))
    i = 0
    while sum(counts) < total:  # classes in turn, skipping the exhausted ones
        if counts[i] < len(classes[i]):
            counts[i] += 1
        i = (i + 1) % len(classes)
    picked = []
    for paths, k in zip(classes, counts):
        picked += [paths[j] for j in np.linspace(0, len(paths) - 1, k).round().astype(int)]
    return picked


def pick_images(folder: str | Path | Manifest, n: int) -> list[str]:
    """Up to ``n`` image paths of ``folder`` (scanned here), or of a scan's manifest, spread
    over its classes."""
    manifest = folder if isinstance(folder, Manifest) else scan_folder(folder)
    by_class: dict[int | None, list[str]] = {}
    for record in manifest.images:  # relative paths: joined below, only for those picked
        by_class.setdefault(record.label, []).append(record.path)
    root = Path(manifest.root)
    return [str(root / path) for path in spread(list(by_class.values()), n)]


def folder_count(manifest: Manifest) -> str:
    """"2,624 images in the folder (3 files skipped: see the Data page)": the scan's count,
    worded the same on every page."""
    n, skipped = len(manifest.images), len(manifest.skipped)
    text = f"{n:,} {'image' if n == 1 else 'images'} in the folder"
    if skipped:
        text += f" ({skipped:,} {'file' if skipped == 1 else 'files'} skipped: see the Data page)"
    return text


def decode_images(paths: Sequence[str], size: int, max_pixels: int
                  ) -> tuple[list[str], np.ndarray, list[str]]:
    """Decode ``paths`` as the cache does -> (paths kept, uint8 (N, size, size, 3), one
    "name: reason" line per image that could not be used)."""
    kept, images, problems = [], [], []
    for path in paths:
        try:
            images.append(decode_image(path, size, max_pixels=max_pixels))
            kept.append(path)
        except BadImage as exc:
            problems.append(f"{Path(path).name}: {exc}")
    array = np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)
    return kept, array, problems


def preview_pairs(images: np.ndarray, cfg: AugmentConfig, size: int, seed: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The two views of every image of uint8 (N, H, W, 3) ``images``, as uint8 (N, size,
    size, 3): make_pairs with a CPU generator seeded with ``seed``."""
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # N x 3 x H x W
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        view1, view2 = make_pairs(batch, cfg, size, generator, normalize=False)
    return to_uint8_hwc(view1), to_uint8_hwc(view2)


# --- the page ---------------------------------------------------------------------------------

class AugmentPreview(QWidget):
    """Original | view 1 | view 2 for a few images of a folder, under editable augmentation
    settings and a seed.

    The size of the views is the trainer's image_size, one setting: :meth:`show_image_size`
    shows the Train page's value here, and a person's change here is sent back to it
    (``image_size_edited``).

    Signals:
        pairs_ready(): the grid now shows pairs made with the current settings and seed.
        image_size_edited(int): a person set the size of the views here.
    """

    pairs_ready = Signal()
    image_size_edited = Signal(int)

    def __init__(self, num_images: int = 8, image_size: int = 64, cell_px: int = 128,
                 seed: int = 0, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.num_images = num_images
        self.seed = seed
        self._max_pixels = TrainConfig().max_image_pixels
        self._paths: list[str] = []
        self._folder: str | None = None  # the folder the images come from, if one
        #: The scan of that folder (the Data page's): its count and skipped files are shown.
        self.manifest: Manifest | None = None
        #: cache size, paths kept, their decoded images, the files skipped and why
        self._decoded: tuple[int, list[str], np.ndarray, list[str]] | None = None
        self._pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._shown_paths: list[str] = []
        self._generation = 0  # of pair requests: older results are dropped
        self._folder_generation = 0
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)  # one request at a time; queued stale ones are cleared
        self._made = Relay(self)
        self._made.done.connect(self._on_made)
        self._made.failed.connect(
            lambda g, text: self._fail(text) if g == self._generation else None)
        self._listed = Relay(self)
        self._listed.done.connect(self._on_listed)
        self._listed.failed.connect(
            lambda g, text: self._fail(text) if g == self._folder_generation else None)
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(100)
        self._debounce.timeout.connect(self._start_request)

        self.preset = QComboBox()
        self.preset.addItems(list(PRESETS))
        self.preset.setToolTip("Start from a method's augmentation preset")
        self.preset.currentTextChanged.connect(self._on_preset)
        self.size_box = QSpinBox()
        self.size_box.setRange(16, 512)
        self.size_box.setValue(image_size)
        self.size_box.setSuffix(" px")
        self.size_box.setToolTip("Side of the views: the trainer's image_size (the Train "
                                 "page's image size; changing one changes the other)")
        self._showing_size = False  # set programmatically: not a person's edit
        self.size_box.valueChanged.connect(self._on_size_changed)
        self.form = SettingsForm(augment_preset(DEFAULT_METHOD))
        self.form.changed.connect(self._on_settings_changed)
        self.form.validity_changed.connect(lambda ok: self._on_settings_changed())
        self.new_button = QPushButton("New pairs")
        self.new_button.setToolTip("Draw new random augmentations (a new seed)")
        self.new_button.clicked.connect(self.new_pairs)
        self.save_button = QPushButton("Save PNG…")
        self.save_button.setToolTip("Save the grid as one PNG image")
        self.save_button.clicked.connect(self._on_save)
        self.status = QLabel("Choose an image folder to preview its positive pairs.")
        self.status.setWordWrap(True)
        self.grid = PairGrid(cell_px)

        controls = QWidget()
        left = QVBoxLayout(controls)
        row = QHBoxLayout()
        row.addWidget(QLabel("Preset"))
        row.addWidget(self.preset, 1)
        row.addWidget(QLabel("Size"))
        row.addWidget(self.size_box)
        left.addLayout(row)
        form_scroll = QScrollArea()
        form_scroll.setWidget(self.form)
        form_scroll.setWidgetResizable(True)
        left.addWidget(form_scroll, 1)
        buttons = QHBoxLayout()
        buttons.addWidget(self.new_button)
        buttons.addWidget(self.save_button)
        left.addLayout(buttons)
        body = QSplitter()
        body.addWidget(controls)
        body.addWidget(self.grid)
        body.setSizes([320, 3 * cell_px + 60])
        layout = QVBoxLayout(self)
        layout.addWidget(body, 1)
        layout.addWidget(self.status)
        self._update_buttons()

    # --- inputs ----------------------------------------------------------------------------

    def set_folder(self, folder: str | Path) -> None:
        """Preview up to ``num_images`` images of ``folder``, spread over its classes (the
        folder is scanned in a worker thread)."""
        self._folder_generation += 1
        self._folder = str(folder)
        self.manifest = None
        self._say(f"Reading {folder}…")
        self._pool.start(Task(lambda: pick_images(folder, self.num_images),
                               self._folder_generation, self._listed))

    def set_manifest(self, manifest: Manifest) -> None:
        """Preview images of a scanned folder (the Data page's scan: the same images and
        skipped files, no second scan); the status line gives its count."""
        self._folder_generation += 1
        self._folder = str(manifest.root)
        self.manifest = manifest
        self._on_listed(self._folder_generation, pick_images(manifest, self.num_images))

    def set_images(self, paths: Sequence[str | Path]) -> None:
        """Preview these image files (the first ``num_images``)."""
        self._folder_generation += 1  # a folder still being read must not replace them
        self._folder = None
        self.manifest = None
        self._paths = [str(p) for p in paths][:self.num_images]
        self._decoded = None
        self.refresh()

    def set_seed(self, seed: int) -> None:
        self.seed = int(seed)
        self.refresh()

    def new_pairs(self) -> None:
        """New random augmentations of the same images: a new seed."""
        self.set_seed(random.randrange(2**31))

    def image_size(self) -> int:
        return self.size_box.value()

    def show_image_size(self, size: int, auto: bool = False) -> None:
        """Show the trainer's image size (``auto``: the device's automatic choice)."""
        self._showing_size = True
        try:
            self.size_box.setSuffix(" px (auto)" if auto else " px")
            self.size_box.setValue(int(size))
        finally:
            self._showing_size = False

    def _on_size_changed(self, size: int) -> None:
        if not self._showing_size:
            self.size_box.setSuffix(" px")
            self.image_size_edited.emit(size)
        self.refresh()

    def augment_config(self) -> AugmentConfig:
        """The last valid augmentation settings of the form."""
        return self.form.values()

    def engine_settings(self) -> dict[str, Any]:
        """The settings shown that the engine takes as flags (``train --flip-p ...``), for
        a trainer to get exactly the augmentations previewed here."""
        cfg = self.augment_config()
        return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
                if f.metadata and f.metadata["cli"] and getattr(cfg, f.name) is not None}

    def apply_settings(self, values: dict[str, Any]) -> None:
        """Show training settings' "augment" mapping and image_size (e.g. the demo's, or a
        run's whole configuration: the settings this page does not edit are left out)."""
        for name, value in (values.get("augment") or {}).items():
            if self.form.has(name):
                self.form.set_value(name, value)
        if values.get("image_size"):
            self.size_box.setValue(int(values["image_size"]))

    def refresh(self) -> None:
        """Make new pairs with the current settings and seed, 100 ms after the last call.

        Any result still on its way from an earlier request is dropped from now on.
        """
        self._generation += 1
        if not self.form.is_valid():
            self._debounce.stop()
            self._say_invalid()
            return
        if self._paths:
            self._debounce.start()

    # --- outputs ---------------------------------------------------------------------------

    def current_pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The pairs shown: (originals uint8 (N, C, C, 3) as decoded for the trainer's cache,
        C = 8/7 of the image size; view 1 and view 2, uint8 (N, S, S, 3)), or None."""
        return self._pairs

    def image_paths(self) -> list[str]:
        """The files of the rows shown, top to bottom."""
        return list(self._shown_paths)

    def grid_image(self) -> QImage:
        """The grid as one image (:meth:`PairGrid.image`)."""
        return self.grid.image()

    def save_png(self, path: str | Path) -> None:
        """Write :meth:`grid_image` to ``path`` as PNG; raises OSError if it cannot."""
        if not self.grid_image().save(str(path), "PNG"):
            raise OSError(f"could not write {path}")

    # --- handlers --------------------------------------------------------------------------

    def _on_preset(self, name: str) -> None:
        cfg = augment_preset(PRESETS[name])
        for field in dataclasses.fields(cfg):
            if field.metadata.get("cli"):  # the fields the form shows
                self.form.set_value(field.name, getattr(cfg, field.name))
        self.refresh()

    def _on_settings_changed(self) -> None:
        self.refresh()

    def _start_request(self) -> None:
        if not self._paths or not self.form.is_valid():
            return
        generation, cfg, size, seed = self._generation, self.augment_config(), \
            self.image_size(), self.seed
        cache = cache_size_for(size)
        decoded = self._decoded if self._decoded and self._decoded[0] == cache else None
        paths, max_pixels, folder = list(self._paths), self._max_pixels, self._folder

        def work() -> tuple:
            nonlocal decoded
            if decoded is None:
                decoded = (cache, *decode_images(paths, cache, max_pixels))
            if len(decoded[2]) == 0 and folder is not None and not Path(folder).is_dir():
                raise ValueError(f"the folder {folder} is gone: it was unplugged, moved or "
                                 "deleted. Plug it in again or open another folder.")
            if len(decoded[2]) == 0:
                raise ValueError("none of the images could be read: " + "; ".join(decoded[3]))
            view1, view2 = preview_pairs(decoded[2], cfg, size, seed)
            return paths, decoded, (decoded[2], view1, view2)

        self._pool.clear()  # requests not yet started are stale
        self._say("Making pairs…")
        self._pool.start(Task(work, generation, self._made))

    def _on_listed(self, generation: int, paths: list[str]) -> None:
        if generation != self._folder_generation:
            return
        if not paths:
            self._say("No images found in this folder.")
            return
        self._paths = paths
        self._decoded = None
        self.refresh()

    def _on_made(self, generation: int, result: tuple) -> None:
        paths, decoded, pairs = result
        if paths == self._paths:
            self._decoded = decoded  # kept even when these pairs are stale
        if generation != self._generation:
            return
        self._pairs = pairs
        self._shown_paths = list(decoded[1])
        self.grid.show_pairs(pairs)
        shown = (f"{len(pairs[0])} of {folder_count(self.manifest)};"
                 if self.manifest is not None else f"{len(pairs[0])} images,")
        text = (f"{shown} views of {pairs[1].shape[1]} px cut from {pairs[0].shape[1]} px, "
                f"seed {self.seed}")
        if decoded[3]:
            text += f"; skipped {len(decoded[3])}: " + "; ".join(decoded[3])
        self._say(text)
        self._update_buttons()
        self.pairs_ready.emit()

    def _fail(self, message: str) -> None:
        self._say(f"Cannot preview: {message}")

    def _on_save(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save pairs", "pairs.png", "PNG (*.png)")
        if path:
            try:
                self.save_png(path)
                self._say(f"Saved {path}")
            except OSError as exc:
                self._say(str(exc))

    # --- status ----------------------------------------------------------------------------

    def _say_invalid(self) -> None:
        name, message = next(iter(self.form.errors().items()))
        self._say(f"Showing the last valid pairs. Fix {name.replace('_', ' ')}: {message}")

    def _say(self, text: str) -> None:
        self.status.setText(text)

    def _update_buttons(self) -> None:
        self.save_button.setEnabled(self._pairs is not None)

    def closeEvent(self, event: Any) -> None:
        self._pool.clear()
        self._pool.waitForDone()
        super().closeEvent(event)
