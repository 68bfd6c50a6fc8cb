"""Reading an image folder: which files are images, their labels and a hash of their content.

Rules (see :func:`scan_folder`):

- Images are found by extension, case-insensitively: .jpg .jpeg .png .bmp .webp .tif .tiff
  .gif, in the folder and all its sub-folders. Names starting with '.' (hidden files and
  folders) are ignored, and so are files with other extensions: neither is "skipped".
- Labels come from class sub-folders: when at least one top-level sub-folder holds images,
  each top-level sub-folder that holds images (at any depth) is a class, named after the
  folder, and classes are numbered in sorted name order (as torchvision's ImageFolder
  does). Images directly in the root of such a folder belong to no class, so they are
  skipped ("not in a class sub-folder"): training on them unlabelled would silently mix
  them into the label statistics. A folder whose images all sit in the root is unlabelled.
- A top-level sub-folder named ``unlabelled`` or ``unlabeled`` (:data:`UNLABELLED_FOLDERS`,
  any case) is not a class: its images are used, without a label (-1), beside the classes.
  That is how a partly labelled folder is given: every method trains on all its images,
  SupCon takes positives from the labelled ones only, and kNN accuracy and the probe leave
  the unlabelled ones out.
- Images of two sources of the same classes (synthetic and real photos, say) share their
  class sub-folders: ``cat/real/001.jpg`` and ``cat/synthetic/001.png`` are both "cat".
- Every image is hashed (BLAKE2b, 16 bytes) while scanning, so :meth:`Manifest.key`
  identifies the folder by its content rather than by modification times. A file whose
  size, times and inode are those an earlier scan recorded keeps that scan's hash and
  verdict instead of being read again (:mod:`engine.data.scan_index`; ``reuse=False`` reads
  everything).
- Every image is also decoded once, at a reduced size (:func:`engine.data.decode.check_image`:
  the decoder the cache uses, so its verdict is the cache's), unless ``verify=False``.
- Files that cannot be used (empty, unreadable, broken links, and with ``verify`` also
  corrupt, truncated, not-an-image and too-large files) are listed in ``Manifest.skipped``
  with a reason instead of raising: one bad file should not stop a run. This one list is
  what the engine, the Data page and the Augmentations page show. Only a root folder that
  cannot be read at all raises :class:`DataError`.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import stat
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.data.scan_index import ScanIndex, StatKey, stat_key
from engine.run.io import write_json_atomic

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})
MANIFEST_VERSION = 1

Progress = Callable[[int, int, str], None]

#: The pixel limit a scan verifies against unless told (TrainConfig.max_image_pixels's default).
DEFAULT_MAX_PIXELS = 178_956_970

# Reasons a file is skipped at scan time. The cache adds its own (see engine.data.cache).
EMPTY_FILE = "empty file (0 bytes)"
BROKEN_LINK = "broken symbolic link (its target does not exist)"
LINK_LOOP = "symbolic link loop"
NOT_A_FILE = "not a regular file"
NOT_IN_CLASS = ("not in a class sub-folder (this folder has class sub-folders; move images "
                "without a class into a sub-folder named 'unlabelled' to use them)")
#: Top-level sub-folders (compared in lower case) whose images have no label.
UNLABELLED_FOLDERS = frozenset({"unlabelled", "unlabeled"})
FOLDER_UNREADABLE = "folder cannot be read"

# How reasons are grouped in Manifest.summary(): the first prefix that matches wins.
_CATEGORIES = (
    ("empty file", "empty"),
    ("cannot be read", "unreadable"),
    ("folder cannot be read", "unreadable folder"),
    ("broken symbolic link", "broken link"),
    ("symbolic link loop", "broken link"),
    ("not a regular file", "not a file"),
    ("not in a class sub-folder", "outside class folders"),
    ("too large", "too large"),
    ("truncated or corrupt", "corrupt"),
    ("not an image", "not an image"),
    ("unsupported", "unsupported"),
    ("listed but not found", "missing"),
    ("listed but not an image", "not an image"),
    ("changed since scan", "changed since scan"),
    ("disappeared since scan", "disappeared since scan"),
)

_HASH_CHUNK = 1 << 20


class DataError(Exception):
    """A problem with the image folder that the user must fix; str() is a complete message
    saying what happened and what to do."""


@dataclass
class ImageRecord:
    """One usable image file."""

    path: str  # POSIX path relative to the root
    label: int | None  # index into Manifest.classes; None in an unlabelled folder
    size: int  # bytes
    sha: str  # BLAKE2b (16-byte digest, hex) of the file's bytes


@dataclass
class SkippedFile:
    """A file that looked like an image but cannot be used, and why."""

    path: str  # POSIX path relative to the root
    reason: str


@dataclass
class Manifest:
    """What a scan found: the usable images (in sorted path order) and the skipped files."""

    root: str
    classes: list[str]
    images: list[ImageRecord]
    skipped: list[SkippedFile] = field(default_factory=list)

    @property
    def has_labels(self) -> bool:
        return bool(self.classes)

    def labels(self) -> np.ndarray:
        """int64 label of each image, aligned with ``images``; -1 where unlabelled."""
        return np.fromiter((-1 if r.label is None else r.label for r in self.images),
                           dtype=np.int64, count=len(self.images))

    def key(self) -> str:
        """Hex digest identifying the folder's content: the sorted (path, sha, label) triples
        and the class names. The root path and file times are not part of it, so a copied or
        touched folder keeps its key, and a changed file changes it."""
        triples = sorted((r.path, r.sha, -1 if r.label is None else r.label)
                         for r in self.images)
        # ensure_ascii keeps undecodable file names (surrogate escapes) encodable.
        text = json.dumps({"v": MANIFEST_VERSION, "classes": self.classes, "images": triples},
                          ensure_ascii=True, separators=(",", ":"))
        return hashlib.blake2b(text.encode("ascii"), digest_size=16).hexdigest()

    def class_counts(self) -> list[int]:
        """Number of images of each class, aligned with ``classes``."""
        counts = Counter(r.label for r in self.images)
        return [counts.get(i, 0) for i in range(len(self.classes))]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": MANIFEST_VERSION,
            "root": self.root,
            "classes": list(self.classes),
            "images": [dataclasses.asdict(r) for r in self.images],
            "skipped": [dataclasses.asdict(s) for s in self.skipped],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        version = d.get("version", MANIFEST_VERSION)
        if version > MANIFEST_VERSION:
            raise ValueError(f"manifest version {version} is newer than this program "
                             f"understands ({MANIFEST_VERSION})")
        return cls(root=d["root"], classes=list(d["classes"]),
                   images=[ImageRecord(**r) for r in d["images"]],
                   skipped=[SkippedFile(**s) for s in d.get("skipped", [])])

    def save(self, path: str | Path) -> None:
        """Write the manifest as JSON, atomically."""
        write_json_atomic(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def with_skipped(self, extra: list[SkippedFile]) -> Manifest:
        """A copy without the images named in ``extra``, whose entries are added to skipped."""
        gone = {s.path for s in extra}
        return Manifest(root=self.root, classes=list(self.classes),
                        images=[r for r in self.images if r.path not in gone],
                        skipped=list(self.skipped) + list(extra))

    def summary(self, max_classes: int = 10) -> str:
        """One line, e.g. "1,797 images in 10 classes (0: 178, 1: 182, ...); 3 files skipped
        (2 unreadable, 1 too large)". At most ``max_classes`` class counts are listed."""
        n = len(self.images)
        text = f"{n:,} {_plural(n, 'image')}"
        if self.classes:
            k = len(self.classes)
            counts = zip(self.classes, self.class_counts(), strict=True)
            pairs = [f"{name}: {count:,}" for name, count in counts][:max_classes]
            if k > max_classes:
                pairs.append(f"... {k - max_classes:,} more")
            text += f" in {k:,} {_plural(k, 'class', 'classes')} ({', '.join(pairs)})"
            unlabelled = n - sum(self.class_counts())
            if unlabelled:
                text += f" and {unlabelled:,} unlabelled"
        elif n:
            text += " (unlabelled: no class sub-folders)"
        if self.skipped:
            s = len(self.skipped)
            groups = Counter(skip_category(f.reason) for f in self.skipped)
            ranked = sorted(groups.items(), key=lambda kv: (-kv[1], kv[0]))  # deterministic
            detail = ", ".join(f"{count:,} {name}" for name, count in ranked)
            text += f"; {s:,} {_plural(s, 'file')} skipped ({detail})"
        return text


