"""Streaming file hashing shared by sources and the importer."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

#: What identifies one unchanged version of a file: device, inode, size, mtime and ctime (ns).
StatKey = tuple[int, int, int, int, int]

BLOCK = 4 * 1024 * 1024


def sha256_file(path: Path, advance: Callable[[int], None] = lambda n: None) -> tuple[str, int]:
    """Return (sha256 hex, size) of ``path``, reading it in blocks (bounded memory)."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while block := fh.read(BLOCK):
            h.update(block)
            size += len(block)
            advance(len(block))
    return h.hexdigest(), size


def stat_key(st: os.stat_result) -> StatKey:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def sha256_file_keyed(path: Path, advance: Callable[[int], None] = lambda n: None) -> tuple[str, int, StatKey | None]:
    """Like :func:`sha256_file`, plus the file's :data:`StatKey` if it did not change while read
    (None if it did): a later reader whose stat still matches may rely on this digest."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        before = stat_key(os.fstat(fh.fileno()))
        while block := fh.read(BLOCK):
            h.update(block)
            size += len(block)
            advance(len(block))
        after = stat_key(os.fstat(fh.fileno()))
    return h.hexdigest(), size, (after if after == before and after[2] == size else None)


class DigestCache:
    """Digests of local files from earlier runs, trusted while the file's :data:`StatKey` is
    unchanged (as git's index does): a periodic export of a mostly unchanged tree then reads
    only what changed. The importer checks every file's sha256 whatever this cache says.

    One JSON object ``{absolute path: [dev, ino, size, mtime_ns, ctime_ns, sha256]}``; only
    the paths looked up in this run are written back, so it never grows beyond the tree.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._old: dict[str, list[object]] = {}
        self._new: dict[str, list[object]] = {}
        self._lock = threading.Lock()
        try:
            loaded = json.loads(path.read_text())
            if isinstance(loaded, dict):
                self._old = loaded
        except (OSError, ValueError):
            pass  # no cache or a damaged one: everything is hashed again

    def get(self, path: Path, key: StatKey) -> str | None:
        row = self._old.get(str(path))
        if isinstance(row, list) and len(row) == 6 and tuple(row[:5]) == key and isinstance(row[5], str):
            with self._lock:
                self._new[str(path)] = row
            return row[5]
        return None

    def put(self, path: Path, key: StatKey, sha256: str) -> None:
        with self._lock:
            self._new[str(path)] = [*key, sha256]

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(self._new, sort_keys=True))
        os.replace(tmp, self.path)
