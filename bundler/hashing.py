"""Streaming file hashing shared by sources and the importer."""

from __future__ import annotations

import hashlib
import os
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