def skip_category(reason: str) -> str:
    """A short name grouping skip reasons, as used by :meth:`Manifest.summary`."""
    for prefix, name in _CATEGORIES:
        if reason.startswith(prefix):
            return name
    return reason.split(":")[0].split("(")[0].strip() or "other"


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return word if n == 1 else (plural or word + "s")


# --- scanning ----------------------------------------------------------------------------


def _check_root(root: Path) -> None:
    """Raise DataError unless ``root`` is a readable folder."""
    if not root.exists():
        hint = " (it is a broken symbolic link)" if root.is_symlink() else ""
        raise DataError(f"image folder not found: {root}{hint}. Check the path, or give the "
                        "folder that holds your images (or their class sub-folders)")
    if not root.is_dir():
        raise DataError(f"{root} is a file, not a folder. Give the folder that holds your "
                        "images (or their class sub-folders), not a single image")
    try:
        with os.scandir(root):
            pass
    except OSError as exc:
        raise DataError(f"cannot read the image folder {root}: {os_reason(exc)}. Check its "
                        "permissions (you need read and execute rights), or copy the images "
                        "somewhere you can read") from None


def os_reason(exc: OSError) -> str:
    """A short lower-case reason for an OS error, e.g. "permission denied"."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return (exc.strerror or str(exc)).lower()


def _walk(root: Path) -> tuple[list[str], list[SkippedFile]]:
    """Relative POSIX paths of the image-extension files under ``root``, and unreadable
    sub-folders. Hidden entries are ignored; symbolic links to folders are followed once
    (a folder reached twice, e.g. through a link loop, is not walked again)."""
    found: list[str] = []
    problems: list[SkippedFile] = []
    seen: set[tuple[int, int]] = set()
    st = root.stat()
    seen.add((st.st_dev, st.st_ino))
    stack: list[tuple[str, str]] = [(str(root), "")]  # (absolute path, relative prefix)
    while stack:
        folder, prefix = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as exc:
            problems.append(SkippedFile(prefix.rstrip("/") or ".",
                                        f"{FOLDER_UNREADABLE} ({os_reason(exc)})"))
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            rel = prefix + entry.name
            try:
                is_dir = entry.is_dir()  # follows symbolic links
            except OSError:
                is_dir = False
            if is_dir:
                try:
                    dst = entry.stat()
                except OSError as exc:
                    problems.append(SkippedFile(rel, f"{FOLDER_UNREADABLE} ({os_reason(exc)})"))
                    continue
                ident = (dst.st_dev, dst.st_ino)
                if ident not in seen:
                    seen.add(ident)
                    stack.append((entry.path, rel + "/"))
            elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                found.append(rel)
    found.sort()
    return found, problems


def _hash_file(path: str) -> tuple[int, str] | str:
    """(size, BLAKE2b hex digest) of the file at ``path``, or the reason it cannot be used."""
    try:
        st = os.stat(path)  # follows symbolic links
    except FileNotFoundError:
        return BROKEN_LINK if os.path.islink(path) else "disappeared during the scan"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return LINK_LOOP
        return f"cannot be read ({os_reason(exc)})"
    if not stat.S_ISREG(st.st_mode):
        return NOT_A_FILE
    if st.st_size == 0:
        return EMPTY_FILE
    h = hashlib.blake2b(digest_size=16)
    size = 0
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_HASH_CHUNK):
                h.update(chunk)
                size += len(chunk)
    except OSError as exc:
        return f"cannot be read ({os_reason(exc)})"
    if size == 0:  # emptied between stat and read
        return EMPTY_FILE
    return size, h.hexdigest()


def hash_bytes(data: bytes) -> str:
    """The content hash used in ImageRecord.sha."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _ticks(total: int, every_s: float = 0.2) -> Iterator[bool]:
    """Yields True when a progress report is due: at most every ``every_s`` seconds, and
    for the last item."""
    last = time.monotonic()
    for i in range(1, total + 1):
        now = time.monotonic()
        if i == total or now - last >= every_s:
            last = now
            yield True
        else:
            yield False


