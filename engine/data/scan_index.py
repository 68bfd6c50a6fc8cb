"""What earlier scans of a folder found, so a file unchanged since then is not read again.

Hashing and verifying every image is most of a scan's time (about 30 s for 100,000 JPEGs
on two cores), and every command that reads a folder scans it: training, embedding, the
plan, the Data page. A :class:`ScanIndex` remembers, per folder, each file's hash and
verdict together with what ``os.stat`` said of it (size, modification and change times in
nanoseconds, inode). A later scan that finds the same four values reuses the result, as
git's index and rsync's quick check do.

What this trusts: that a file whose content changed also changed its size, mtime, ctime
or inode. Writing a file changes its mtime and ctime (and restoring the mtime by hand, as
``cp -p`` or ``touch -d`` do, still changes the ctime), so an edit is always seen, except
within one tick of a coarse file-system clock: entries modified less than
:data:`RACY_SECONDS` before the index is written are therefore not kept, and are hashed
again next time (git's "racy" rule). ``reuse=False``, or the environment variable
``CONTRASTIVE_EXPLORER_REHASH=1`` for any command, reads every file whatever the index
says. The decoded-image cache hashes each file again as it decodes it, so a file changed
behind the index's back is caught there too.

The index is a cache: it lives under the user cache folder, a missing, unreadable or
unwritable index only costs the time of a full scan, and deleting it is always safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from engine.config.locations import user_cache_dir
from engine.run.io import write_atomic

INDEX_VERSION = 1
#: Set (to anything but 0) to read every file whatever the index says.
REHASH_ENV = "CONTRASTIVE_EXPLORER_REHASH"
#: Files modified this recently before the index is written are not remembered.
RACY_SECONDS = 2.0

# A file's identity as os.stat gives it: (size, mtime_ns, ctime_ns, inode).
StatKey = tuple[int, int, int, int]


def stat_key(st: os.stat_result) -> StatKey:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def index_folder() -> Path:
    """Where scan indexes are kept: ``scans/`` in the user cache folder."""
    return user_cache_dir() / "scans"


class ScanIndex:
    """The remembered scan results of the files under one root folder.

    An entry is (stat key, result, checked): the result is ``(size, sha)`` or a skip reason,
    and ``checked`` the pixel limit the file was verified against (None: hashed only).
    """

    def __init__(self, root: str | Path, folder: Path | None = None) -> None:
        self.root = str(root)
        digest = hashlib.blake2b(self.root.encode("utf-8", "surrogateescape"),
                                 digest_size=10).hexdigest()
        self.path = (folder if folder is not None else index_folder()) / f"{digest}.json"
        self._old: dict[str, tuple[StatKey, tuple[int, str] | str, int | None]] = {}
        self._new: dict[str, tuple[StatKey, tuple[int, str] | str, int | None]] = {}
        self.reused = 0
        self._load()

    def _load(self) -> None:
        if os.environ.get(REHASH_ENV, "").strip() not in ("", "0"):
            return  # asked to read every file; this scan's results still refresh the index
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("version") != INDEX_VERSION or data.get("root") != self.root:
                return
            for rel, size, mtime, ctime, ino, sha, reason, checked in data["entries"]:
                result = (size, sha) if sha is not None else reason
                self._old[rel] = ((size, mtime, ctime, ino), result, checked)
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            self._old = {}  # no index, or one this program cannot read: scan everything

    def lookup(self, rel: str, key: StatKey, max_pixels: int | None
               ) -> tuple[int, str] | str | None:
        """The remembered result for file ``rel`` when its stat key is unchanged and it was
        checked as this scan checks (verified against the same pixel limit, or, for a scan
        that does not verify, hashed at all); else None."""
        entry = self._old.get(rel)
        if entry is None or entry[0] != key:
            return None
        result, checked = entry[1], entry[2]
        if max_pixels is None:
            if isinstance(result, str):
                return None  # a verdict of the decoder; an unverified scan wants the hash
        elif checked != max_pixels:
            return None
        return result

    def record(self, rel: str, key: StatKey, result: tuple[int, str] | str,
               max_pixels: int | None) -> None:
        """Remember what this scan found for ``rel`` (a reused result too)."""
        self._new[rel] = (key, result, max_pixels)

    def save(self, *, complete: bool) -> None:
        """Write the index. ``complete``: this scan saw every file under the root, so entries
        it did not record are gone; otherwise (a list of some of the files) they are kept.
        Failing to write is not an error: the next scan is only slower."""
        entries = dict(self._old) if not complete else {}
        entries.update(self._new)
        racy = time.time_ns() - int(RACY_SECONDS * 1e9)
        rows: list[list[Any]] = []
        for rel in sorted(entries):
            (size, mtime, ctime, ino), result, checked = entries[rel]
            if max(mtime, ctime) >= racy:
                continue
            sha, reason = (result[1], None) if isinstance(result, tuple) else (None, result)
            rows.append([rel, size, mtime, ctime, ino, sha, reason, checked])
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            data = json.dumps({"version": INDEX_VERSION, "root": self.root, "entries": rows},
                              separators=(",", ":")).encode("utf-8")
            write_atomic(self.path, lambda f: f.write(data))
        except OSError:
            pass
