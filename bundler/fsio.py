"""File-system helpers shared by the format layer and the kinds' targets."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make the renames and unlinks inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prune_empty(d: Path, root: Path) -> None:
    """Remove ``d`` and its parents while they are empty, up to (not including) ``root``."""
    root = root.resolve()
    d = d.resolve()
    while d != root and d.is_relative_to(root):
        try:
            d.rmdir()
        except OSError:
            return
        d = d.parent