def _hash_and_check(path: str, max_pixels: int | None) -> tuple[int, str] | str:
    """:func:`_hash_file`, then (when ``max_pixels`` is given) the reason the file does not
    decode, if it does not."""
    result = _hash_file(path)
    if isinstance(result, str) or max_pixels is None:
        return result
    from engine.data.decode import check_image  # (decode imports this module)

    return check_image(path, max_pixels) or result


def scan_folder(root: str | Path, *, progress: Progress | None = None,
                num_workers: int | None = None, verify: bool = True,
                max_pixels: int = DEFAULT_MAX_PIXELS, reuse: bool = True) -> Manifest:
    """Find the images under ``root``, their labels and content hashes.

    With ``verify`` every image is decoded (at a reduced size) and one that does not decode,
    or has more than ``max_pixels`` pixels, is skipped with the cache's reason.

    ``progress(done, total, message)`` is called when the listing is complete
    (done = 0) and then at most five times a second while hashing, and once at the end.
    An empty result is not an error: the caller decides what it needs (the manifest's
    ``skipped`` says what was found). With ``reuse`` a file unchanged since an earlier scan
    (same size, times and inode; see :mod:`engine.data.scan_index`) is not read again: its
    remembered hash and verdict are used. Raises :class:`DataError` when ``root`` does not
    exist, is not a folder or cannot be read.
    """
    root = Path(root).expanduser().absolute()  # absolute: the cache reads files from it later
    _check_root(root)
    rels, skipped = _walk(root)
    total = len(rels)
    if progress:
        progress(0, total, f"found {total:,} image files; "
                 + ("reading and decoding them" if verify else "reading them"))

    # Labels come from the top-level sub-folders that hold image files, except "unlabelled".
    tops = {rel.split("/", 1)[0] for rel in rels if "/" in rel}
    classes = sorted(top for top in tops if top.lower() not in UNLABELLED_FOLDERS)
    class_index = {name: i for i, name in enumerate(classes)}

    images: list[ImageRecord] = []
    index = ScanIndex(root) if reuse else None
    results = _check_files(str(root), rels, max_pixels if verify else None, num_workers,
                           index, progress, verify)
    for rel, result in zip(rels, results, strict=True):
        if isinstance(result, str):
            skipped.append(SkippedFile(rel, result))
        elif "/" not in rel and classes:
            skipped.append(SkippedFile(rel, NOT_IN_CLASS))
        else:
            label = class_index.get(rel.split("/", 1)[0])  # None: unlabelled
            images.append(ImageRecord(rel, label, result[0], result[1]))
    if index is not None:
        index.save(complete=True)
    skipped.sort(key=lambda s: s.path)
    return Manifest(root=str(root), classes=classes, images=images, skipped=skipped)


