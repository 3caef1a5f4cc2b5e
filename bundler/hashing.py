"""Streaming file hashing shared by sources and the importer."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

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