def _stat_key(path: str) -> StatKey | None:
    """The index's key for the file at ``path``, or None when it is no non-empty regular
    file (then :func:`_hash_file` names the reason)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return stat_key(st) if stat.S_ISREG(st.st_mode) and st.st_size > 0 else None


def _bounded_map(pool: ThreadPoolExecutor, fn: Callable[[int], Any], items: list[int],
                 window: int = 1024) -> Iterator[Any]:
    """``pool.map(fn, items)`` with at most ``window`` tasks submitted ahead of the one
    being read, so a folder of a million files does not hold a million futures."""
    pending: deque[Future] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _check_files(root: str, rels: list[str], limit: int | None, num_workers: int | None,
                 index: ScanIndex | None, progress: Progress | None, verify: bool
                 ) -> list[tuple[int, str] | str]:
    """The result of each file in ``rels`` (under ``root``), in order.

    Files the index knows unchanged take its result (one stat each, in this thread: cheaper
    than a task); the others are read in a thread pool (I/O-bound: hashlib and Pillow's
    decoders drop the GIL), and every result is recorded in the index.
    """
    total = len(rels)
    paths = [os.path.join(root, *rel.split("/")) for rel in rels]
    results: list[tuple[int, str] | str | None] = [None] * total
    keys: list[StatKey | None] = [None] * total
    if index is not None:
        for i, (rel, path) in enumerate(zip(rels, paths)):
            keys[i] = key = _stat_key(path)
            if key is not None:
                results[i] = index.lookup(rel, key, limit)
    todo = [i for i, result in enumerate(results) if result is None]
    reused = total - len(todo)
    if progress and reused:
        progress(reused, total, f"{reused:,} of {total:,} files unchanged since the last scan"
                 + (f"; {'checking' if verify else 'reading'} {len(todo):,}" if todo else ""))
    workers = num_workers or min(8, 2 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scan") as pool:
        done = _bounded_map(pool, lambda i: _hash_and_check(paths[i], limit), todo)
        for n, (i, result, due) in enumerate(zip(todo, done, _ticks(len(todo)), strict=True),
                                             1):
            results[i] = result
            if progress and due:
                unchanged = f" ({reused:,} unchanged since the last scan)" if reused else ""
                progress(reused + n, total, f"{'checked' if verify else 'read'} "
                         f"{reused + n:,} of {total:,} files{unchanged}")
    if index is not None:
        for rel, key, result in zip(rels, keys, results):
            if key is not None:
                index.record(rel, key, result, limit)
    return results  # type: ignore[return-value]  (every entry is set above)


# --- lists of images ---------------------------------------------------------------------

#: The suffixes of an image list that ``--data`` accepts instead of a folder.
LIST_SUFFIXES = (".txt", ".csv")
LISTED_MISSING = "listed but not found"
LISTED_NOT_IMAGE = "listed but not an image file (the extension is not one of " + \
    ", ".join(sorted(IMAGE_EXTENSIONS)) + ")"


def is_list_file(data: str | Path) -> bool:
    """Whether ``data`` names an image list (an existing .txt or .csv file), not a folder."""
    path = Path(data).expanduser()
    return path.suffix.lower() in LIST_SUFFIXES and path.is_file()


def check_data(data: str | Path) -> None:
    """Raise DataError unless ``data`` is a readable folder or an image list (.txt/.csv):
    the check the CLI makes before loading torch."""
    path = Path(data).expanduser()
    if path.suffix.lower() in LIST_SUFFIXES and not path.exists():
        raise DataError(f"image list not found: {path}. Check the path")
    if path.is_file() and not is_list_file(path):
        raise DataError(f"{path} is a file, but neither a folder nor a list of images: give "
                        "the folder that holds your images, or a .txt list (one image path "
                        "a line) or .csv list (a 'path' column)")
    if not path.is_file():
        _check_root(path.absolute())


def read_image_list(path: str | Path) -> list[str]:
    """The image paths a list file names, as absolute paths, in the file's order.

    .txt: one path a line; blank lines and lines starting with '#' are ignored. .csv: the
    column named "path" when the first row has one (as ``contrastive-engine subset --list
    FILE.csv`` writes: path,class), else the first column. Relative paths are relative to
    the list file's folder. Raises DataError when the file cannot be read or names nothing.
    """
    import csv

    path = Path(path).expanduser().absolute()
    if path.suffix.lower() not in LIST_SUFFIXES:
        raise DataError(f"{path} is neither a .txt nor a .csv list of images: write one image "
                        "path a line in a .txt file, or a 'path' column in a .csv file")
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise DataError(f"cannot read the image list {path}: {os_reason(exc)}") from None
    entries: list[str] = []
    if path.suffix.lower() == ".csv":
        rows = [row for row in csv.reader(text.splitlines()) if row and row[0].strip()]
        column = 0
        if rows and "path" in [c.strip().lower() for c in rows[0]]:
            column = [c.strip().lower() for c in rows[0]].index("path")
            rows = rows[1:]
        entries = [row[column].strip() for row in rows if len(row) > column]
    else:
        entries = [line.strip() for line in text.splitlines()
                   if line.strip() and not line.lstrip().startswith("#")]
    entries = [e for e in entries if e]
    if not entries:
        raise DataError(f"the image list {path} is empty: write one image path a line "
                        "(.txt) or a 'path' column (.csv)")
    out, seen = [], set()
    for entry in entries:
        p = Path(entry).expanduser()
        full = os.path.normpath(p if p.is_absolute() else path.parent / p)
        if full not in seen:
            seen.add(full)
            out.append(full)
    return out


def scan_list(list_file: str | Path, *, progress: Progress | None = None,
              num_workers: int | None = None, verify: bool = True,
              max_pixels: int = DEFAULT_MAX_PIXELS, reuse: bool = True) -> Manifest:
    """A manifest of exactly the images a list file names (see :func:`read_image_list`).

    Its root is the deepest folder holding every listed file, and labels follow the folder
    rule of :func:`scan_folder` under that root: the first path component below it is the
    class (a listed image directly in the root, while others sit in sub-folders, is skipped
    as "not in a class sub-folder"). Listed files that do not exist, or whose extension is
    not an image's, are skipped with that reason; the others are hashed (and verified)
    as a scan does. Raises DataError for an empty list, or one naming no existing file.
    """
    files = read_image_list(list_file)
    existing = [f for f in files if os.path.lexists(f)]
    if not existing:
        raise DataError(f"none of the {len(files):,} images listed in {list_file} exists "
                        f"(the first is {files[0]}): check the paths, or write the list again")
    root = os.path.commonpath([os.path.dirname(f) for f in existing])
    rels = [Path(os.path.relpath(f, root)).as_posix() for f in files]
    skipped: list[SkippedFile] = []
    candidates: list[str] = []
    for full, rel in zip(files, rels):
        if not os.path.lexists(full):
            skipped.append(SkippedFile(full, LISTED_MISSING))  # absolute: outside the root
        elif os.path.splitext(full)[1].lower() not in IMAGE_EXTENSIONS:
            skipped.append(SkippedFile(rel, LISTED_NOT_IMAGE))
        else:
            candidates.append(rel)
    candidates.sort()
    total = len(candidates)
    if progress:
        progress(0, total, f"{len(files):,} images listed; "
                 + ("reading and decoding them" if verify else "reading them"))
    classes = sorted({rel.split("/", 1)[0] for rel in candidates if "/" in rel})
    class_index = {name: i for i, name in enumerate(classes)}
    images: list[ImageRecord] = []
    index = ScanIndex(root) if reuse else None
    results = _check_files(root, candidates, max_pixels if verify else None, num_workers,
                           index, progress, verify)
    for rel, result in zip(candidates, results, strict=True):
        if isinstance(result, str):
            skipped.append(SkippedFile(rel, result))
        elif "/" not in rel and classes:
            skipped.append(SkippedFile(rel, NOT_IN_CLASS))
        else:
            label = class_index[rel.split("/", 1)[0]] if classes else None
            images.append(ImageRecord(rel, label, result[0], result[1]))
    if index is not None:
        index.save(complete=False)  # the list names some of the files under its root
    skipped.sort(key=lambda s: s.path)
    return Manifest(root=root, classes=classes, images=images, skipped=skipped)


def scan_data(data: str | Path, **kwargs: Any) -> Manifest:
    """:func:`scan_list` for an image list (.txt/.csv), :func:`scan_folder` for a folder;
    a DataError for any other file. ``kwargs`` are theirs (progress, verify, ...)."""
    path = Path(data).expanduser()
    if path.is_file():
        if not is_list_file(path):
            check_data(path)  # raises: a file that is no list
        return scan_list(path, **kwargs)
    return scan_folder(path, **kwargs)
